"""FxSR: the t-conditioned generator, t maps, the conditional objective, the converter and `perceptsr sweep`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import flat_noisy_images, run_cli
from foreign import fxsr_to_original as to_original
from PIL import Image
from tolerance import assert_paths_close, network_depth

from perceptsr.archs.fxsr import FxSRNet, FxSRNetConfig
from perceptsr.archs.rrdb import RRDBNet, RRDBNetConfig
from perceptsr.cli.main import main
from perceptsr.conditions.tmap import draw_t, random_smooth_maps, t_condition
from perceptsr.convert import convert_state, detect
from perceptsr.engine.checkpoint import find, load_checkpoint, split_prefix
from perceptsr.engine.setup import build_method, parse_train_config
from perceptsr.engine.train import Trainer
from perceptsr.errors import CheckpointError, InputError
from perceptsr.evaluation.sweep import parse_t_values
from perceptsr.inference.tile import tiled_forward
from perceptsr.losses import weighted_l1, weighted_ragan
from perceptsr.methods.fxsr import FxSRConfig, loss_weights
from perceptsr.zoo.release import save_release


def tiny_fxsr(scale: int = 4, seed: int = 0) -> FxSRNet:
    torch.manual_seed(seed)
    model = FxSRNet(FxSRNetConfig(scale=scale, num_feat=8, num_block=1, num_grow_ch=4, cond_feat=4))
    with torch.no_grad():  # the fixtures' recipe: uniform ±2/sqrt(fan_in), biases ±0.1, so every tensor matters
        for param in model.parameters():
            bound = 2 / param[0].numel() ** 0.5 if param.dim() > 1 else 0.1
            param.uniform_(-bound, bound)
    return model.eval()


@pytest.mark.parametrize("scale", [4, 8])
def test_shapes_and_constant_t_equivalence(scale: int) -> None:
    model = tiny_fxsr(scale)
    lr = torch.rand(2, 3, 6, 7)
    with torch.no_grad():
        as_float = model(lr, t=0.3)
        as_map = model(lr, t=torch.full((2, 1, 6, 7), 0.3))
        as_shared_map = model(lr, t=torch.full((1, 1, 6, 7), 0.3))
        as_scalar = model(lr, t=torch.tensor(0.3))
        other = model(lr, t=0.9)
    assert as_float.shape == (2, 3, 6 * scale, 7 * scale)
    for same in (as_map, as_shared_map, as_scalar):
        torch.testing.assert_close(same, as_float, rtol=0, atol=0)
    assert (other - as_float).abs().max() > 1e-3  # t steers the output
    with pytest.raises(InputError, match="t must be"):
        model(lr, t=torch.zeros(2, 1, 3, 3))


def test_uniform_t_runs_on_one_pixel_and_matches_the_full_map() -> None:
    model = tiny_fxsr()
    lr = torch.rand(2, 3, 9, 11)
    varied = torch.rand(1, 1, 9, 11)
    assert model.t_map(lr, 0.3).shape == (2, 1, 1, 1)
    assert model.t_map(lr, torch.full((2, 1, 9, 11), 0.3)).shape == (2, 1, 1, 1)
    assert model.t_map(lr, torch.cat([torch.full((1, 1, 9, 11), 0.3), varied])).shape == (2, 1, 9, 11)
    with torch.no_grad():
        # sample 0 has a uniform t, but sample 1 does not, so the batch takes the full-map path
        full = model(lr, t=torch.cat([torch.full((1, 1, 9, 11), 0.3), varied]))
        shortcut = model(lr[:1], t=0.3)
        nudged = model(lr[:1], t=0.31)
    # two kernel paths (1x1 vs full-size condition maps): equal up to float32 summation order
    tolerance = assert_paths_close(shortcut, full[:1], depth=network_depth(model), what="one-pixel t vs full map")
    assert (nudged - full[:1]).abs().max() > 10 * tolerance  # a t off by 0.01 is far outside


def test_t_map_acts_locally() -> None:
    model = tiny_fxsr()
    lr = torch.rand(1, 3, 12, 64)
    t_map = torch.zeros(1, 1, 12, 64)
    t_map[..., 32:] = 1.0
    with torch.no_grad():
        zero, split = model(lr, t=0.0), model(lr, t=t_map)
    # receptive radius < 20 LR pixels: columns < 12 never see the right half's t
    tolerance = assert_paths_close(split[..., : 12 * 4], zero[..., : 12 * 4], depth=network_depth(model),
                                   what="left columns, t map vs t=0")
    assert (split[..., 52 * 4:] - zero[..., 52 * 4:]).abs().max() > max(1e-3, 10 * tolerance)


def test_tiled_t_map_equals_untiled() -> None:
    model = tiny_fxsr()
    lr = torch.rand(1, 3, 40, 100)
    t_map = random_smooth_maps(1, 40, 100, blobs=3, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        whole = model(lr, t=t_map)
    tiled = tiled_forward(model, lr, scale=4, tile=48, overlap=20, conditions={"t": t_map})
    assert_paths_close(tiled, whole, depth=network_depth(model), what="tiled t map")
    with torch.no_grad():
        uniform = model(lr, t=0.3)
    for t in (0.3, torch.tensor(0.3)):  # a scalar t goes to every tile as it is
        tiled = tiled_forward(model, lr, scale=4, tile=48, overlap=20, conditions={"t": t})
        assert_paths_close(tiled, uniform, depth=network_depth(model), what=f"tiled t={t!r}")


def test_t_condition_constant_default_and_errors(tmp_path: Path) -> None:
    lr = torch.rand(1, 3, 5, 6)
    torch.testing.assert_close(t_condition(lr, t=None, t_map=None), torch.full((1, 1, 5, 6), 0.8))
    torch.testing.assert_close(t_condition(lr, t=0.25, t_map=None), torch.full((1, 1, 5, 6), 0.25))
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InputError, match="between 0 and 1"):
            t_condition(lr, t=bad, t_map=None)
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(InputError, match="cannot read image"):
        t_condition(lr, t=None, t_map=broken)
    with pytest.raises(InputError, match="not both"):
        t_condition(lr, t=0.5, t_map=broken)


def test_t_map_picture_is_resized_to_the_lr_grid(tmp_path: Path) -> None:
    painted = np.zeros((30, 40), np.uint8)
    painted[:, 20:] = 255  # left t = 0, right t = 1, at another size than the LR
    Image.fromarray(painted).save(tmp_path / "map.png")
    Image.fromarray(np.full((3, 3), 51, np.uint8)).save(tmp_path / "gray.png")
    lr = torch.rand(1, 3, 12, 16)
    t = t_condition(lr, t=None, t_map=tmp_path / "map.png")
    assert t.shape == (1, 1, 12, 16) and t.min() >= 0 and t.max() <= 1
    torch.testing.assert_close(t[..., :6], torch.zeros(1, 1, 12, 6), rtol=0, atol=1e-6)
    torch.testing.assert_close(t[..., -6:], torch.ones(1, 1, 12, 6), rtol=0, atol=1e-6)
    torch.testing.assert_close(t_condition(lr, t=None, t_map=tmp_path / "gray.png"),
                               torch.full((1, 1, 12, 16), 0.2), rtol=0, atol=1e-6)


def test_random_smooth_maps_are_in_range_smooth_and_reproducible() -> None:
    maps = random_smooth_maps(4, 32, 40, blobs=3, generator=torch.Generator().manual_seed(7))
    again = random_smooth_maps(4, 32, 40, blobs=3, generator=torch.Generator().manual_seed(7))
    torch.testing.assert_close(maps, again, rtol=0, atol=0)
    assert maps.shape == (4, 1, 32, 40) and maps.min() >= 0 and maps.max() <= 1
    assert maps.flatten(1).std(dim=1).min() > 1e-3  # not constant ...
    assert maps.diff(dim=-1).abs().max() < 0.2  # ... but smooth



def test_ends_sampling_trains_t_0_and_t_1_a_quarter_each() -> None:
    """`ends`: a quarter of the samples at exactly t = 0, a quarter at exactly t = 1, the rest mixed's draws."""
    t = draw_t("ends", 4000, 6, 6, blobs=3, generator=torch.Generator().manual_seed(1))
    flat = t.flatten(1)
    zero, one = (flat == 0).all(dim=1).float().mean(), (flat == 1).all(dim=1).float().mean()
    assert abs(zero - 0.25) < 0.03 and abs(one - 0.25) < 0.03
    assert t.min() >= 0 and t.max() <= 1
    middle = flat[~((flat == 0).all(dim=1) | (flat == 1).all(dim=1))]
    assert (middle.std(dim=1) > 1e-3).float().mean() > 0.3  # smooth maps among the rest

