"""SRFeat's TensorFlow release (`SRFeat_full.npz` = SRFeat_IF, `SRFeat_init.npz` = MSE) -> `srfeat` releases.

The release is tensorlayer's `save_npz`: `np.savez(name, params=[...])`, one list of 183 arrays in the order of
the generator's `all_params` (methods.md §2.4): head W, b; per block c1 W, b1 (beta, gamma, moving_mean,
moving_variance), c2 W, b2 (the same four); the 1x1 skip W of blocks 0..14; up1 W, b; up2 W, b; out W, b.
Conversion (methods.md §0.4): conv kernels HWIO -> OIHW; the two up convs feed `tf.depth_to_space`, so their
output channels are reordered for `nn.PixelShuffle`; BN gamma/beta/moving stats -> weight/bias/running stats
(tensorlayer's BN epsilon is 1e-5, PyTorch's default). Block count and scale are inferred from the shapes.

Reading it safely: a list of arrays of different shapes is saved as a 1-D *object* array, i.e. a pickle, which
`np.load(allow_pickle=False)` refuses. `read_npz` unpickles such members with `_ArrayUnpickler`, whose
`find_class` resolves only numpy's own array reconstruction (`_reconstruct`, `ndarray`, `dtype`) and
`_codecs.encode` for latin-1 text (how protocol-2 pickles written by Python 3 store bytes). Every other global
(`os.system`, `builtins.eval`, any class) is refused before it is looked up, and a pickle can call nothing it
cannot name, so loading runs no code from the file; what it builds is then checked to be numeric arrays only.
"""

from __future__ import annotations

import codecs
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from perceptsr.archs.srfeat import SRFEAT_SCALES, SRFeatGeneratorConfig
from perceptsr.convert import Converted
from perceptsr.errors import CheckpointError
from perceptsr.io.arrays import check_zip
from perceptsr.zoo.weights import MAX_WEIGHT_BYTES

WHAT = "SRFeat .npz"

# --- reading .npz files whose members may be pickled lists of arrays -------------------------------------------

_NUMPY_RECONSTRUCT = np.empty(0).__reduce__()[0]  # numpy's `_reconstruct`, wherever this numpy version keeps it


class _NDArrayName:
    """Stands for `numpy.ndarray` inside the pickle, so the class itself can never be called by it."""


def _reconstruct(subtype: object, shape: Any, typecode: Any) -> np.ndarray:
    if subtype is not _NDArrayName:
        raise pickle.UnpicklingError("_reconstruct is allowed for numpy.ndarray only")
    return _NUMPY_RECONSTRUCT(np.ndarray, shape, typecode)


def _latin1(text: object, encoding: object = "latin1") -> bytes:
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError("_codecs.encode is allowed for latin-1 text only")
    return codecs.encode(text, "latin1")


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays (and containers of them) and nothing else; see the module docstring."""

    ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _reconstruct,  # pickles written by numpy < 2
        ("numpy._core.multiarray", "_reconstruct"): _reconstruct,  # numpy >= 2
        ("numpy", "ndarray"): _NDArrayName,
        ("numpy", "dtype"): np.dtype,
        ("_codecs", "encode"): _latin1,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"global {module}.{name} is not allowed") from None


def _read_member(archive: zipfile.ZipFile, name: str) -> np.ndarray | list[np.ndarray]:
    with archive.open(name) as member:
        version = np.lib.format.read_magic(member)
        header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = header(member)
        if not dtype.hasobject:
            member.seek(0)
            return np.lib.format.read_array(member, allow_pickle=False)
        value = _ArrayUnpickler(member, encoding="latin1").load()
    items = list(value) if isinstance(value, np.ndarray) and value.shape == shape and len(shape) == 1 else None
    if items is None or not all(isinstance(item, np.ndarray) and item.dtype.kind in "biuf" for item in items):
        raise CheckpointError(f"member {name!r} holds pickled objects other than a list of numeric arrays")
    return items


def read_npz(path: str | Path) -> dict[str, np.ndarray | list[np.ndarray]]:
    """Members of an `.npz` by key: arrays, or lists of arrays for pickled object arrays (read as above).

    Anything else pickled, or an unreadable file, is a one-line CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    check_zip(path, max_bytes=MAX_WEIGHT_BYTES, what=".npz file")
    try:
        with zipfile.ZipFile(path) as archive:
            return {
                (name[:-4] if name.endswith(".npy") else name): _read_member(archive, name)
                for name in archive.namelist()
            }
    except (pickle.UnpicklingError, CheckpointError) as error:
        raise CheckpointError(f"{path}: refusing this .npz: {error}") from None
    except Exception as error:  # zipfile/numpy/pickle report damage with many exception types
        text = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise CheckpointError(f"{path} is not a readable pickle-free .npz file ({text})") from None


