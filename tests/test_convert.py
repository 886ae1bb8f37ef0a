"""Converters: foreign layouts built from known weights -> convert -> same outputs; clean refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from perceptsr.archs.srresnet import MSRResNet, MSRResNetConfig
from perceptsr.convert import (
    CONVERTERS,
    canonicalize,
    convert_file,
    convert_state,
    detect,
    read_checkpoint,
)
from perceptsr.errors import CheckpointError, InputError
from perceptsr.zoo.release import load_release, read_release


def randomized(module: nn.Module, seed: int = 0) -> nn.Module:
    """Weights far from any init, so a swapped or skipped tensor changes the output."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.1)
    return module.eval()


def msrresnet(scale: int) -> MSRResNet:
    return randomized(MSRResNet(MSRResNetConfig(scale=scale, num_feat=8, num_block=2)))


def to_v0(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Inverse map, ours -> BasicSR v0.x names: body -> recon_trunk, conv_hr -> HRconv."""
    renamed = {}
    for key, value in state.items():
        if key.startswith("body."):
            key = "recon_trunk." + key[len("body.") :]
        elif key.startswith("conv_hr."):
            key = "HRconv." + key[len("conv_hr.") :]
        renamed[key] = value
    return renamed


class OldResNetBlock(nn.Module):
    """BasicSR-old `B.ResNetBlock` in mode CNA without norm: x + conv(relu(conv(x)))."""

    def __init__(self, nf: int) -> None:
        super().__init__()
        self.res = nn.Sequential(nn.Conv2d(nf, nf, 3, 1, 1), nn.ReLU(), nn.Conv2d(nf, nf, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.res(x)


class OldShortcut(nn.Module):
    def __init__(self, sub: nn.Module) -> None:
        super().__init__()
        self.sub = sub

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.sub(x)


class OldSRResNet(nn.Module):
    """BasicSR-old `architecture.SRResNet(norm_type=None, act_type='relu', mode='CNA',
    upsample_mode='pixelshuffle')` rebuilt from its source, with its flattened `model.N` keys."""

    def __init__(self, nf: int, nb: int, scale: int) -> None:
        super().__init__()
        factors = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
        upsampler = []
        for factor in factors:
            upsampler += [nn.Conv2d(nf, nf * factor * factor, 3, 1, 1), nn.PixelShuffle(factor), nn.ReLU()]
        trunk = nn.Sequential(*[OldResNetBlock(nf) for _ in range(nb)], nn.Conv2d(nf, nf, 3, 1, 1))
        self.model = nn.Sequential(
            nn.Conv2d(3, nf, 3, 1, 1),
            OldShortcut(trunk),
            *upsampler,
            nn.Conv2d(nf, nf, 3, 1, 1),
            nn.ReLU(),
            nn.Conv2d(nf, 3, 3, 1, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


class NotATensor:
    """Any custom class: pickling it means arbitrary code on load, which weights_only refuses."""


LR = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_msrresnet_v1_and_v0(scale: int) -> None:
    model = msrresnet(scale)
    for state, kind in (
        (model.state_dict(), "basicsr-msrresnet"),
        (to_v0(model.state_dict()), "basicsr-msrresnet-v0"),
    ):
        assert detect(state) == kind
        converted = convert_state(state)
        assert converted.config == model.config
        rebuilt = MSRResNet(converted.config).eval()
        rebuilt.load_state_dict(converted.state_dict, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(rebuilt(LR), model(LR), rtol=0, atol=0)


@pytest.mark.parametrize("scale", [2, 3, 4, 8])
def test_basicsr_old_srresnet(scale: int, tmp_path) -> None:
    torch.manual_seed(0)
    old = randomized(OldSRResNet(nf=8, nb=3, scale=scale))
    assert "model.1.sub.0.res.2.weight" in old.state_dict()  # the documented key layout
    source = tmp_path / "SRGAN_bicx4_noBN.pth"
    torch.save(old.state_dict(), source)
    converted = convert_file(source, tmp_path / "release.safetensors")
    assert converted.arch == "srresnet"
    assert (converted.config.scale, converted.config.num_feat, converted.config.num_block) == (scale, 8, 3)
    assert read_release(tmp_path / "release.safetensors").metadata["converter"] == "basicsr-srresnet-old"
    model = load_release(tmp_path / "release.safetensors")
    with torch.no_grad():
        torch.testing.assert_close(model(LR), old(LR), rtol=1e-6, atol=1e-6)


def test_canonicalize_prefers_params_ema_and_strips_module() -> None:
    ema, raw = msrresnet(4).state_dict(), randomized(msrresnet(4), seed=5).state_dict()
    wrapped = {
        "params": {f"module.{k}": v for k, v in raw.items()},
        "params_ema": {f"module.{k}": v for k, v in ema.items()},
    }
    state = canonicalize(wrapped)
    assert list(state) == list(ema)
    assert all(torch.equal(state[k], ema[k]) for k in ema)
    assert all(
        torch.equal(a, b) for a, b in zip(canonicalize({"params": raw}).values(), raw.values(), strict=True)
    )
    assert list(canonicalize({"module.module.x": 1})) == ["module.x"]  # stripped once only


def test_converter_refusals_name_the_key() -> None:
    state = msrresnet(4).state_dict()
    bad_shape = {**state, "body.1.conv2.weight": torch.zeros(8, 8, 5, 5)}
    with pytest.raises(CheckpointError, match=r"body.1.conv2.weight has shape \[8, 8, 5, 5\]"):
        convert_state(bad_shape)
    extra = {**state, "epoch": torch.tensor(3)}
    with pytest.raises(CheckpointError, match="unexpected key 'epoch'"):
        convert_state(extra)
    missing = dict(state)
    del missing["conv_last.bias"]
    with pytest.raises(CheckpointError, match="conv_last.bias"):
        convert_state(missing)
    with pytest.raises(CheckpointError, match="only 3-channel"):
        convert_state({**state, "conv_first.weight": torch.zeros(8, 1, 3, 3)})
    with pytest.raises(InputError, match="known kinds"):
        convert_state(state, kind="esrgan-2025")


def test_unknown_layout_lists_the_known_kinds() -> None:
    with pytest.raises(CheckpointError) as error:
        detect({"encoder.weight": torch.zeros(1)})
    assert all(name in str(error.value) for name in CONVERTERS)


def test_unreadable_files(tmp_path) -> None:
    corrupt = tmp_path / "corrupt.pth"
    corrupt.write_bytes(np.random.RandomState(0).bytes(4096))
    with pytest.raises(CheckpointError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(corrupt)
    evil = tmp_path / "pickled.pth"
    torch.save({"weight": torch.zeros(1), "object": NotATensor()}, evil)
    with pytest.raises(CheckpointError, match="weights_only"):
        read_checkpoint(evil)
    with pytest.raises(CheckpointError, match="does not exist"):
        read_checkpoint(tmp_path / "missing.pth")
    (tmp_path / "weights.h5").write_bytes(b"\x89HDF")
    with pytest.raises(CheckpointError, match="unsupported"):
        read_checkpoint(tmp_path / "weights.h5")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(CheckpointError, match="safetensors"):
        read_checkpoint(tmp_path / "broken.safetensors")
    torch.save(torch.zeros(3), tmp_path / "bare.pth")
    with pytest.raises(CheckpointError, match="not a dict"):
        read_checkpoint(tmp_path / "bare.pth")


def test_npz_is_read_without_pickle(tmp_path) -> None:
    np.savez(tmp_path / "ok.npz", w=np.ones((2, 2), np.float32))
    assert read_checkpoint(tmp_path / "ok.npz")["w"].tolist() == [[1, 1], [1, 1]]
    np.savez(tmp_path / "objects.npz", w=np.array([{"a": 1}], dtype=object))
    with pytest.raises(CheckpointError, match="npz"):
        read_checkpoint(tmp_path / "objects.npz")


def test_convert_file_does_not_overwrite(tmp_path) -> None:
    source = tmp_path / "net_g.pth"
    torch.save({"params": msrresnet(2).state_dict()}, source)
    target = tmp_path / "out.safetensors"
    convert_file(source, target)
    before = target.read_bytes()
    with pytest.raises(InputError):
        convert_file(source, target)
    assert target.read_bytes() == before
    convert_file(source, target, overwrite=True)
