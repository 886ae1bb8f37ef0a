"""RRDBNet / ESRGAN checkpoints (methods.md §0.6) -> `rrdb` releases, in the three key layouts users hold.

- BasicSR v1 (`params` / `params_ema`, unwrapped by `canonicalize`): conv_first, body.{i}.rdb{j}.conv{k},
  conv_body, conv_up1/2, conv_hr, conv_last — our own names. x2/x1 pixel-unshuffle the input, so conv_first
  takes 12/48 channels (Real-ESRGAN's x2 models too).
- xinntao/ESRGAN after 2019, BSR-old, FxSR's trunk: conv_first, RRDB_trunk.{i}.RDB{j}.conv{k}, trunk_conv,
  upconv1/2(/3), HRconv, conv_last (renames as BasicSR's `convert_esrgan_model`).
- The original ESRGAN release (`architecture.RRDBNet`, flattened by `B.sequential`): model.0 (first conv),
  model.1.sub.{i}.RDB{j}.conv{k}.0 (each conv wrapped with its activation), model.1.sub.{nb} (trunk conv), then
  per upsampling stage [Upsample, conv, act] at model.{2+3s}.., so stage convs sit at model.3, model.6, ...;
  HR conv at model.{2+3n}, last conv at model.{4+3n} (xinntao/ESRGAN:transer_RRDB_models.py for n = 2).
  Its x1/x2 files have 0/1 stages and no pixel-unshuffle. A one-stage file is read as x2: the original code's
  rare x3 variant (one nearest x3 stage) cannot be told apart by its weights.
Hyperparameters are inferred from tensor shapes; renames are explicit key pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from perceptsr.archs.rrdb import RRDBNet, RRDBNetConfig
from perceptsr.convert import Converted, count_indexed, reference_state, remap, shape_of
from perceptsr.errors import CheckpointError

V1 = "BasicSR RRDBNet"
TRUNK = "ESRGAN RRDBNet (RRDB_trunk)"
OLD = "original ESRGAN RRDBNet (model.N)"

Pairs = list[tuple[str, str]]


def params(ours: str, theirs: str) -> Pairs:
    return [(f"{ours}.weight", f"{theirs}.weight"), (f"{ours}.bias", f"{theirs}.bias")]


def body_pairs(num_block: int, block: Callable[[int, int, int], str]) -> Pairs:
    """Pairs for every dense-block conv; `block(i, j, k)` names conv k of dense block j of RRDB i (theirs)."""
    pairs: Pairs = []
    for i in range(num_block):
        for j in (1, 2, 3):
            for k in range(1, 6):
                pairs += params(f"body.{i}.rdb{j}.conv{k}", block(i, j, k))
    return pairs


def infer_sizes(state: Mapping[str, Any], first: str, grow: str, last: str, what: str) -> tuple[int, int, int]:
    """(num_feat, num_grow_ch, input channels of conv_first) from the first, a growth and the last conv."""
    head = shape_of(state, first, what)
    if len(head) != 4 or head[1] not in (3, 12, 48):
        raise CheckpointError(
            f"{what}: {first} has shape {list(head)}; only RGB models are supported (3, or 12/48 after unshuffle)"
        )
    tail = shape_of(state, last, what)
    if len(tail) != 4 or tail[0] != 3:
        raise CheckpointError(f"{what}: {last} has shape {list(tail)}; only 3-channel (RGB) output is supported")
    return head[0], shape_of(state, grow, what)[0], head[1]


def _scale(in_channels: int, stages: int, what: str) -> int:
    """Scale from conv_first's input channels (3 / 12 / 48) and the nearest-x2 stages (2, or 3 for x8)."""
    scale = {3: 4, 12: 2, 48: 1}[in_channels]
    if stages == 3 and in_channels == 3:
        return 8
    if stages != 2:
        raise CheckpointError(f"{what}: found {stages} upsampling convs with {in_channels} input channels")
    return scale


