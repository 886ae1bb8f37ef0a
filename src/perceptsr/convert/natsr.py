"""NatSR's TensorFlow checkpoints (methods.md §5.7) -> `frsr` releases and NMD classifier weights.

FRSR, FRSR_x2, FRSR_x3 and NatSR hold the generator only (scope GEN, identical keys for FRSR and NatSR), so all
four become arch `frsr`. NMD holds the classifier (scope CLASSIFIER) plus Adam slots and its curriculum's final
`alpha` and `noise_sigma`: it becomes NMD weights for `natsr` training (`model.nmd_init`), not a release.
The input is a mapping name -> array: an .npz of name -> array, or a TF checkpoint prefix read with
`tf.train.load_checkpoint` when TensorFlow is installed. Conversion needs numpy only (§0.4):
kernels HWIO -> OIHW, and the output channels of `conv_up*` reordered from depth_to_space to pixel-shuffle order.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from perceptsr.archs.natsr import FRSR, NMD, FRSRConfig, NMDConfig
from perceptsr.convert import Converted, count_indexed, reference_state, remap, shape_of
from perceptsr.errors import CheckpointError, ConfigError, InputError

WHAT = "NatSR/FRSR TensorFlow checkpoint"
NMD_WHAT = "NatSR NMD TensorFlow checkpoint"
# Training bookkeeping that a TF checkpoint may carry beside the weights.
BOOKKEEPING = ("global_step", "beta1_power", "beta2_power", "alpha", "noise_sigma")


def is_tf_checkpoint(path: str | Path) -> bool:
    """A TF checkpoint is named by its prefix (`Model/FRSR` for `Model/FRSR.index` + `.data-*`)."""
    text = str(path)
    return text.endswith(".index") or Path(text + ".index").is_file()


def read_tf_checkpoint(path: str | Path) -> dict[str, np.ndarray]:
    """Every variable of a TF checkpoint (prefix, or its `.index` file) as name -> numpy array."""
    prefix = str(path)[: -len(".index")] if str(path).endswith(".index") else str(path)
    try:
        import tensorflow as tf
    except ImportError:
        raise InputError(
            f"{prefix} is a TensorFlow checkpoint: install tensorflow-cpu to read TF checkpoints, or pass an "
            ".npz of name→array"
        ) from None
    try:
        reader = tf.train.load_checkpoint(prefix)
        names = reader.get_variable_to_shape_map()
        return {name: np.asarray(reader.get_tensor(name)) for name in names}
    except (ValueError, OSError, tf.errors.OpError) as error:
        raise CheckpointError(f"{prefix} is not a readable TF checkpoint ({str(error).splitlines()[0]})") from None


def _weights(state: Mapping[str, Any], scope: str) -> dict[str, Any]:
    """The scope's variables without optimizer slots; other scopes and bookkeeping are dropped, the rest kept."""
    kept = {}
    for key, value in state.items():
        if key in BOOKKEEPING or key.endswith(("/Adam", "/Adam_1")):
            continue
        if key.startswith(("GEN/", "DIS/", "CLASSIFIER/")) and not key.startswith(scope):
            continue
        kept[key] = value
    return kept


def _to_torch_layout(state: Mapping[str, Any], what: str) -> dict[str, Tensor]:
    """Kernels HWIO -> OIHW; biases unchanged."""
    out = {}
    for key, value in state.items():
        tensor = torch.as_tensor(np.asarray(value))
        if key.endswith("/kernel"):
            if tensor.ndim != 4:
                raise CheckpointError(f"{what}: {key} has shape {list(tensor.shape)}, expected a 4-D HWIO kernel")
            tensor = tensor.permute(3, 2, 0, 1)
        out[key] = tensor.contiguous()
    return out


def depth_to_space_to_pixel_shuffle(tensor: Tensor, factor: int) -> Tensor:
    """Reorder output channels (dim 0) so PixelShuffle(r) reads what tf.depth_to_space(r) read.

    TF takes output (c, i, j) from channel (i·r + j)·C + c, PyTorch from c·r² + i·r + j: view as (r², C, ...),
    swap the first two axes, flatten. Works for OIHW kernels and for biases.
    """
    groups = factor * factor
    if tensor.shape[0] % groups:
        raise CheckpointError(f"{WHAT}: {tensor.shape[0]} upsampler channels are not a multiple of {groups}")
    rest = tensor.shape[1:]
    return tensor.reshape(groups, -1, *rest).transpose(0, 1).reshape(tensor.shape[0], *rest).contiguous()


def _conv_pairs(ours: str, theirs: str) -> list[tuple[str, str]]:
    return [(f"{ours}.weight", f"{theirs}/conv2d/kernel"), (f"{ours}.bias", f"{theirs}/conv2d/bias")]


def is_natsr_tf(state: Mapping[str, Any]) -> bool:
    return "GEN/conv1/conv2d/kernel" in state or "CLASSIFIER/conv1_1/conv2d/kernel" in state


