"""Converters: foreign layouts built from known weights -> convert -> same outputs; clean refusals."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from foreign import (
    OldSRResNet,
    frsr_to_tf,
    fxsr_to_original,
    msrresnet_to_v0,
    object_array,
    randomized,
    rrdb_to_old,
    rrdb_to_trunk,
    srfeat_to_tensorlayer,
)
from tolerance import assert_paths_close, network_depth
from torch import Tensor, nn

from perceptsr.archs import ARCHS, PRIORS
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
from perceptsr.zoo.release import build, load_release, read_release


def msrresnet(scale: int) -> MSRResNet:
    return randomized(MSRResNet(MSRResNetConfig(scale=scale, num_feat=8, num_block=2)))


class NotATensor:
    """Any custom class: pickling it means arbitrary code on load, which weights_only refuses."""


LR = torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_msrresnet_v1_and_v0(scale: int) -> None:
    model = msrresnet(scale)
    for state, kind in (
        (model.state_dict(), "basicsr-msrresnet"),
        (msrresnet_to_v0(model.state_dict()), "basicsr-msrresnet-v0"),
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
    with torch.no_grad():  # the same convs in another module structure: equal up to float32 rounding
        assert_paths_close(model(LR), old(LR), depth=network_depth(old), what=f"old SRResNet x{scale}")


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


# --- the CONVERTERS table: every entry round-trips a tiny file ------------------------------------------------


@dataclass
class Case:
    """A tiny foreign file for one converter: the network it was made from and the inputs to compare on."""

    source: Path
    net: nn.Module
    inputs: dict[str, Tensor] = field(default_factory=dict)
    lr: Tensor = field(default_factory=lambda: torch.rand(1, 3, 6, 7, generator=torch.Generator().manual_seed(3)))
    method: str = "forward"  # the segmentation prior is compared on its logits (its softmax is ~flat here)


def _ours(arch: str, scale: int, *, seed: int = 0) -> nn.Module:
    """A tiny ARCHS/PRIORS network with every weight and BN statistic randomized."""
    spec = ARCHS.get(arch) or PRIORS[arch]
    torch.manual_seed(seed)
    return randomized(build(arch, spec.tiny(scale)), seed=seed)


def _save(path: Path, state: dict[str, Tensor]) -> Path:
    torch.save({k: v.clone() for k, v in state.items()}, path)  # tensors only: what weights_only reads
    return path


def _seg(n: int, h: int, w: int) -> Tensor:
    return torch.randn(n, 8, h, w, generator=torch.Generator().manual_seed(4)).mul(3).softmax(1)


def _msrresnet(folder: Path) -> Case:
    net = msrresnet(4)
    return Case(_save(folder / "net_g.pth", net.state_dict()), net)


def _msrresnet_v0(folder: Path) -> Case:
    net = msrresnet(2)
    return Case(_save(folder / "MSRResNet_x2.pth", msrresnet_to_v0(net.state_dict())), net)


def _srresnet_old(folder: Path) -> Case:
    torch.manual_seed(0)
    net = randomized(OldSRResNet(nf=8, nb=2, scale=4))
    return Case(_save(folder / "SRGAN_bicx4_noBN_DIV2K.pth", net.state_dict()), net)


def _natsr(folder: Path) -> Case:
    net = _ours("frsr", 4)
    np.savez(folder / "NatSR.npz", **frsr_to_tf(net), global_step=np.array(5))
    return Case(folder / "NatSR.npz", net)


def _srfeat(folder: Path) -> Case:
    net = _ours("srfeat", 4)
    np.savez(folder / "SRFeat_full.npz", params=object_array(srfeat_to_tensorlayer(net)))
    return Case(folder / "SRFeat_full.npz", net)


def _sftgan(form: str) -> Callable[[Path], Case]:
    def make(folder: Path) -> Case:
        torch.manual_seed(0)
        net = randomized(build("sftgan", ARCHS["sftgan"].tiny(4).__class__(
            **{**vars(ARCHS["sftgan"].tiny(4)), "form": form})))
        return Case(_save(folder / f"SFTGAN_{form}.pth", net.state_dict()), net, {"seg": _seg(1, 24, 28)})

    return make


def _outdoorsceneseg(folder: Path) -> Case:
    net = _ours("outdoorsceneseg", 1)
    old = {k: v for k, v in net.state_dict().items() if not k.endswith("num_batches_tracked")}  # PyTorch 0.4.0
    caffe = torch.rand(1, 3, 16, 24, generator=torch.Generator().manual_seed(5)) * 255 - 120
    return Case(_save(folder / "segmentation_OST_bic.pth", old), net, lr=caffe, method="logits")


def _fxsr(folder: Path) -> Case:
    net = _ours("fxsr", 4)
    t = torch.rand(1, 1, 6, 7, generator=torch.Generator().manual_seed(6))
    return Case(_save(folder / "FxSR-PD-4x.pth", fxsr_to_original(net.state_dict())), net, {"t": t})


def _rrdb_basicsr(folder: Path) -> Case:
    net = _ours("rrdb", 2)
    torch.save({"params_ema": dict(net.state_dict())}, folder / "RealESRGAN_x2plus.pth")  # BasicSR's wrapper
    return Case(folder / "RealESRGAN_x2plus.pth", net)


def _rrdb_trunk(folder: Path) -> Case:
    net = _ours("rrdb", 4)
    return Case(_save(folder / "RRDB_ESRGAN_x4.pth", rrdb_to_trunk(net.state_dict())), net)


def _rrdb_old(folder: Path) -> Case:
    net = _ours("rrdb", 4)
    state = rrdb_to_old(net.state_dict(), net.config.num_block, net.rrdb_config.upsample_stages)
    return Case(_save(folder / "4x_community_old_arch.pth", state), net)


CASES: dict[str, Callable[[Path], Case]] = {
    "basicsr-msrresnet": _msrresnet,
    "basicsr-msrresnet-v0": _msrresnet_v0,
    "basicsr-srresnet-old": _srresnet_old,
    "natsr-tf": _natsr,
    "srfeat-npz": _srfeat,
    "sftgan-pytorch": _sftgan("pytorch"),
    "sftgan-torch": _sftgan("torch"),
    "outdoorsceneseg": _outdoorsceneseg,
    "fxsr": _fxsr,
    "basicsr-rrdbnet": _rrdb_basicsr,
    "esrgan-rrdbnet": _rrdb_trunk,
    "esrgan-rrdbnet-old": _rrdb_old,
}


@pytest.mark.parametrize("kind", list(CONVERTERS))
def test_every_converter_round_trips_a_tiny_file(kind: str, tmp_path: Path) -> None:
    """Write a tiny file in the converter's original layout and format, convert it (kind detected from the
    file), load the release and compare forwards. A converter added to the table without a case here fails."""
    assert kind in CASES, f"converter {kind!r} has no round-trip case in tests/test_convert.py CASES"
    case = CASES[kind](tmp_path)
    release = tmp_path / "release.safetensors"
    convert_file(case.source, release)
    assert read_release(release).metadata["converter"] == kind
    loaded = load_release(release)
    source, converted = getattr(case.net, case.method), getattr(loaded, case.method)
    with torch.no_grad():
        expected, got = source(case.lr, **case.inputs), converted(case.lr, **case.inputs)
        tolerance = assert_paths_close(got, expected, depth=network_depth(case.net), what=f"{kind} release")
        assert (expected - source(case.lr * 0.9, **case.inputs)).abs().max() > 10 * tolerance  # the input matters


def test_every_case_is_a_converter() -> None:
    assert set(CASES) <= set(CONVERTERS), f"cases without a converter: {sorted(set(CASES) - set(CONVERTERS))}"
