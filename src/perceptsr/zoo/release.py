"""Release files: one `.safetensors` holding a generator's weights plus what rebuilds it.

The safetensors header metadata carries `{format, version, arch, config (JSON), scale}` and optional extras
(training command, source checkpoint). `load_model` needs nothing else: no config file, no code edits.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

from perceptsr.config import from_dict, to_dict
from perceptsr.errors import CheckpointError, ConfigError
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
        save_file(tensors, str(tmp), metadata=metadata)


def read_release(path: str | Path) -> Release:
    """Read and validate a release file; corrupt or foreign files raise one-line CheckpointErrors."""
    networks = _networks()
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        state_dict = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"{path} is not a readable safetensors file ({error})") from None
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
    except (KeyError, json.JSONDecodeError, ConfigError) as error:
        raise CheckpointError(f"{path}: bad architecture config in metadata ({error})") from None
    return Release(arch=arch, config=config, state_dict=state_dict, metadata=metadata)


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
        first = str(error).splitlines()[1].strip() if "\n" in str(error) else str(error)
        raise CheckpointError(f"{path}: weights do not fit {release.arch} ({first})") from None
    model.release_metadata = release.metadata
    return model.eval()
