"""RRDBNet (ESRGAN): shapes at every layout, the three checkpoint layouts, and the esrgan method's phases."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import flat_noisy_images
from foreign import rrdb_to_old as to_old
from foreign import rrdb_to_trunk as to_trunk

from perceptsr.archs.rrdb import RRDBNet, RRDBNetConfig
from perceptsr.convert import CONVERTERS, convert_state, detect
from perceptsr.engine.checkpoint import find, load_checkpoint, split_prefix
from perceptsr.engine.setup import build_method, parse_train_config
from perceptsr.engine.train import Trainer
from perceptsr.errors import CheckpointError, ConfigError


def tiny_rrdb(scale: int, *, unshuffle: bool = True, seed: int = 0) -> RRDBNet:
    torch.manual_seed(seed)
    model = RRDBNet(RRDBNetConfig(scale=scale, num_feat=8, num_block=2, num_grow_ch=4, unshuffle=unshuffle))
    with torch.no_grad():  # weights far from init, so a swapped or skipped tensor shows in the output
        for param in model.parameters():
            param.copy_(torch.randn_like(param) * 0.1)
    return model.eval()


@pytest.mark.parametrize(("scale", "unshuffle", "stages", "in_ch"),
                         [(1, True, 2, 48), (2, True, 2, 12), (4, True, 2, 3), (8, True, 3, 3),
                          (1, False, 0, 3), (2, False, 1, 3)])
def test_layouts_and_odd_sizes(scale: int, unshuffle: bool, stages: int, in_ch: int) -> None:
    model = tiny_rrdb(scale, unshuffle=unshuffle)
    assert model.conv_first.in_channels == in_ch
    assert sorted(k for k in model.state_dict() if k.startswith("conv_up") and k.endswith("weight")) == [
        f"conv_up{i}.weight" for i in range(1, stages + 1)]
    lr = torch.rand(1, 3, 7, 9)  # not a multiple of the unshuffle factor: padded, then cropped
    with torch.no_grad():
        sr = model(lr)
    assert sr.shape == (1, 3, 7 * scale, 9 * scale) and torch.isfinite(sr).all() and sr.std() > 0


def test_config_rejects_bad_values() -> None:
    for bad in ({"scale": 3}, {"num_feat": 0}, {"num_block": -1}):
        with pytest.raises(ConfigError):
            RRDBNetConfig(**bad)


@pytest.mark.parametrize(
    ("layout", "scale", "unshuffle"),
    [("basicsr-rrdbnet", 1, True), ("basicsr-rrdbnet", 2, True), ("basicsr-rrdbnet", 8, True),
     ("esrgan-rrdbnet", 4, True), ("esrgan-rrdbnet", 8, True), ("esrgan-rrdbnet-old", 4, True),
     ("esrgan-rrdbnet-old", 8, True), ("esrgan-rrdbnet-old", 2, False), ("esrgan-rrdbnet-old", 1, False)],
)
def test_every_layout_converts_to_identical_outputs(layout: str, scale: int, unshuffle: bool) -> None:
    model = tiny_rrdb(scale, unshuffle=unshuffle)
    state = model.state_dict()
    if layout == "esrgan-rrdbnet":
        state = to_trunk(state)
    elif layout == "esrgan-rrdbnet-old":
        state = to_old(state, 2, model.rrdb_config.upsample_stages)
    assert detect(state) == layout
    converted = convert_state(state)
    assert converted.arch == "rrdb" and converted.config == model.config
    rebuilt = RRDBNet(converted.config).eval()
    rebuilt.load_state_dict(converted.state_dict, strict=True)
    lr = torch.rand(1, 3, 8, 12)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(lr), model(lr), rtol=0, atol=0)


def test_converters_refuse_incomplete_foreign_or_gray_files() -> None:
    state = to_trunk(tiny_rrdb(4).state_dict())
    convert = CONVERTERS["esrgan-rrdbnet"].convert
    with pytest.raises(CheckpointError, match="HRconv.bias"):
        convert({k: v for k, v in state.items() if k != "HRconv.bias"})
    with pytest.raises(CheckpointError, match="unexpected key 'extra.weight'"):
        convert({**state, "extra.weight": torch.zeros(1)})
    with pytest.raises(CheckpointError, match="RGB"):
        convert({**state, "conv_first.weight": torch.zeros(8, 1, 3, 3)})
    wrong = dict(state)
    wrong["RRDB_trunk.0.RDB2.conv3.weight"] = torch.zeros(4, 15, 3, 3)
    with pytest.raises(CheckpointError, match=r"RRDB_trunk.0.RDB2.conv3.weight has shape \[4, 15, 3, 3\]"):
        convert(wrong)


@pytest.fixture(scope="module")
def hr_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return flat_noisy_images(tmp_path_factory.mktemp("hr128"), count=3, size=(136, 140), seed=1, base=180, noise=75)


def tiny_esrgan(hr_folder: Path, *, pretrain: int, gan: int) -> dict:
    return {
        "method": "esrgan",
        "model": {
            "generator": {"scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4},
            "discriminator": {"num_feat": 4, "input_size": 128},
            "perceptual_layers": {"conv1_1": 1.0},  # cheap stand-in for conv5_4
            "allow_random_vgg": True,
            "phases": {"pretrain": {"iterations": pretrain},
                       "gan": {"iterations": gan, "trains": ["generator", "image"]}},
        },
        "data": {"train": [str(hr_folder)], "patch_size": 128, "batch_size": 2, "workers": 0},
        "save_every": 100, "log_every": 1,
    }


def changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> bool:
    return any(not torch.equal(before[k], after[k]) for k in after if after[k].is_floating_point())


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_esrgan_pretrain_then_gan_freezes_and_trains_the_right_networks(hr_folder: Path, tmp_path: Path) -> None:
    config = dict(tiny_esrgan(hr_folder, pretrain=2, gan=2), save_every=2)
    torch.manual_seed(0)
    before = {k: v.clone() for k, v in build_method(parse_train_config(config)).state_dict().items()}
    Trainer(parse_train_config(config), tmp_path / "run", progress=False).run()

    def weights(step: str, prefix: str) -> dict[str, torch.Tensor]:
        found = load_checkpoint(find(tmp_path / "run", step), with_state=False).weights
        return {k: v for k, v in split_prefix(found, prefix).items() if "running_" not in k}  # BN stats move anyway

    assert changed(split_prefix(before, "generator"), weights("2", "generator"))
    assert not changed(split_prefix(before, "discriminators.image"), weights("2", "discriminators.image"))
    assert changed(weights("2", "generator"), weights("4", "generator"))
    assert changed(weights("2", "discriminators.image"), weights("4", "discriminators.image"))
    logs = [json.loads(line) for line in (tmp_path / "run" / "log.jsonl").read_text().splitlines()]
    assert set(logs[0]) >= {"g_l1"} and all(np.isfinite(r["g_l1"]) for r in logs[:2])
    terms = {k: v for k, v in logs[-1].items() if k.startswith(("g_", "d_"))}
    assert set(terms) == {"g_pixel", "g_perceptual", "g_adversarial", "d_adversarial"}
    assert all(np.isfinite(v) and v > 0 for v in terms.values())
