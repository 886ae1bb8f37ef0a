"""Foreign checkpoints -> release files.

One pure `state -> Converted` function per released layout, listed in the ordered CONVERTERS table. A file is
read without arbitrary pickles, `canonicalize`d once (wrappers and `module.` prefixes), matched by `detect`,
converted by explicit key pairs with count/shape checks, loaded strictly into the target arch as a final
check, and written with `release.save_release`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from perceptsr.errors import CheckpointError, InputError
from perceptsr.zoo.release import build, meta_state_dict, save_release
from perceptsr.zoo.weights import read_tensor_file


@dataclass
class Converted:
    """A converted checkpoint: what `release.save_release` needs."""

    arch: str
    config: Any
    state_dict: dict[str, Tensor]


@dataclass(frozen=True)
class Converter:
    """One released layout: `detect` looks at the keys only, `convert` checks everything else."""

    name: str
    description: str
    detect: Callable[[Mapping[str, Any]], bool]
    convert: Callable[[Mapping[str, Any]], Converted]


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """The top-level dict of a `.pth`/`.pt` (weights_only), `.safetensors` or `.npz` (no pickle) file.

    A TensorFlow checkpoint prefix (`Model/NatSR` beside `Model/NatSR.index`) is read with TensorFlow if installed.
    """
    from perceptsr.convert.natsr import is_tf_checkpoint, read_tf_checkpoint
    from perceptsr.convert.srfeat import read_npz

    if is_tf_checkpoint(path):
        return read_tf_checkpoint(path)
    if Path(path).suffix.lower() == ".npz":  # also unpacks tensorlayer's pickled array lists, safely
        return read_npz(path)
    obj = read_tensor_file(path)
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path} holds a {type(obj).__name__}, not a dict of tensors")
    return dict(obj)


def canonicalize(obj: Mapping[str, Any]) -> dict[str, Any]:
    """Unwrap `params_ema` (preferred) or `params` (BasicSR), else keep the dict; strip `module.` once."""
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"a checkpoint must be a dict, got {type(obj).__name__}")
    for wrapper in ("params_ema", "params"):
        inner = obj.get(wrapper)
        if isinstance(inner, Mapping):
            obj = inner
            break
    prefix = "module."
    return {(k[len(prefix) :] if str(k).startswith(prefix) else str(k)): v for k, v in obj.items()}


def remap(
    state: Mapping[str, Any], pairs: Sequence[tuple[str, str]], reference: Mapping[str, Tensor], what: str
) -> dict[str, Tensor]:
    """Rename by explicit (ours, theirs) key pairs, checking counts and shapes against `reference`.

    Every `reference` key must be paired exactly once (a converter bug otherwise); a missing source key, a
    wrong shape or an unused source key is a CheckpointError naming the first such key. Values take the
    reference's dtype (numpy arrays become tensors).
    """
    ours = [pair[0] for pair in pairs]
    if sorted(ours) != sorted(reference):
        raise RuntimeError(f"{what} converter does not pair exactly the target keys")
    result: dict[str, Tensor] = {}
    for our_key, their_key in pairs:
        if their_key not in state:
            raise CheckpointError(f"{what}: missing key {their_key!r}")
        value = state[their_key]
        if not isinstance(value, Tensor):
            try:
                value = torch.as_tensor(value)
            except (TypeError, ValueError, RuntimeError):
                raise CheckpointError(f"{what}: {their_key} is not a tensor") from None
        expected = tuple(reference[our_key].shape)
        if tuple(value.shape) != expected:
            raise CheckpointError(
                f"{what}: {their_key} has shape {list(value.shape)}, expected {list(expected)}"
            )
        if reference[our_key].is_floating_point() and not value.is_floating_point():
            raise CheckpointError(f"{what}: {their_key} holds {value.dtype} values where weights are floating point")
        result[our_key] = value.to(reference[our_key].dtype)
    used = {pair[1] for pair in pairs}
    unused = [key for key in state if key not in used]
    if unused:
        raise CheckpointError(f"{what}: unexpected key {unused[0]!r} ({len(unused)} key(s) not converted)")
    return result


def reference_state(module: Callable[[Any], torch.nn.Module], config: Any) -> dict[str, Tensor]:
    """The state_dict `module(config)` would have, built on the meta device: shapes and dtypes, no memory.

    A config inferred from a file's shapes may be absurd (a zero-size tensor claiming 200000 channels); nothing is
    allocated until `remap` has matched every shape against tensors that really hold data.
    """
    return meta_state_dict(lambda: module(config))


def check_finite(state: Mapping[str, Tensor], what: str) -> None:
    """Refuse NaN or infinite weights (a release must not carry them, and they only make NaN images)."""
    for key, value in state.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{what}: {key} holds NaN or infinite values; refusing to convert it")


def shape_of(state: Mapping[str, Any], key: str, what: str) -> tuple[int, ...]:
    """The shape of `state[key]`, or a CheckpointError naming the missing key."""
    if key not in state or not hasattr(state[key], "shape"):
        raise CheckpointError(f"{what}: missing key {key!r}")
    return tuple(state[key].shape)


def count_indexed(state: Mapping[str, Any], template: str) -> int:
    """How many consecutive i = 0, 1, ... have `template.format(i)` in `state` (e.g. blocks of a trunk)."""
    count = 0
    while template.format(count) in state:
        count += 1
    return count


# Converter modules import the helpers above, so they are imported after them.
from perceptsr.convert import basicsr, fxsr, natsr, rrdb, sftgan, srfeat  # noqa: E402

CONVERTERS: dict[str, Converter] = {
    "basicsr-msrresnet": Converter(
        name="basicsr-msrresnet",
        description="BasicSR v1 MSRResNet (conv_first, body.N.conv1/2, upconv1/2, conv_hr, conv_last)",
        detect=basicsr.is_msrresnet_v1,
        convert=basicsr.convert_msrresnet_v1,
    ),
    "basicsr-msrresnet-v0": Converter(
        name="basicsr-msrresnet-v0",
        description="BasicSR v0.x MSRResNet (conv_first, recon_trunk.N.conv1/2, upconv1/2, HRconv)",
        detect=basicsr.is_msrresnet_v0,
        convert=basicsr.convert_msrresnet_v0,
    ),
    "basicsr-srresnet-old": Converter(
        name="basicsr-srresnet-old",
        description="BasicSR-old noBN SRResNet, e.g. SRGAN_bicx4_noBN_DIV2K.pth (model.1.sub.N.res.0/2)",
        detect=basicsr.is_srresnet_old,
        convert=basicsr.convert_srresnet_old,
    ),
    "natsr-tf": Converter(
        name="natsr-tf",
        description="NatSR / FRSR / FRSR_x2 / FRSR_x3 TensorFlow checkpoints (GEN/...): TF prefix or .npz name->array",
        detect=natsr.is_natsr_tf,
        convert=natsr.convert_frsr_tf,
    ),
    "srfeat-npz": Converter(
        name="srfeat-npz",
        description="SRFeat TensorFlow release SRFeat_full.npz / SRFeat_init.npz (tensorlayer params list of 183)",
        detect=srfeat.is_srfeat_npz,
        convert=srfeat.convert_srfeat_npz,
    ),
    "sftgan-pytorch": Converter(
        name="sftgan-pytorch",
        description="SFTGAN PyTorch release SFTGAN_noBN_OST_bg.pth (CondNet, sft_branch, HR_branch.0/3 sub-pixel)",
        detect=sftgan.is_sftgan_pytorch,
        convert=sftgan.convert_sftgan_pytorch,
    ),
    "sftgan-torch": Converter(
        name="sftgan-torch",
        description="SFTGAN paper model SFTGAN_torch.pth (CondNet, sft_branch, HR_branch.1/4 nearest upsampling)",
        detect=sftgan.is_sftgan_torch,
        convert=sftgan.convert_sftgan_torch,
    ),
    "outdoorsceneseg": Converter(
        name="outdoorsceneseg",
        description="SFTGAN's segmentation prior segmentation_OST_bic.pth (feature.N, deconv) for --seg-model",
        detect=sftgan.is_outdoorsceneseg,
        convert=sftgan.convert_outdoorsceneseg,
    ),
    "fxsr": Converter(
        name="fxsr",
        description="FxSR-PD/DS-4x/8x.pth (RRDB_trunk.N.RDBk.sftM..., CondNet), strict",
        detect=fxsr.is_fxsr,
        convert=fxsr.convert_fxsr,
    ),
    "basicsr-rrdbnet": Converter(
        name="basicsr-rrdbnet",
        description="BasicSR v1 / Real-ESRGAN RRDBNet (body.N.rdbK.convM, conv_body, conv_up1/2), x1/x2/x4/x8",
        detect=rrdb.is_basicsr,
        convert=rrdb.convert_basicsr,
    ),
    "esrgan-rrdbnet": Converter(
        name="esrgan-rrdbnet",
        description="ESRGAN RRDBNet, e.g. RRDB_ESRGAN_x4.pth / RRDB_PSNR_x4.pth (RRDB_trunk.N.RDBk, trunk_conv)",
        detect=rrdb.is_trunk,
        convert=rrdb.convert_trunk,
    ),
    "esrgan-rrdbnet-old": Converter(
        name="esrgan-rrdbnet-old",
        description="original ESRGAN release / old-arch community models (model.1.sub.N.RDBk.convM.0)",
        detect=rrdb.is_old,
        convert=rrdb.convert_old,
    ),
}


def detect(state: Mapping[str, Any]) -> str:
    """The name of the first converter recognising the (canonicalized) `state`."""
    for name, converter in CONVERTERS.items():
        if converter.detect(state):
            return name
    first = ", ".join(list(state)[:3]) or "no keys"
    raise CheckpointError(
        f"unrecognised checkpoint layout (keys start {first}); known kinds: {', '.join(CONVERTERS)}"
    )


def convert_state(state: Mapping[str, Any], *, kind: str | None = None) -> Converted:
    """Convert a canonicalized state with converter `kind` (detected when None); checked by a strict load."""
    if kind is None:
        kind = detect(state)
    elif kind not in CONVERTERS:
        raise InputError(f"unknown checkpoint kind {kind!r}; known kinds: {', '.join(CONVERTERS)}")
    converted = CONVERTERS[kind].convert(state)
    check_finite(converted.state_dict, kind)
    model = build(converted.arch, converted.config)  # ARCHS or PRIORS (the segmentation prior)
    try:
        model.load_state_dict(converted.state_dict, strict=True)
    except RuntimeError as error:
        raise RuntimeError(f"{kind} converter produced weights that do not fit {converted.arch}") from error
    return converted


def convert_file(
    src: str | Path, dst: str | Path, *, kind: str | None = None, overwrite: bool = False
) -> Converted:
    """Read a foreign checkpoint `src`, convert it (kind detected when None) and write release file `dst`."""
    state = canonicalize(read_checkpoint(src))
    kind = kind or detect(state)
    converted = convert_state(state, kind=kind)
    save_release(
        dst,
        arch=converted.arch,
        config=converted.config,
        state_dict=converted.state_dict,
        extra={"converted_from": Path(src).name, "converter": kind},
        overwrite=overwrite,
    )
    return converted
