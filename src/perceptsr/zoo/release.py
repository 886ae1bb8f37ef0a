"""Release files: one `.safetensors` holding a generator's weights plus what rebuilds it.

The safetensors header metadata carries `{format, version, arch, config (JSON), scale}` and optional extras
(training command, source checkpoint). `load_model` needs nothing else: no config file, no code edits.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, safe_open
from torch import nn
from torch.overrides import TorchFunctionMode

from perceptsr.config import from_dict, to_dict
from perceptsr.errors import CheckpointError, ConfigError, describe_mismatch
from perceptsr.io.arrays import save_safetensors
from perceptsr.io.images import atomic_output

FORMAT = "perceptsr-release"
VERSION = "1"


@dataclass
class Release:
    """What a release file holds, before a module is built from it."""

    arch: str
    config: Any
    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, str]


def _networks() -> dict:
    """Every network a release may hold: the generators (ARCHS) and the non-generator priors (PRIORS)."""
    from perceptsr.archs import ARCHS, PRIORS

    return {**ARCHS, **PRIORS}


def save_release(
    path: str | Path,
    *,
    arch: str,
    config: Any,
    state_dict: dict[str, torch.Tensor],
    extra: dict[str, str] | None = None,
    overwrite: bool = False,
) -> None:
    """Write a release file atomically. `config` is the arch's config dataclass (it must have `scale`)."""
    networks = _networks()
    if arch not in networks:
        raise CheckpointError(f"unknown architecture {arch!r}; known: {', '.join(sorted(networks))}")
    metadata = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "config": json.dumps(to_dict(config)),
        "scale": str(config.scale),
        **(extra or {}),
    }
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state_dict.items()}
    with atomic_output(Path(path), overwrite=overwrite) as tmp:
        save_safetensors(tensors, tmp, metadata=metadata)


def read_release(path: str | Path) -> Release:
    """Read and validate a release file; corrupt or foreign files raise one-line CheckpointErrors.

    Everything is checked before memory is committed: the header's tensor names, shapes and dtypes against the
    module the metadata describes (built on the meta device, after its integer settings are capped by what the
    file could possibly hold), then the weights themselves (floating point where the module has floating point
    parameters, all finite). So `num_block: 1e9` or `num_feat: 200000` is one line, not a machine out of memory.
    """
    networks = _networks()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    metadata, header = _read_header(path)
    if metadata.get("format") != FORMAT:
        raise CheckpointError(
            f"{path} is not a perceptsr release file (no '{FORMAT}' metadata); "
            "foreign checkpoints go through `perceptsr convert` first"
        )
    arch = metadata.get("arch", "")
    if arch not in networks:
        raise CheckpointError(f"{path}: unknown architecture {arch!r}; known: {', '.join(sorted(networks))}")
    try:
        config = from_dict(networks[arch].config, json.loads(metadata["config"]), arch)
    except (KeyError, ValueError, TypeError, AttributeError, RecursionError, ConfigError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"{path}: bad architecture config in metadata ({reason})") from None
    _check_sizes(path, arch, config, header)
    try:
        state_dict = load_file(str(path))
    except Exception as error:  # safetensors reports damage with SafetensorError, OSError, ValueError, ...
        raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(error)})") from None
    for key, value in state_dict.items():
        if value.is_floating_point() and not bool(torch.isfinite(value).all()):
            raise CheckpointError(f"{path}: weight {key} holds NaN or infinite values")
    return Release(arch=arch, config=config, state_dict=state_dict, metadata=metadata)


# No setting of a release network (widths, block counts, kernel sizes) comes near this; the meta-device build
# below creates one Python object per layer, so the cap also bounds the time and memory of that check.
MAX_SETTING = 4096
_FLOAT_DTYPES = {"F64", "F32", "F16", "BF16", "F8_E4M3", "F8_E5M2"}
_DTYPE_NAMES = {torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
                torch.bool: "BOOL"}