# --- the converter ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    """One array of the release list: its tensorlayer name and HWIO shape, and where it goes in our state."""

    name: str
    shape: tuple[int, ...]
    key: str
    kind: str  # "conv", "vector", "up" (conv before depth_to_space) or "up_bias"


def _ordered(state: Mapping[str, Any]) -> tuple[list[Any], list[str]] | None:
    """The arrays in release order with their labels, from params=[...] or from arr_0.. / params_0.. keys."""
    if set(state) == {"params"} and isinstance(state["params"], (list, tuple)):
        return list(state["params"]), [f"params[{i}]" for i in range(len(state["params"]))]
    for prefix in ("arr_", "params_"):
        keys = [f"{prefix}{i}" for i in range(len(state))]
        if state and set(state) == set(keys):
            return [state[k] for k in keys], keys
    return None


def is_srfeat_npz(state: Mapping[str, Any]) -> bool:
    """An ordered list of arrays whose first is a 9x9 RGB conv kernel (HWIO): SRFeat's head."""
    found = _ordered(state)
    return found is not None and bool(found[0]) and tuple(getattr(found[0][0], "shape", ()))[:3] == (9, 9, 3)


def _layout(config: SRFeatGeneratorConfig, factors: list[int]) -> list[_Entry]:
    c, g = config.num_feat, "SRGAN_g"
    bn = [("beta", "bias"), ("gamma", "weight"), ("moving_mean", "running_mean"), ("moving_variance", "running_var")]
    entries = [_Entry(f"{g}/n64s1/c/W_conv2d", (9, 9, 3, c), "conv_first.weight", "conv"),
               _Entry(f"{g}/n64s1/c/b_conv2d", (c,), "conv_first.bias", "vector")]
    for i in range(config.num_block):
        for conv, norm in ((1, 1), (2, 2)):
            kernel = f"{g}/n64s1/c{conv}/{i}/W_conv2d"
            entries.append(_Entry(kernel, (3, 3, c, c), f"body.{i}.conv{conv}.weight", "conv"))
            entries += [_Entry(f"{g}/n64s1/b{norm}/{i}/{theirs}", (c,), f"body.{i}.bn{norm}.{ours}", "vector")
                        for theirs, ours in bn]
    entries += [_Entry(f"{g}/n64s1/c3/{i}/W_conv2d", (1, 1, c, c), f"skips.{i}.weight", "conv")
                for i in range(config.num_block - 1)]
    for stage, factor in enumerate(factors):
        out = c * factor * factor
        entries += [_Entry(f"{g}/n256s1/{stage + 1}/W_conv2d", (3, 3, c, out), f"upsampler.{3 * stage}.weight", "up"),
                    _Entry(f"{g}/n256s1/{stage + 1}/b_conv2d", (out,), f"upsampler.{3 * stage}.bias", "up_bias")]
    return entries + [_Entry(f"{g}/out/W_conv2d", (3, 3, c, 3), "conv_last.weight", "conv"),
                      _Entry(f"{g}/out/b_conv2d", (3,), "conv_last.bias", "vector")]