PD = {0.0: (20.01, 0.0, [0, 0, 0, 0]), 0.25: (15.01, 1.25e-3, [0.25, 0, 0, 0]),
      0.5: (10.01, 2.5e-3, [0.25, 0.25, 0, 0]), 0.75: (5.01, 3.75e-3, [0.25, 0.25, 0.25, 0]),
      1.0: (0.01, 5e-3, [0.25, 0.25, 0.25, 0.25]), 0.1: (18.01, 5e-4, [0.1, 0, 0, 0])}
DS = {0.0: [1, 0, 0], 0.25: [0.5, 0.5, 0], 0.5: [0, 1, 0], 0.75: [0, 0.5, 0.5], 1.0: [0, 0, 1]}


@pytest.mark.parametrize("t", sorted(PD))
def test_pd_schedule_at_segment_boundaries(t: float) -> None:
    weights = loss_weights(FxSRConfig(), torch.tensor(t, dtype=torch.float64))
    pixel, adversarial, vgg = PD[t]
    assert float(weights.pixel) == pytest.approx(pixel) and float(weights.adversarial) == pytest.approx(adversarial)
    assert list(weights.perceptual) == ["conv1_2", "conv2_2", "conv3_4", "conv4_4"]
    assert [float(w) for w in weights.perceptual.values()] == pytest.approx(vgg)