def _named(state: Mapping[str, Any], what: str, *, trunk: str, rdb: str, body_conv: str, up: str, hr: str) -> Converted:
    """The two named layouts (BasicSR v1 and RRDB_trunk) differ only by these names."""
    num_feat, num_grow_ch, in_ch = infer_sizes(state, "conv_first.weight", f"{trunk}.0.{rdb}1.conv1.weight",
                                               "conv_last.weight", what)
    num_block = count_indexed(state, trunk + ".{}." + rdb + "1.conv1.weight")
    stages = 0
    while f"{up}{stages + 1}.weight" in state:
        stages += 1
    config = RRDBNetConfig(scale=_scale(in_ch, stages, what), num_feat=num_feat, num_block=num_block,
                           num_grow_ch=num_grow_ch)
    pairs = params("conv_first", "conv_first")
    pairs += body_pairs(num_block, lambda i, j, k: f"{trunk}.{i}.{rdb}{j}.conv{k}")
    pairs += params("conv_body", body_conv)
    for stage in range(1, stages + 1):
        pairs += params(f"conv_up{stage}", f"{up}{stage}")
    pairs += params("conv_hr", hr) + params("conv_last", "conv_last")
    return Converted("rrdb", config, remap(state, pairs, reference_state(RRDBNet, config), what))


def is_basicsr(state: Mapping[str, Any]) -> bool:
    return "body.0.rdb1.conv1.weight" in state and "conv_body.weight" in state and \
        "body.0.rdb1.sft0.SFT_scale_conv0.weight" not in state


def convert_basicsr(state: Mapping[str, Any]) -> Converted:
    return _named(state, V1, trunk="body", rdb="rdb", body_conv="conv_body", up="conv_up", hr="conv_hr")


def is_trunk(state: Mapping[str, Any]) -> bool:
    return "RRDB_trunk.0.RDB1.conv1.weight" in state and "trunk_conv.weight" in state and \
        "RRDB_trunk.0.RDB1.sft0.SFT_scale_conv0.weight" not in state


def convert_trunk(state: Mapping[str, Any]) -> Converted:
    return _named(state, TRUNK, trunk="RRDB_trunk", rdb="RDB", body_conv="trunk_conv", up="upconv", hr="HRconv")


def is_old(state: Mapping[str, Any]) -> bool:
    return "model.0.weight" in state and "model.1.sub.0.RDB1.conv1.0.weight" in state


def convert_old(state: Mapping[str, Any]) -> Converted:
    what = OLD
    num_block = count_indexed(state, "model.1.sub.{}.RDB1.conv1.0.weight")
    stages = 0
    while f"model.{3 + 3 * stages}.weight" in state:
        stages += 1
    hr, last = 2 + 3 * stages, 4 + 3 * stages
    num_feat, num_grow_ch, in_ch = infer_sizes(state, "model.0.weight", "model.1.sub.0.RDB1.conv1.0.weight",
                                               f"model.{last}.weight", what)
    if in_ch != 3 or stages > 3:
        raise CheckpointError(f"{what}: {in_ch} input channels and {stages} upsampling stages are not supported")
    config = RRDBNetConfig(scale=2**stages, num_feat=num_feat, num_block=num_block, num_grow_ch=num_grow_ch,
                           unshuffle=stages >= 2)  # x4/x8 never unshuffle; the flag only matters below x4
    pairs = params("conv_first", "model.0")
    pairs += body_pairs(num_block, lambda i, j, k: f"model.1.sub.{i}.RDB{j}.conv{k}.0")
    pairs += params("conv_body", f"model.1.sub.{num_block}")
    for stage in range(1, stages + 1):
        pairs += params(f"conv_up{stage}", f"model.{3 * stage}")
    pairs += params("conv_hr", f"model.{hr}") + params("conv_last", f"model.{last}")
    return Converted("rrdb", config, remap(state, pairs, reference_state(RRDBNet, config), what))