def _read_header(path: Path) -> tuple[dict[str, str], dict[str, tuple[tuple[int, ...], str]]]:
    """The metadata and every tensor's (shape, safetensors dtype) from the header, without reading data."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            header = {}
            for key in handle.keys():  # noqa: SIM118 - a safe_open handle is not iterable
                view = handle.get_slice(key)
                header[key] = (tuple(int(n) for n in view.get_shape()), str(view.get_dtype()))
    except Exception as error:  # a damaged header fails inside safetensors with several exception types
        raise CheckpointError(f"{path} is not a readable safetensors file ({_first_line(error)})") from None
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise CheckpointError(f"{path} is not a readable safetensors file (metadata must map text to text)")
    return metadata, header


def _integers(value: Any) -> list[int]:
    """Every integer setting in a config dataclass (tuples and nested dataclasses included)."""
    if isinstance(value, bool):
        return []
    if isinstance(value, int):
        return [value]
    if dataclasses.is_dataclass(value):
        return [n for f in dataclasses.fields(value) for n in _integers(getattr(value, f.name))]
    if isinstance(value, (list, tuple)):
        return [n for item in value for n in _integers(item)]
    return []


def _check_sizes(path: Path, arch: str, config: Any, header: dict[str, tuple[tuple[int, ...], str]]) -> None:
    """The config's size settings against what the file can hold, then every tensor against the meta module."""
    widest = max((n for shape, _ in header.values() for n in shape), default=0)
    limit = min(MAX_SETTING, max(64, len(header), widest))
    too_big = [n for n in _integers(config) if n > limit]
    if too_big:
        raise CheckpointError(f"{path}: the {arch} config asks for {too_big[0]:,} (layers or channels), more than "
                              f"its {len(header)} tensors can describe (limit {limit:,}); the metadata is corrupt")
    try:
        expected = meta_state_dict(lambda: build(arch, config))
    except (ConfigError, ValueError, RuntimeError, TypeError) as error:
        raise CheckpointError(f"{path}: bad architecture config in metadata ({_first_line(error)})") from None
    missing = [k for k in expected if k not in header]
    extra = [k for k in header if k not in expected]
    if missing or extra:
        first = f"missing {missing[0]!r}" if missing else f"unexpected {extra[0]!r}"
        raise CheckpointError(f"{path}: weights do not fit {arch} ({first}; {len(missing)} missing, "
                              f"{len(extra)} unexpected)")
    for key, tensor in expected.items():
        shape, dtype = header[key]
        if shape != tuple(tensor.shape):
            raise CheckpointError(f"{path}: weights do not fit {arch} ({key} has shape {list(shape)}, the config "
                                  f"needs {list(tensor.shape)})")
        wanted = "floating point" if tensor.is_floating_point() else _DTYPE_NAMES.get(tensor.dtype, str(tensor.dtype))
        if (dtype in _FLOAT_DTYPES) != tensor.is_floating_point() or (not tensor.is_floating_point()
                                                                      and dtype != wanted):
            raise CheckpointError(f"{path}: weight {key} is {dtype}, {arch} needs {wanted}")


_INIT_OPS = {"normal_", "uniform_", "kaiming_normal_", "kaiming_uniform_", "trunc_normal_", "orthogonal_",
             "xavier_normal_", "xavier_uniform_"}


class _NoRandomInit(TorchFunctionMode):
    """Skips random initialisation of meta tensors: they hold no values, and torch's meta `normal_` first imports
    its Python decompositions (sympy), which takes seconds."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")  # nn.init passes its tensor by keyword
        if getattr(func, "__name__", "") in _INIT_OPS and isinstance(target, torch.Tensor) and target.is_meta:
            return target
        return func(*args, **kwargs)


def meta_state_dict(make: Callable[[], nn.Module]) -> dict[str, torch.Tensor]:
    """The state_dict of the module `make()` builds, on the meta device: names, shapes and dtypes, no memory."""
    with torch.device("meta"), _NoRandomInit():
        return make().state_dict()


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def build(arch: str, config: Any) -> nn.Module:
    """Instantiate architecture `arch` from its config dataclass."""
    networks = _networks()
    return networks[arch].module(config)


def load_release(path: str | Path) -> nn.Module:
    """Build the generator a release file describes, load its weights strictly, and return it in eval mode."""
    release = read_release(path)
    model = build(release.arch, release.config)
    try:
        model.load_state_dict(release.state_dict, strict=True)
    except RuntimeError as error:
        reason = describe_mismatch(model, release.state_dict, error)
        raise CheckpointError(f"{path}: weights do not fit {release.arch}: {reason}") from None
    model.release_metadata = release.metadata
    return model.eval()
