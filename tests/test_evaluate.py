"""The one measurement path: the paper protocol (modcrop, 8-bit bicubic LR, 8-bit SR, Y, crop = scale), the SR path of
`upscale`, undefined values, training validation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_release
from conftest import write_pngs as shared_pngs
from PIL import Image
from torch import Tensor, nn

from perceptsr.archs import ARCHS
from perceptsr.archs.bicubic import Bicubic, BicubicConfig
from perceptsr.conditions import parse_model_spec
from perceptsr.data.datasets import ValDataset
from perceptsr.data.resize import imresize
from perceptsr.errors import InputError
from perceptsr.evaluation.evaluate import evaluate, evaluate_items, mean_rows, nanmean
from perceptsr.evaluation.protocol import Protocol
from perceptsr.inference.upscale import DEFAULT_OVERLAP, RunOptions
from perceptsr.io.images import read_image
from perceptsr.metrics import niqe, psnr


def write_pngs(folder: Path, sizes: list[tuple[int, int]], *, mode: str = "RGB", seed: int = 0) -> Path:
    """Smooth-ish content, so bicubic is a fair, finite-PSNR baseline."""
    return shared_pngs(folder, sizes, mode=mode, seed=seed, block=4, resample=Image.BILINEAR)


class Oracle(nn.Module):
    """A 'conditional model' returning its HR-size condition plus an offset (offset 0: the HR itself)."""

    def __init__(self, scale: int, offset: float = 0.0) -> None:
        super().__init__()
        self.scale, self.offset, self.calls = scale, offset, []

    def forward(self, lr: Tensor, *, target: Tensor) -> Tensor:
        self.calls.append(
            (tuple(lr.shape), tuple(target.shape), torch.is_inference_mode_enabled(), self.training)
        )
        return target + self.offset


def give_hr(lr: Tensor, hr: Tensor) -> dict[str, Tensor]:
    return {"target": hr}


def test_perfect_sr_gives_infinite_psnr_and_unit_ssim(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "set", [(30, 35), (24, 24)])
    model = Oracle(2).train()
    result = evaluate(model, folder, scale=2, metrics=("psnr", "ssim"), conditions=give_hr, eager=True,
                      model_name="oracle")
    assert result.dataset == "set" and result.model == "oracle" and list(result.images) == ["im0", "im1"]
    assert result.mean["psnr"] == math.inf and result.mean["ssim"] == pytest.approx(1.0, abs=1e-12)
    # the model saw the mod-cropped pairs, in inference mode, in eval mode; its training flag is restored
    assert model.calls[0] == ((1, 3, 15, 17), (1, 3, 30, 34), True, False) and model.training
    # the fast path (as `upscale` runs models) gives the same perfect numbers
    assert evaluate(Oracle(2), folder, scale=2, metrics=("psnr",), conditions=give_hr).mean["psnr"] == math.inf


def test_sr_is_clamped_and_rounded_to_8_bit(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(32, 32)])
    kwargs = {"scale": 2, "metrics": ("psnr",), "conditions": give_hr}
    assert evaluate(Oracle(2, offset=0.45 / 255), folder, **kwargs).mean["psnr"] == math.inf
    shifted = evaluate(Oracle(2, offset=0.55 / 255), folder, **kwargs).mean["psnr"]
    # every Y value moves by (219/255) levels (clipped at the ends): close to 20*log10(255/0.86)
    assert 48 < shifted < 50


def test_protocol_and_run_are_recorded(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(28, 28)])
    result = evaluate(Bicubic(BicubicConfig(scale=4)), folder, scale=4, metrics=("psnr", "niqe"))
    protocol = result.protocol
    assert [protocol[k] for k in ("scale", "crop_border", "y_channel", "mod_crop")] == [4, 4, True, True]
    assert protocol["description"] == "Y, crop 4, HR mod-cropped to 4" and "8 bit" in protocol["sr"]
    assert "Y channel" in protocol["metrics"]["psnr"] and "crop 4" in protocol["metrics"]["niqe"]
    assert result.run == {"path": "fast", "precision": "fp32", "tile": None, "tile_overlap": DEFAULT_OVERLAP,
                          "device": "auto"}
    rgb = evaluate(Bicubic(BicubicConfig(scale=4)), folder, protocol=Protocol(4, crop_border=0, y_channel=False),
                   metrics=("psnr",))
    assert rgb.protocol["crop_border"] == 0 and rgb.protocol["y_channel"] is False
    assert "RGB" in rgb.protocol["metrics"]["psnr"] and rgb.mean["psnr"] != result.mean["psnr"]


def test_bicubic_matches_a_direct_computation(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(41, 37)])
    result = evaluate(Bicubic(BicubicConfig(scale=2)), folder, scale=2, metrics=("psnr",))
    hr = read_image(folder / "im0.png").rgb[..., :40, :36]
    lr = torch.round(imresize(hr, 0.5).clamp(0, 1) * 255) / 255
    sr = torch.round(imresize(lr, 2).clamp(0, 1) * 255) / 255
    expected = psnr(sr, hr, crop_border=2, y_channel=True)
    assert 20 < expected < 60 and result.images["im0"]["psnr"] == pytest.approx(expected, abs=1e-9)


def test_tiled_evaluation_matches_untiled(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(64, 72)])
    model = Bicubic(BicubicConfig(scale=2))
    whole = evaluate(model, folder, scale=2, metrics=("psnr", "ssim"))
    tiled = evaluate(model, folder, scale=2, metrics=("psnr", "ssim"), run=RunOptions(tile=16, tile_overlap=4))
    assert tiled.run["tile"] == 16 and tiled.run["tile_overlap"] == 4
    assert tiled.mean["psnr"] == pytest.approx(whole.mean["psnr"], abs=0.02)
    assert tiled.mean["ssim"] == pytest.approx(whole.mean["ssim"], abs=1e-3)


def test_evaluation_runs_models_as_upscale_does(tmp_path: Path) -> None:
    """The SR that is measured is, pixel for pixel, what `perceptsr upscale` writes for the LR (same run options)."""
    from perceptsr.cli.commands import cmd_upscale
    from perceptsr.data.resize import degrade
    from perceptsr.io.images import write_image

    folder = write_pngs(tmp_path / "hr", [(40, 44)])
    release = tiny_release(tmp_path / "tiny.safetensors", "msrresnet", 2)
    run = RunOptions(device="cpu", tile=12, tile_overlap=4)
    write_image(tmp_path / "lr" / "im0.png", degrade(read_image(folder / "im0.png").rgb, 2))
    assert cmd_upscale(inputs=[tmp_path / "lr"], output=tmp_path / "up", model=parse_model_spec(str(release)),
                       scale=2, run=run, max_pixels=10**7, quiet=True) == 0
    from perceptsr.zoo.models import load_model

    evaluate(load_model(str(release)), folder, scale=2, metrics=("psnr",), run=run, sr_dir=tmp_path / "sr")
    assert torch.equal(read_image(tmp_path / "sr" / "im0.png").rgb, read_image(tmp_path / "up" / "im0.png").rgb)


def test_niqe_undefined_on_small_images_is_left_out_of_the_mean(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(100, 200), (60, 60)])
    result = evaluate(Bicubic(BicubicConfig(scale=2)), folder, scale=2, metrics=("psnr", "niqe"),
                      sr_dir=tmp_path / "sr")
    assert math.isnan(result.images["im1"]["niqe"]) and math.isfinite(result.images["im0"]["niqe"])
    assert result.mean["niqe"] == result.images["im0"]["niqe"]
    assert result.undefined == {"psnr": [], "niqe": ["im1"]}
    saved = read_image(tmp_path / "sr" / "im0.png").rgb
    assert result.images["im0"]["niqe"] == pytest.approx(niqe(saved, crop_border=2), abs=1e-9)
    assert result.mean["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result.images.values()]))


def test_the_nan_ignoring_mean() -> None:
    assert nanmean([1.0, math.nan, 3.0]) == 2.0 and math.isnan(nanmean([math.nan])) and math.isnan(nanmean([]))
    assert nanmean([math.inf, 1.0]) == math.inf
    assert mean_rows([{"a": 1.0, "b": math.nan}, {"a": 2.0}], ["a", "b"]) == {"a": 1.5, "b": pytest.approx(math.nan,
                                                                                                        nan_ok=True)}


def test_saved_sr_holds_the_measured_pixels(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "hr", [(20, 22)])
    evaluate(Oracle(2), folder, scale=2, metrics=("psnr",), conditions=give_hr, sr_dir=tmp_path / "sr")
    assert torch.equal(read_image(tmp_path / "sr" / "im0.png").rgb, read_image(folder / "im0.png").rgb)


def test_grayscale_hr_works(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(40, 44)], mode="L")
    result = evaluate(Bicubic(BicubicConfig(scale=2)), folder, scale=2, metrics=("psnr", "ssim"))
    assert 20 < result.mean["psnr"] < 60 and 0.5 < result.mean["ssim"] < 1


def test_bad_requests_are_input_errors(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(16, 16), (15, 16)])
    with pytest.raises(InputError, match="x4"):
        evaluate(Bicubic(BicubicConfig(scale=4)), folder, scale=2)
    with pytest.raises(InputError, match="unknown metric"):
        evaluate(Bicubic(BicubicConfig(scale=2)), folder, scale=2, metrics=("lpipz",))
    with pytest.raises(InputError, match="lpips needs its network"):
        evaluate(Bicubic(BicubicConfig(scale=2)), folder, scale=2, metrics=("lpips",))
    with pytest.raises(InputError, match="not a multiple of the scale 2"):  # 15 rows, and mod-crop is off
        evaluate(Bicubic(BicubicConfig(scale=2)), folder, protocol=Protocol(2, mod_crop=False), metrics=("psnr",))
    with pytest.raises(InputError, match="does not exist"):
        evaluate(Bicubic(BicubicConfig(scale=2)), tmp_path / "missing", scale=2)


def test_training_validation_equals_evaluate(tmp_path: Path) -> None:
    """Trainer.validate's path (eager, the generator's own device) gives evaluate's numbers (fast path)."""
    folder = write_pngs(tmp_path, [(30, 30), (26, 34)])
    torch.manual_seed(0)
    spec = ARCHS["msrresnet"]
    model = spec.module(spec.tiny(2)).train()
    items = ValDataset([folder], scale=2, progress=False).items
    means = evaluate_items(model, items, scale=2)
    expected = evaluate(model, folder, scale=2, metrics=("psnr", "ssim")).mean
    assert set(means) == {"psnr", "ssim"} and model.training
    # one 8-bit level may flip where eager and fused float sums round differently: far below 1e-3 dB
    assert means["psnr"] == pytest.approx(expected["psnr"], abs=1e-3)
    assert means["ssim"] == pytest.approx(expected["ssim"], abs=1e-5)


def test_set5_bicubic_x4_baseline(shared) -> None:  # noqa: ANN001
    result = evaluate(Bicubic(BicubicConfig(scale=4)), shared("data/Set5"), scale=4, metrics=("psnr", "ssim"))
    assert list(result.images) == ["baby", "bird", "butterfly", "head", "woman"]
    assert result.mean["psnr"] == pytest.approx(28.42, abs=0.05)  # the famous Set5 x4 bicubic baseline (Y)
    assert result.mean["ssim"] == pytest.approx(0.811, abs=0.005)


def test_set14_grayscale_bridge(shared) -> None:  # noqa: ANN001
    result = evaluate(Bicubic(BicubicConfig(scale=4)), shared("data/Set14"), scale=4, metrics=("psnr",), max_images=3)
    assert list(result.images) == ["baboon", "barbara", "bridge"]
    assert result.images["bridge"]["psnr"] == pytest.approx(24.47, abs=0.05)  # regression pin (literature: ~24.4)
