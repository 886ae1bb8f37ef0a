"""The released FxSR generators (`FxSR-PD-4x.pth`, `FxSR-PD-8x.pth`, `FxSR-DS-4x.pth`, `FxSR-DS-8x.pth`;
methods.md §4.6) -> `fxsr` releases, strictly.

Raw state_dicts (a `module.` prefix is stripped by `canonicalize`) in the RRDB_trunk layout plus
RRDB_trunk.{i}.RDB{j}.sft{0..4}.SFT_{scale,shift}_conv{0,1} and CondNet.{0,2}: 3466 tensors at x4, 3468 at x8
(upconv3). The original loader silently loaded non-strictly; here every tensor must be present, have its
shape, and be used.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perceptsr.archs.fxsr import FxSRNet, FxSRNetConfig
from perceptsr.convert import Converted, count_indexed, reference_state, remap, shape_of
from perceptsr.convert.rrdb import body_pairs, infer_sizes, params
from perceptsr.errors import CheckpointError

WHAT = "FxSR RRDBNet"
SFT_CONVS = ("SFT_scale_conv0", "SFT_scale_conv1", "SFT_shift_conv0", "SFT_shift_conv1")


def is_fxsr(state: Mapping[str, Any]) -> bool:
    return "RRDB_trunk.0.RDB1.sft0.SFT_scale_conv0.weight" in state and "CondNet.0.weight" in state


def convert_fxsr(state: Mapping[str, Any]) -> Converted:
    num_feat, num_grow_ch, in_ch = infer_sizes(state, "conv_first.weight", "RRDB_trunk.0.RDB1.conv1.weight",
                                               "conv_last.weight", WHAT)
    if in_ch != 3:
        raise CheckpointError(f"{WHAT}: conv_first takes {in_ch} channels; FxSR's takes 3")
    num_block = count_indexed(state, "RRDB_trunk.{}.RDB1.conv1.weight")
    scale = 8 if "upconv3.weight" in state else 4
    cond = shape_of(state, "CondNet.2.weight", WHAT)
    config = FxSRNetConfig(scale=scale, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch,
                           cond_feat=cond[0])
    pairs = params("conv_first", "conv_first")
    pairs += body_pairs(num_block, lambda i, j, k: f"RRDB_trunk.{i}.RDB{j}.conv{k}")
    for i in range(num_block):
        for j in (1, 2, 3):
            for k in range(5):
                for conv in SFT_CONVS:
                    pairs += params(f"body.{i}.rdb{j}.sft{k}.{conv}", f"RRDB_trunk.{i}.RDB{j}.sft{k}.{conv}")
    pairs += params("conv_body", "trunk_conv")
    for stage in range(1, 4 if scale == 8 else 3):
        pairs += params(f"conv_up{stage}", f"upconv{stage}")
    pairs += params("conv_hr", "HRconv") + params("conv_last", "conv_last")
    pairs += params("cond_net.0", "CondNet.0") + params("cond_net.2", "CondNet.2")
    return Converted("fxsr", config, remap(state, pairs, reference_state(FxSRNet, config), WHAT))