def convert_frsr_tf(state: Mapping[str, Any]) -> Converted:
    """FRSR / FRSR_x2 / FRSR_x3 / NatSR (scope GEN) -> arch `frsr`; hyperparameters from the shapes."""
    if "GEN/conv1/conv2d/kernel" not in state:
        raise CheckpointError(
            f"{NMD_WHAT}: this is the NMD classifier, not a generator; use it for training as "
            "model.nmd_init: PATH in a natsr config"
        )
    state = _weights(state, "GEN/")
    head = shape_of(state, "GEN/conv1/conv2d/kernel", WHAT)
    if len(head) != 4 or head[2] != 3:
        raise CheckpointError(f"{WHAT}: GEN/conv1/conv2d/kernel has shape {list(head)}; expected [3,3,3,C]")
    num_feat = head[3]
    num_block = count_indexed(state, "GEN/Block{}/conv0/conv2d/kernel")
    num_layer = count_indexed(state, "GEN/Block0/conv{}/conv2d/kernel")
    up1 = shape_of(state, "GEN/conv_up1/conv2d/kernel", WHAT)
    if "GEN/conv_up2/conv2d/kernel" in state:
        scale = 4
    else:
        scale = next((s for s in (2, 3) if up1[-1] == num_feat * s * s), 0)
        if not scale:
            raise CheckpointError(f"{WHAT}: conv_up1 has {up1[-1]} outputs, not 4 or 9 × {num_feat} (×2 / ×3)")
    try:
        config = FRSRConfig(scale=scale, num_feat=num_feat, num_block=num_block, num_layer=num_layer)
    except ConfigError as error:  # e.g. a block count that is not a multiple of 4
        raise CheckpointError(f"{WHAT}: unsupported shape ({error})") from None
    pairs = _conv_pairs("conv1", "GEN/conv1")
    for b in range(num_block):
        for k in range(num_layer):
            pairs += _conv_pairs(f"blocks.{b}.convs.{k}", f"GEN/Block{b}/conv{k}")
        pairs += _conv_pairs(f"blocks.{b}.conv_fusion", f"GEN/Block{b}/conv_fusion")
    pairs += _conv_pairs("conv2", "GEN/conv2") + _conv_pairs("conv_up1", "GEN/conv_up1")
    if scale == 4:
        pairs += _conv_pairs("conv_up2", "GEN/conv_up2")
    pairs += _conv_pairs("conv_out", "GEN/conv_out")
    torch_state = _to_torch_layout(state, WHAT)
    factor = 2 if scale == 4 else scale
    for key in [k for k in torch_state if k.startswith(("GEN/conv_up1/", "GEN/conv_up2/"))]:
        torch_state[key] = depth_to_space_to_pixel_shuffle(torch_state[key], factor)
    reference = reference_state(FRSR, config)
    return Converted(arch="frsr", config=config, state_dict=remap(torch_state, pairs, reference, WHAT))


def convert_nmd_tf(state: Mapping[str, Any]) -> tuple[NMDConfig, dict[str, Tensor], dict[str, float]]:
    """NMD (scope CLASSIFIER) -> (NMDConfig, NMD state_dict, {"alpha", "noise_sigma"} when the file has them)."""
    extras = {k: float(np.asarray(state[k])) for k in ("alpha", "noise_sigma") if k in state}
    weights = _weights(state, "CLASSIFIER/")
    head = shape_of(weights, "CLASSIFIER/conv1_1/conv2d/kernel", NMD_WHAT)
    if len(head) != 4 or head[2] != 3:
        raise CheckpointError(f"{NMD_WHAT}: conv1_1 kernel has shape {list(head)}; expected [3,3,3,C]")
    config = NMDConfig(num_feat=head[3])
    names = [f"conv{stage}_{k}" for stage in range(1, 5) for k in (1, 2)] + ["conv5_1"]
    pairs = [pair for name in names for pair in _conv_pairs(name, f"CLASSIFIER/{name}")]
    reference = reference_state(NMD, config)
    return config, remap(_to_torch_layout(weights, NMD_WHAT), pairs, reference, NMD_WHAT), extras


def load_nmd_state(source: str | Path) -> dict[str, Tensor]:
    """NMD weights (our key names) from a natsr run directory, a TF/npz NMD checkpoint, or a state-dict file."""
    from perceptsr.convert import read_checkpoint

    path = Path(source)
    if path.is_dir():
        from perceptsr.engine.checkpoint import find, load_checkpoint, split_prefix

        weights = split_prefix(load_checkpoint(find(path, "latest"), with_state=False).weights, "discriminators.nmd")
        if not weights:
            raise CheckpointError(f"{path}: the run has no NMD weights (train a natsr run with an nmd phase first)")
        return weights
    state = read_checkpoint(path)
    if "CLASSIFIER/conv1_1/conv2d/kernel" in state:
        return convert_nmd_tf(state)[1]
    return {key: value if isinstance(value, Tensor) else torch.as_tensor(np.asarray(value))
            for key, value in state.items()}


def load_nmd(nmd: nn.Module, source: str | Path) -> None:
    """Load `load_nmd_state(source)` into `nmd` strictly: the frozen NMD of NatSR's gan phase and of fxsr_nat.

    A mismatch is a CheckpointError naming the config key (`model.nmd_init`) and the first differing tensor."""
    from perceptsr.errors import describe_mismatch

    state = load_nmd_state(source)
    try:
        nmd.load_state_dict(state, strict=True)
    except RuntimeError as error:
        reason = describe_mismatch(nmd, state, error)
        raise CheckpointError(f"model.nmd_init {source} does not fit model.nmd: {reason}") from None