def _infer(arrays: list[np.ndarray], labels: list[str]) -> tuple[SRFeatGeneratorConfig, list[int]]:
    """Channels from the head, blocks from the 1x1 skips (one per block but the last), scale from the up convs."""
    head = arrays[0].shape if arrays else ()
    if len(head) != 4 or head[:3] != (9, 9, 3):
        label = labels[0] if labels else "params[0]"
        raise CheckpointError(
            f"{WHAT}: {label} (SRGAN_g/n64s1/c/W_conv2d) has shape {list(head)}, expected [9, 9, 3, C]"
        )
    c = head[3]
    skips = sum(a.shape == (1, 1, c, c) for a in arrays)
    factors = [{4 * c: 2, 9 * c: 3}[a.shape[3]] for a in arrays if a.shape in ((3, 3, c, 4 * c), (3, 3, c, 9 * c))]
    scale = int(np.prod(factors)) if factors else 0
    expected = [3] if scale == 3 else [2] * (scale.bit_length() - 1)
    if scale not in SRFEAT_SCALES or factors != expected:
        raise CheckpointError(
            f"{WHAT}: found upsampling convs for factors {factors}; supported: x2, x4, x8 (x2 stages) or one x3"
        )
    return SRFeatGeneratorConfig(scale=scale, num_feat=c, num_block=skips + 1), factors


def _check(arrays: list[np.ndarray], labels: list[str], layout: list[_Entry], config: SRFeatGeneratorConfig) -> None:
    """Every shape in order; the first bad entry is named (a missing array shows as the first shifted shape)."""
    count = "" if len(arrays) == len(layout) else (
        f"{len(arrays)} arrays where {len(layout)} were expected ({config.num_block} blocks, x{config.scale}); ")
    for array, label, entry in zip(arrays, labels, layout, strict=False):
        if array.shape != entry.shape:
            raise CheckpointError(
                f"{WHAT}: {count}{label} ({entry.name}) has shape {list(array.shape)}, expected {list(entry.shape)}"
            )
    if len(arrays) < len(layout):
        raise CheckpointError(f"{WHAT}: {count}{layout[len(arrays)].name} (entry {len(arrays)}) is missing")
    if len(arrays) > len(layout):
        raise CheckpointError(f"{WHAT}: {count}{labels[len(layout)]} is unexpected")


def _to_torch(array: np.ndarray, kind: str, num_feat: int) -> Tensor:
    value = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))
    if kind in ("conv", "up"):
        value = value.permute(3, 2, 0, 1)  # HWIO -> OIHW
    if kind in ("up", "up_bias"):
        # depth_to_space reads input channel (i·r + j)·C + c for output (c, i, j); PixelShuffle reads c·r² + i·r + j.
        factor_sq = value.shape[0] // num_feat
        value = value.reshape(factor_sq, num_feat, *value.shape[1:]).transpose(0, 1).reshape(value.shape)
    return value.contiguous()


def convert_srfeat_npz(state: Mapping[str, Any]) -> Converted:
    found = _ordered(state)
    if found is None:
        raise CheckpointError(f"{WHAT}: expected one ordered list of arrays (params=[...], or arr_0.. / params_0..)")
    arrays, labels = [], found[1]
    for value, label in zip(*found, strict=True):
        array = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
        if array.dtype.kind != "f":
            raise CheckpointError(f"{WHAT}: {label} holds {array.dtype} values where weights are floating point")
        arrays.append(array)
    config, factors = _infer(arrays, labels)
    layout = _layout(config, factors)
    _check(arrays, labels, layout, config)
    state_dict = {e.key: _to_torch(array, e.kind, config.num_feat) for array, e in zip(arrays, layout, strict=True)}
    # BN step counters are not in the release; PyTorch reads them only for momentum=None.
    for i in range(config.num_block):
        for norm in (1, 2):
            state_dict[f"body.{i}.bn{norm}.num_batches_tracked"] = torch.tensor(0)
    return Converted("srfeat", config, state_dict)
