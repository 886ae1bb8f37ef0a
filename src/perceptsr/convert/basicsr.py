"""BasicSR SRResNet-family checkpoints (methods.md §1.4) -> `msrresnet` / `srresnet` releases.

Layouts:
- v1 MSRResNet (`params`): conv_first, body.{i}.conv1/2, upconv1, upconv2 (x4 only), conv_hr, conv_last —
  our MSRResNet's own names.
- v0.x MSRResNet: the same network as recon_trunk.{i}.conv1/2 and HRconv
  (`BSR-old:codes/models/modules/SRResNet_arch.py`).
- BasicSR-old `SRResNet` (noBN, pixel shuffle; `SRGAN_bicx4_noBN_DIV2K.pth`, the 2018 `MSRResNetx4`): a
  *different* network from MSRResNet — no activation after the first conv, an LR conv closing a long skip over
  the residual blocks, ReLU everywhere, no bilinear skip. Read from `BSR@1628434^:codes/models/modules/
  architecture.py` `SRResNet` (mode CNA, act relu, upsample_mode pixelshuffle, `B.sequential` flattening):
  model.0 head conv; model.1.sub.{i}.res.{0,2} block convs (`.1` is the ReLU); model.1.sub.{nb} LR conv;
  per upsampling stage model.{2+3j} conv (then PixelShuffle, ReLU); then HR conv + ReLU and the last conv.
  It becomes our `srresnet` arch with the config values that describe it.
Hyperparameters are inferred from tensor shapes; renames are explicit key pairs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perceptsr.archs.srresnet import MSRResNet, MSRResNetConfig, SRResNet, SRResNetConfig
from perceptsr.convert import Converted, count_indexed, reference_state, remap, shape_of
from perceptsr.errors import CheckpointError

V1 = "BasicSR MSRResNet"
V0 = "BasicSR v0.x MSRResNet"
OLD = "BasicSR-old SRResNet"


def _params(prefix_ours: str, prefix_theirs: str) -> list[tuple[str, str]]:
    return [
        (f"{prefix_ours}.weight", f"{prefix_theirs}.weight"),
        (f"{prefix_ours}.bias", f"{prefix_theirs}.bias"),
    ]


def _rgb_head(state: Mapping[str, Any], key: str, what: str) -> tuple[int, ...]:
    shape = shape_of(state, key, what)
    if len(shape) != 4 or shape[1] != 3:
        raise CheckpointError(
            f"{what}: {key} has shape {list(shape)}; only 3-channel (RGB) models are supported"
        )
    return shape


def _rgb_tail(state: Mapping[str, Any], key: str, what: str) -> tuple[int, ...]:
    shape = shape_of(state, key, what)
    if len(shape) != 4 or shape[0] != 3:
        raise CheckpointError(
            f"{what}: {key} has shape {list(shape)}; only 3-channel (RGB) models are supported"
        )
    return shape


# --- MSRResNet, v1 and v0.x -------------------------------------------------------------------------------


def is_msrresnet_v1(state: Mapping[str, Any]) -> bool:
    return all(
        k in state for k in ("conv_first.weight", "body.0.conv1.weight", "upconv1.weight", "conv_hr.weight")
    )


def is_msrresnet_v0(state: Mapping[str, Any]) -> bool:
    return all(
        k in state
        for k in ("conv_first.weight", "recon_trunk.0.conv1.weight", "upconv1.weight", "HRconv.weight")
    )


def _msrresnet(state: Mapping[str, Any], trunk: str, hr: str, what: str) -> Converted:
    num_feat = _rgb_head(state, "conv_first.weight", what)[0]
    num_block = count_indexed(state, trunk + ".{}.conv1.weight")
    up = shape_of(state, "upconv1.weight", what)[0]
    if "upconv2.weight" in state:
        scale = 4
    elif up in (4 * num_feat, 9 * num_feat):
        scale = 2 if up == 4 * num_feat else 3
    else:
        raise CheckpointError(
            f"{what}: upconv1.weight has {up} output channels; expected {4 * num_feat} (x2, x4) "
            f"or {9 * num_feat} (x3)"
        )
    _rgb_tail(state, "conv_last.weight", what)
    config = MSRResNetConfig(scale=scale, num_feat=num_feat, num_block=num_block)
    pairs = _params("conv_first", "conv_first")
    for i in range(num_block):
        pairs += _params(f"body.{i}.conv1", f"{trunk}.{i}.conv1") + _params(
            f"body.{i}.conv2", f"{trunk}.{i}.conv2"
        )
    pairs += _params("upconv1", "upconv1")
    if scale == 4:
        pairs += _params("upconv2", "upconv2")
    pairs += _params("conv_hr", hr) + _params("conv_last", "conv_last")
    reference = reference_state(MSRResNet, config)
    return Converted("msrresnet", config, remap(state, pairs, reference, what))


def convert_msrresnet_v1(state: Mapping[str, Any]) -> Converted:
    return _msrresnet(state, "body", "conv_hr", V1)


def convert_msrresnet_v0(state: Mapping[str, Any]) -> Converted:
    return _msrresnet(state, "recon_trunk", "HRconv", V0)


# --- BasicSR-old SRResNet (noBN) -> srresnet ----------------------------------------------------------------


def is_srresnet_old(state: Mapping[str, Any]) -> bool:
    return "model.0.weight" in state and "model.1.sub.0.res.0.weight" in state


def convert_srresnet_old(state: Mapping[str, Any]) -> Converted:
    what = OLD
    if "model.1.sub.0.res.1.weight" in state:
        raise CheckpointError(
            f"{what}: this checkpoint has batch norm in its residual blocks "
            "(model.1.sub.0.res.1.*); only the noBN variant is supported"
        )
    head = _rgb_head(state, "model.0.weight", what)
    num_feat = head[0]
    num_block = count_indexed(state, "model.1.sub.{}.res.0.weight")
    # Upsampling stages are [conv, PixelShuffle, ReLU] at model.2, model.5, ...; a conv with 4·nf outputs is
    # an x2 stage, one with 9·nf the single x3 stage. The HR conv (nf outputs) ends the run.
    factors: list[int] = []
    index = 2
    while f"model.{index}.weight" in state:
        out = shape_of(state, f"model.{index}.weight", what)[0]
        if out == 4 * num_feat and 3 not in factors:
            factors.append(2)
        elif out == 9 * num_feat and not factors:
            factors.append(3)
        else:
            break
        index += 3
    scale = 1
    for factor in factors:
        scale *= factor
    if scale not in (2, 3, 4, 8):
        raise CheckpointError(f"{what}: found upsampling x{scale} from model.2 on; supported: x2, x3, x4, x8")
    hr_index, last_index = index, index + 2
    last = _rgb_tail(state, f"model.{last_index}.weight", what)
    config = SRResNetConfig(
        scale=scale,
        num_feat=num_feat,
        num_block=num_block,
        batch_norm=False,
        activation="relu",
        head_kernel=head[2],
        head_activation=False,
        hr_conv=True,
        last_kernel=last[2],
        output_range="unit",
    )
    pairs = _params("conv_first", "model.0")
    for i in range(num_block):
        pairs += _params(f"body.{i}.conv1", f"model.1.sub.{i}.res.0")
        pairs += _params(f"body.{i}.conv2", f"model.1.sub.{i}.res.2")
    pairs += _params("conv_body", f"model.1.sub.{num_block}")
    for stage in range(len(factors)):
        pairs += _params(f"upsampler.{3 * stage}", f"model.{2 + 3 * stage}")
    pairs += _params("conv_hr", f"model.{hr_index}") + _params("conv_last", f"model.{last_index}")
    reference = reference_state(SRResNet, config)
    return Converted("srresnet", config, remap(state, pairs, reference, what))
