"""SFTGAN releases (methods.md §3.5) -> `sftgan` and `outdoorsceneseg` release files.

- `SFTGAN_noBN_OST_bg.pth` (PyTorch form: `HR_branch.0/3` are 256-channel sub-pixel convs) and
  `SFTGAN_torch.pth` (paper form: `HR_branch.1/4` are 64-channel convs after nearest upsampling). Both are raw
  state dicts with conv0, sft_branch.{0..15}.{sft0,conv0,sft1,conv1}, sft_branch.16 (SFT), sft_branch.17
  (conv), HR_branch and CondNet.{0,2,4,6,8}.
- `segmentation_OST_bic.pth` (OutdoorSceneSeg): feature.{0..47} (`block.sequential` flattening) and deconv.
  Saved by PyTorch 0.4.0, it may lack the BatchNorm `num_batches_tracked` counters; they are added as 0.
Our modules use the released parameter names, so the key pairs are identities; hyperparameters (widths,
block counts, classes) come from the shapes and every shape is checked against the rebuilt network.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from perceptsr.archs.outdoorseg import OutdoorSceneSeg, OutdoorSceneSegConfig
from perceptsr.archs.sftgan import SFTNet, SFTNetConfig
from perceptsr.convert import Converted, count_indexed, reference_state, remap, shape_of
from perceptsr.errors import CheckpointError

PYTORCH = "SFTGAN (PyTorch, SFTGAN_noBN_OST_bg)"
TORCH = "SFTGAN (paper/Torch, SFTGAN_torch)"
SEG = "OutdoorSceneSeg (segmentation_OST_bic)"
_SFT_KEY = "sft_branch.0.sft0.SFT_scale_conv0.weight"


def _reference(module: type, config: Any) -> dict[str, Tensor]:
    """The target's state dict on the meta device: names, shapes and dtypes without allocating weights."""
    return reference_state(module, config)


def _identity(reference: Mapping[str, Tensor]) -> list[tuple[str, str]]:
    return [(key, key) for key in reference]


def is_sftgan_pytorch(state: Mapping[str, Any]) -> bool:
    return all(k in state for k in ("CondNet.0.weight", _SFT_KEY, "HR_branch.0.weight"))


def is_sftgan_torch(state: Mapping[str, Any]) -> bool:
    return all(k in state for k in ("CondNet.0.weight", _SFT_KEY, "HR_branch.1.weight")) and (
        "HR_branch.0.weight" not in state
    )


def _convert_sftgan(state: Mapping[str, Any], form: str, what: str) -> Converted:
    head = shape_of(state, "conv0.weight", what)
    if len(head) != 4 or head[1] != 3:
        raise CheckpointError(f"{what}: conv0.weight has shape {list(head)}; expected an RGB input conv")
    cond = shape_of(state, "CondNet.0.weight", what)
    if len(cond) != 4 or cond[2:] != (4, 4):
        raise CheckpointError(f"{what}: CondNet.0.weight has shape {list(cond)}; expected a 4x4 (x4) conv")
    config = SFTNetConfig(
        scale=4,
        form=form,
        num_feat=head[0],
        num_block=count_indexed(state, "sft_branch.{}.sft0.SFT_scale_conv0.weight"),
        num_classes=cond[1],
        cond_feat=shape_of(state, "CondNet.8.weight", what)[0],
        cond_hidden=cond[0],
    )
    reference = _reference(SFTNet, config)
    return Converted("sftgan", config, remap(state, _identity(reference), reference, what))


def convert_sftgan_pytorch(state: Mapping[str, Any]) -> Converted:
    return _convert_sftgan(state, "pytorch", PYTORCH)


def convert_sftgan_torch(state: Mapping[str, Any]) -> Converted:
    return _convert_sftgan(state, "torch", TORCH)


def is_outdoorsceneseg(state: Mapping[str, Any]) -> bool:
    return all(k in state for k in ("feature.0.weight", "feature.10.res.0.weight", "deconv.weight"))


def convert_outdoorsceneseg(state: Mapping[str, Any]) -> Converted:
    what = SEG
    width = shape_of(state, "feature.0.weight", what)[0]
    # Bottlenecks sit at feature.10, 11, ...; a projection shortcut opens each of the four stages.
    first, index, starts = 10, 10, []
    while f"feature.{index}.res.0.weight" in state:
        if f"feature.{index}.proj.0.weight" in state:
            starts.append(index)
        index += 1
    if len(starts) != 4 or starts[0] != first:
        raise CheckpointError(f"{what}: expected 4 stages of bottlenecks from feature.10 (projections at "
                              f"the start of each), found projections at {starts}")
    blocks = tuple(b - a for a, b in zip(starts, [*starts[1:], index], strict=True))
    last = shape_of(state, f"feature.{index + 4}.weight", what)
    config = OutdoorSceneSegConfig(num_classes=last[0], blocks=blocks, width=width)
    reference = _reference(OutdoorSceneSeg, config)
    state = dict(state)
    for key in reference:
        if key.endswith(".num_batches_tracked") and key not in state:  # PyTorch 0.4.0 files have none
            state[key] = torch.zeros((), dtype=torch.int64)
    return Converted("outdoorsceneseg", config, remap(state, _identity(reference), reference, what))