@pytest.mark.parametrize("t", sorted(DS))
def test_ds_schedule_slides_a_unit_weight(t: float) -> None:
    weights = loss_weights(FxSRConfig(objective="ds"), torch.tensor(t, dtype=torch.float64))
    assert (weights.pixel, weights.adversarial) == (1e-2, 5e-3)
    assert list(weights.perceptual) == ["conv2_2", "conv3_4", "conv4_4"]
    assert [float(w) for w in weights.perceptual.values()] == pytest.approx(DS[t])


def test_weighted_terms_reduce_to_scalar_weights_and_weight_per_pixel() -> None:
    torch.manual_seed(0)
    a, b = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    constant = torch.full((2, 1, 4, 4), 0.7)  # LR-size map, resized to the 8×8 grid
    torch.testing.assert_close(weighted_l1(a, b, constant), 0.7 * (a - b).abs().mean())
    left = torch.zeros(2, 1, 8, 8)
    left[..., :4] = 1.0
    torch.testing.assert_close(weighted_l1(a, b, left), (a - b)[..., :4].abs().mean() / 2)
    fake, real = torch.randn(2, 1), torch.randn(2, 1)
    from perceptsr.losses import generator_loss

    torch.testing.assert_close(weighted_ragan(fake, real, torch.full((2, 1, 4, 4), 0.3)),
                               0.3 * generator_loss("ragan", fake, real))
    first_only = weighted_ragan(fake, real, torch.tensor([1.0, 0.0]).view(2, 1, 1, 1))
    both = weighted_ragan(fake, real, 1.0)
    assert 0 < float(first_only) < float(both)


