"""Training checkpoints: `RUN/checkpoints/<step>/{weights.safetensors, optim.pt, meta.json}`.

Weights go to safetensors; optimiser and RNG state to `optim.pt`, read back with `weights_only=True` (no pickle
code runs). A checkpoint directory is written under a temporary name and renamed into place, so a kill at any
moment leaves either the previous checkpoints or the new one complete, never half of one.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from perceptsr.errors import CheckpointError

WEIGHTS = "weights.safetensors"
OPTIM = "optim.pt"
META = "meta.json"
BEST = "best"


@dataclass
class Checkpoint:
    """A loaded checkpoint: flat weights (prefixed by network), optimiser/RNG state and metadata."""

    path: Path
    weights: dict[str, torch.Tensor]
    state: dict[str, Any]
    meta: dict[str, Any]


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / "checkpoints"


def save_checkpoint(
    run_dir: Path, step: int, weights: dict[str, torch.Tensor], state: dict[str, Any], meta: dict[str, Any],
    *, keep: int = 2,
) -> Path:
    """Write checkpoint `step` atomically, then drop all but the newest `keep` numbered checkpoints."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{step:08d}"
    tmp = root / f".{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, str(tmp / WEIGHTS))
    torch.save(state, tmp / OPTIM)
    (tmp / META).write_text(json.dumps({**meta, "step": step}, indent=2))
    _fsync_dir(tmp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
    for old in numbered(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def mark_best(run_dir: Path, source: Path) -> None:
    """Keep a copy of `source` as the best checkpoint (copied under a temporary name, then swapped in)."""
    root = checkpoint_dir(run_dir)
    tmp = root / ".best.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(source, tmp)
    old = root / ".best.old"
    shutil.rmtree(old, ignore_errors=True)
    if (root / BEST).exists():
        os.replace(root / BEST, old)
    os.replace(tmp, root / BEST)
    shutil.rmtree(old, ignore_errors=True)


def numbered(run_dir: Path) -> list[Path]:
    """Complete numbered checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.is_dir() and p.name.isdigit() and (p / META).is_file()]
    return sorted(found, key=lambda p: int(p.name))


def find(run_dir: Path, which: str = "latest") -> Path:
    """`latest`, `best` or a step number -> the checkpoint directory; a clear error if there is none."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise CheckpointError(f"run directory {run_dir} does not exist")
    if which == "latest":
        found = numbered(run_dir)
        if not found:
            raise CheckpointError(f"{run_dir} has no checkpoint yet")
        return found[-1]
    if which == BEST:
        path = checkpoint_dir(run_dir) / BEST
        if not (path / META).is_file():
            raise CheckpointError(f"{run_dir} has no best checkpoint (validation never ran)")
        return path
    if which.isdigit():
        path = checkpoint_dir(run_dir) / f"{int(which):08d}"
        if not (path / META).is_file():
            raise CheckpointError(f"{run_dir} has no checkpoint at step {int(which)}")
        return path
    raise CheckpointError(f"checkpoint must be 'latest', 'best' or a step number, got {which!r}")


def load_checkpoint(path: Path, *, with_state: bool = True) -> Checkpoint:
    """Read a checkpoint directory; anything corrupt or foreign is one CheckpointError line."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
        weights = load_file(str(path / WEIGHTS))
        state = torch.load(path / OPTIM, map_location="cpu", weights_only=True) if with_state else {}
    except (OSError, json.JSONDecodeError, SafetensorError, RuntimeError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise CheckpointError(f"checkpoint {path} is unreadable: {reason}") from None
    return Checkpoint(path=path, weights=weights, state=state, meta=meta)


def split_prefix(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The sub-dict of `weights` under `prefix.`, with the prefix removed."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in weights.items() if k.startswith(start)}


def _fsync_dir(path: Path) -> None:
    for child in path.iterdir():
        with open(child, "rb") as handle:
            os.fsync(handle.fileno())
