"""Dataset evaluation: the paper protocol (modcrop, 8-bit bicubic LR, 8-bit SR, Y, crop = scale)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import Tensor, nn

from perceptsr.archs.bicubic import Bicubic, BicubicConfig
from perceptsr.data.datasets import ValDataset
from perceptsr.data.resize import imresize
from perceptsr.errors import InputError
from perceptsr.evaluation.evaluate import evaluate, evaluate_items
from perceptsr.io.images import read_image
from perceptsr.metrics import niqe, psnr


def write_pngs(folder: Path, sizes: list[tuple[int, int]], *, mode: str = "RGB", seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i, (h, w) in enumerate(sizes):
        # smooth-ish content so bicubic is a fair, finite-PSNR baseline
        base = rng.integers(0, 256, (h // 4 + 1, w // 4 + 1) + (() if mode == "L" else (3,)), dtype=np.uint8)
        image = Image.fromarray(base, mode).resize((w, h), Image.BILINEAR)
        image.save(folder / f"im{i}.png")
    return folder


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
    result = evaluate(
        model,
        folder,
        scale=2,
        metrics=("psnr", "ssim"),
        conditions_fn=give_hr,
        progress=False,
        model_name="oracle",
    )
    assert result.dataset == "set" and result.model == "oracle" and list(result.images) == ["im0", "im1"]
    assert result.mean["psnr"] == math.inf and result.mean["ssim"] == pytest.approx(1.0, abs=1e-12)
    # the model saw the mod-cropped pairs, in inference mode, in eval mode; its training flag is restored
    assert model.calls[0] == ((1, 3, 15, 17), (1, 3, 30, 34), True, False) and model.training


def test_sr_is_clamped_and_rounded_to_8_bit(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(32, 32)])
    kwargs = {"scale": 2, "metrics": ("psnr",), "conditions_fn": give_hr, "progress": False}
    assert evaluate(Oracle(2, offset=0.45 / 255), folder, **kwargs).mean["psnr"] == math.inf
    shifted = evaluate(Oracle(2, offset=0.55 / 255), folder, **kwargs).mean["psnr"]
    # every Y value moves by (219/255) levels (clipped at the ends): close to 20*log10(255/0.86)
    assert 48 < shifted < 50


def test_protocol_is_recorded(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(28, 28)])
    result = evaluate(Bicubic(BicubicConfig(scale=4)), folder, scale=4, metrics=("psnr",), progress=False)
    protocol = result.protocol
    assert protocol["scale"] == 4 and protocol["crop_border"] == 4 and protocol["y_channel"] is True
    assert protocol["degradation"] == "matlab-bicubic" and protocol["quantised"] == "8-bit"
    assert protocol["images"] == 1 and protocol["tile"] is None
    rgb = evaluate(
        Bicubic(BicubicConfig(scale=4)),
        folder,
        scale=4,
        metrics=("psnr",),
        y_channel=False,
        crop_border=0,
        progress=False,
    )
    assert rgb.protocol["crop_border"] == 0 and rgb.protocol["y_channel"] is False
    assert rgb.mean["psnr"] != result.mean["psnr"]


def test_bicubic_matches_a_direct_computation(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(41, 37)])
    result = evaluate(Bicubic(BicubicConfig(scale=2)), folder, scale=2, metrics=("psnr",), progress=False)
    hr = read_image(folder / "im0.png").rgb[..., :40, :36]
    lr = torch.round(imresize(hr, 0.5).clamp(0, 1) * 255) / 255
    sr = torch.round(imresize(lr, 2).clamp(0, 1) * 255) / 255
    expected = psnr(sr, hr, crop_border=2, y_channel=True)
    assert 20 < expected < 60 and result.images["im0"]["psnr"] == pytest.approx(expected, abs=1e-9)


def test_tiled_evaluation_matches_untiled(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(64, 72)])
    model = Bicubic(BicubicConfig(scale=2))
    whole = evaluate(model, folder, scale=2, metrics=("psnr", "ssim"), progress=False)
    tiled = evaluate(model, folder, scale=2, metrics=("psnr", "ssim"), tile=16, overlap=4, progress=False)
    assert tiled.protocol["tile"] == 16 and tiled.protocol["overlap"] == 4
    assert tiled.mean["psnr"] == pytest.approx(whole.mean["psnr"], abs=0.02)
    assert tiled.mean["ssim"] == pytest.approx(whole.mean["ssim"], abs=1e-3)


def test_niqe_undefined_on_small_images_is_left_out_of_the_mean(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(100, 200), (60, 60)])
    result = evaluate(
        Bicubic(BicubicConfig(scale=2)),
        folder,
        scale=2,
        metrics=("psnr", "niqe"),
        progress=False,
        sr_dir=tmp_path / "sr",
    )
    assert math.isnan(result.images["im1"]["niqe"]) and math.isfinite(result.images["im0"]["niqe"])
    assert result.mean["niqe"] == result.images["im0"]["niqe"]
    assert result.protocol["undefined"] == {"psnr": [], "niqe": ["im1"]}
    saved = read_image(tmp_path / "sr" / "im0.png").rgb
    assert result.images["im0"]["niqe"] == pytest.approx(niqe(saved, crop_border=2), abs=1e-9)
    assert result.mean["psnr"] == pytest.approx(np.mean([r["psnr"] for r in result.images.values()]))


def test_saved_sr_holds_the_measured_pixels(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path / "hr", [(20, 22)])
    evaluate(
        Oracle(2),
        folder,
        scale=2,
        metrics=("psnr",),
        conditions_fn=give_hr,
        progress=False,
        sr_dir=tmp_path / "sr",
    )
    assert torch.equal(read_image(tmp_path / "sr" / "im0.png").rgb, read_image(folder / "im0.png").rgb)


def test_grayscale_hr_works(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(40, 44)], mode="L")
    result = evaluate(
        Bicubic(BicubicConfig(scale=2)), folder, scale=2, metrics=("psnr", "ssim"), progress=False
    )
    assert 20 < result.mean["psnr"] < 60 and 0.5 < result.mean["ssim"] < 1


def test_bad_requests_are_input_errors(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(16, 16)])
    with pytest.raises(InputError, match="x4"):
        evaluate(Bicubic(BicubicConfig(scale=4)), folder, scale=2, progress=False)
    with pytest.raises(InputError, match="unknown metric"):
        evaluate(Bicubic(BicubicConfig(scale=2)), folder, scale=2, metrics=("lpipz",), progress=False)


def test_evaluate_items_equals_evaluate(tmp_path: Path) -> None:
    folder = write_pngs(tmp_path, [(30, 30), (26, 34)])
    model = Bicubic(BicubicConfig(scale=2))
    items = ValDataset([folder], scale=2, progress=False).items
    means = evaluate_items(model, items, scale=2)
    expected = evaluate(model, folder, scale=2, metrics=("psnr", "ssim"), progress=False).mean
    assert set(means) == {"psnr", "ssim"} and 20 < means["psnr"] < 60
    assert means == pytest.approx(expected, abs=1e-12)


def test_set5_bicubic_x4_baseline(shared) -> None:  # noqa: ANN001
    result = evaluate(
        Bicubic(BicubicConfig(scale=4)),
        shared("data/Set5"),
        scale=4,
        metrics=("psnr", "ssim"),
        progress=False,
    )
    assert list(result.images) == ["baby", "bird", "butterfly", "head", "woman"]
    assert result.mean["psnr"] == pytest.approx(28.42, abs=0.05)  # the famous Set5 x4 bicubic baseline (Y)
    assert result.mean["ssim"] == pytest.approx(0.811, abs=0.005)


def test_set14_grayscale_bridge(shared) -> None:  # noqa: ANN001
    result = evaluate(
        Bicubic(BicubicConfig(scale=4)),
        shared("data/Set14"),
        scale=4,
        metrics=("psnr",),
        max_images=3,
        progress=False,
    )
    assert list(result.images) == ["baboon", "barbara", "bridge"]
    assert result.images["bridge"]["psnr"] == pytest.approx(
        24.47, abs=0.05
    )  # regression pin (literature: ~24.4)