def tiny_config(folder: Path, **model: object) -> dict:
    return {
        "method": "fxsr",
        "model": {"generator": {"scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4, "cond_feat": 4},
                  "discriminator": {"num_feat": 4, "input_size": 128}, "allow_random_vgg": True,
                  "perceptual_layers": ["conv1_1", "conv1_2"],
                  "phases": {"gan": {"iterations": 2, "trains": ["generator", "image"]}}, **model},
        "data": {"train": [str(folder)], "patch_size": 128, "batch_size": 2, "workers": 0},
        "save_every": 100, "log_every": 1,
    }


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return flat_noisy_images(tmp_path_factory.mktemp("hr128"), count=3, size=(132, 136), seed=2, base=180, noise=75)


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_prepare_draws_t_per_batch_sample_or_map(hr_folder: Path) -> None:
    from perceptsr.methods.base import Batch

    batch = Batch(torch.rand(3, 3, 8, 10), torch.rand(3, 3, 32, 40))
    drawn = {}
    for kind in ("batch", "sample", "spatial"):
        method = build_method(parse_train_config(tiny_config(hr_folder, t_sampling=kind)))
        t = method.prepare(batch, "gan", torch.Generator().manual_seed(5)).extras["t"]
        again = method.prepare(batch, "gan", torch.Generator().manual_seed(5)).extras["t"]
        torch.testing.assert_close(t, again, rtol=0, atol=0)
        assert t.shape == (3, 1, 8, 10) and t.min() >= 0 and t.max() <= 1
        drawn[kind] = t
    assert drawn["batch"].unique().numel() == 1
    assert drawn["sample"].flatten(1).std(1).max() == 0 and drawn["sample"][:, 0, 0, 0].unique().numel() == 3
    assert drawn["spatial"].flatten(1).std(1).min() > 0


def rrdb_release(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    rrdb = RRDBNet(RRDBNetConfig(scale=4, num_feat=8, num_block=1, num_grow_ch=4))
    save_release(path, arch="rrdb", config=rrdb.config, state_dict=rrdb.state_dict())
    return rrdb.state_dict()


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
@pytest.mark.parametrize(("t_sampling", "trains"), [("batch", ["generator", "image"]), ("spatial", ["generator"])])
def test_training_from_an_rrdb_psnr_model(hr_folder: Path, tmp_path: Path, t_sampling: str, trains: list) -> None:
    rrdb = rrdb_release(tmp_path / "rrdb.safetensors")
    config = tiny_config(hr_folder, t_sampling=t_sampling, phases={"gan": {"iterations": 2, "trains": trains}})
    config["init"] = str(tmp_path / "rrdb.safetensors")
    trainer = Trainer(parse_train_config(config), tmp_path / "run", progress=False)
    start = {k: v.clone() for k, v in trainer.method.state_dict().items()}
    for key, value in rrdb.items():  # RRDB weights copied, SFT layers and condition net fresh
        torch.testing.assert_close(start[f"generator.{key}"], value, rtol=0, atol=0)
    trainer.run()
    weights = load_checkpoint(find(tmp_path / "run", "latest"), with_state=False).weights
    sft = [k for k in weights if k.startswith("generator.") and ".sft" in k]
    assert any(not torch.equal(weights[k], start[k]) for k in sft)
    d_changed = any(not torch.equal(v, start[f"discriminators.image.{k}"])  # parameters (BN statistics move
                    for k, v in split_prefix(weights, "discriminators.image").items()  # whenever D runs)
                    if v.is_floating_point() and "running_" not in k)
    assert d_changed == ("image" in trains)
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert {"g_pixel", "g_perceptual", "g_adversarial", "t"} <= set(logs[-1])
    assert all(np.isfinite(logs[-1][k]) for k in logs[-1] if k.startswith(("g_", "d_")))
    assert 0 <= logs[-1]["t"] <= 1 and logs[0]["t"] != logs[1]["t"]


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_init_refuses_foreign_or_incomplete_weights(hr_folder: Path, tmp_path: Path) -> None:
    method = build_method(parse_train_config(tiny_config(hr_folder)))
    rrdb = rrdb_release(tmp_path / "rrdb.safetensors")
    with pytest.raises(CheckpointError, match="does not have"):
        method.init_generator({**rrdb, "extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="lack 'conv_hr.bias'"):
        method.init_generator({k: v for k, v in rrdb.items() if k != "conv_hr.bias"})
    partial = {k: v for k, v in method.generator.state_dict().items() if "rdb3.sft4" not in k}
    with pytest.raises(CheckpointError, match="sft4"):
        method.init_generator(partial)


@pytest.mark.parametrize("scale", [4, 8])
def test_converter_round_trip_and_strictness(scale: int) -> None:
    model = tiny_fxsr(scale)
    state = to_original(model.state_dict())
    assert detect(state) == "fxsr"
    converted = convert_state(state)
    assert converted.arch == "fxsr" and converted.config == model.config
    rebuilt = FxSRNet(converted.config).eval()
    rebuilt.load_state_dict(converted.state_dict, strict=True)
    lr, t = torch.rand(1, 3, 6, 5), torch.rand(1, 1, 6, 5)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(lr, t=t), model(lr, t=t), rtol=0, atol=0)
    with pytest.raises(CheckpointError, match="missing key 'RRDB_trunk.0.RDB2.sft3.SFT_shift_conv1.bias'"):
        convert_state({k: v for k, v in state.items() if k != "RRDB_trunk.0.RDB2.sft3.SFT_shift_conv1.bias"})
    with pytest.raises(CheckpointError, match="unexpected key"):
        convert_state({**state, "RRDB_trunk.0.RDB1.sft5.SFT_scale_conv0.weight": torch.zeros(4, 4, 1, 1)})


def test_t_spec_parsing() -> None:
    assert parse_t_values("0:1:0.1") == pytest.approx([i / 10 for i in range(11)])
    assert parse_t_values("0.2, 0.8") == [0.2, 0.8] and parse_t_values("1") == [1.0]
    for bad in ("0:2:0.5", "a:b:c", "1:0:0.1", "0:1", "", "0.5,x"):
        with pytest.raises(InputError):
            parse_t_values(bad)


@pytest.mark.slow
def test_sweep_and_upscale_end_to_end(shared, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    set5 = shared("data/Set5")
    model = tiny_fxsr()
    release = tmp_path / "fxsr_tiny.safetensors"
    save_release(release, arch="fxsr", config=model.config, state_dict=model.state_dict())
    out = tmp_path / "sweep"
    done = run_cli("sweep", "--model", release, "--data", set5, "--scale", "4", "--t-values", "0,1",
                   "--max-images", "2", "-o", out, "--no-lpips", "--quiet")
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader((out / "sweep.csv").open()))
    assert [r["t"] for r in rows] == ["0.0", "1.0"] and list(rows[0])[2:] == ["t", "psnr", "ssim", "lr_psnr", "niqe"]
    values = {k: [float(r[k]) for r in rows] for k in list(rows[0])[2:]}
    assert all(np.isfinite(v) for column in values.values() for v in column)
    assert values["psnr"][0] != values["psnr"][1] and all(0 < v < 60 for v in values["lr_psnr"])
    document = json.loads((out / "sweep.json").read_text())
    images = document["images"]["fxsr_tiny"]["Set5"]["1"]
    assert sorted(images) == ["baby", "bird"] and "LPIPS disabled" in document["notes"][0]
    assert (out / "sweep.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # refusals, in process: existing outputs, a bad t spec, a model without t, a bad t for upscale
    small = tmp_path / "small.png"
    Image.open(set5 / "bird.png").crop((100, 100, 148, 140)).save(small)
    for argv, message in [
        (["sweep", "--model", str(release), "--data", str(set5), "-o", str(out)], "already exists"),
        (["sweep", "--model", str(release), "--data", str(set5), "-o", str(tmp_path / "x"), "--t-values", "0:2:1"],
         "between 0 and 1"),
        (["sweep", "--model", "bicubic", "--data", str(set5), "-o", str(tmp_path / "y"), "--scale", "4"], "takes no t"),
        (["upscale", str(small), "-o", str(tmp_path / "up"), "--model", str(release), "--t", "2"], "between 0 and 1"),
    ]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists() and not (tmp_path / "up").exists()
    # a painted all-white map is t = 1 everywhere, tiled or not
    Image.fromarray(np.full((4, 4), 255, np.uint8)).save(tmp_path / "map.png")
    assert main(["upscale", str(small), "-o", str(tmp_path / "map"), "--model", str(release),
                 "--t-map", str(tmp_path / "map.png"), "--tile", "24", "--tile-overlap", "4"]) == 0
    assert main(["upscale", str(small), "-o", str(tmp_path / "one"), "--model", str(release), "--t", "1"]) == 0
    painted = np.asarray(Image.open(tmp_path / "map" / "small.png")).astype(int)
    constant = np.asarray(Image.open(tmp_path / "one" / "small.png")).astype(int)
    assert painted.shape == (160, 192, 3) and np.abs(painted - constant).max() <= 1
