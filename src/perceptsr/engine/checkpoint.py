"""Training checkpoints: a small transactional store in `RUN/checkpoints/`.

    00000040/{weights.safetensors, optim.pt, meta.json}   complete checkpoints, one per saved step
    best.json                                             {"step": 40}: which of them is the best
    .00000060.<hex>.tmp/  .trash.<name>.<hex>/            an interrupted write or deletion (removed by `recover`)

Weights go to safetensors; optimiser and RNG state to `optim.pt`, read back with `weights_only=True` (no pickle
code runs). Every change is one atomic rename of something already complete and fsynced: a checkpoint is written
under a unique temporary name and renamed into place; "best" is a pointer file replaced in one rename (never a
copy swapped in by two); a checkpoint is deleted by renaming it into the trash first. So a kill or a full disk at
any moment leaves every numbered checkpoint either complete or absent, and a run is resumable iff it holds one.
Leftovers of an interrupted write are removed by `recover`, which the trainer calls with the run lock held.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from perceptsr.errors import CheckpointError
from perceptsr.io.arrays import check_zip, save_safetensors

WEIGHTS = "weights.safetensors"
OPTIM = "optim.pt"
META = "meta.json"
BEST = "best"
BEST_POINTER = "best.json"
FILES = (WEIGHTS, OPTIM, META)
_TRASH = ".trash."


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
    """Write checkpoint `step` atomically, then drop all but the newest `keep` numbered ones (and the best)."""
    root = checkpoint_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"{step:08d}"
    tmp = root / f".{step:08d}.{secrets.token_hex(4)}.tmp"
    tmp.mkdir()
    try:
        save_safetensors({k: v.detach().cpu().contiguous() for k, v in weights.items()}, tmp / WEIGHTS)
        torch.save(state, tmp / OPTIM)
        (tmp / META).write_text(json.dumps({**finite_json(meta), "step": step}, indent=2, allow_nan=False))
        for name in FILES:
            fsync_file(tmp / name)
        fsync_dir(tmp)
        if final.exists():
            discard(final)
        os.replace(tmp, final)
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if keep > 0:
        protected = best_step(run_dir)
        for old in numbered(run_dir)[:-keep]:
            if int(old.name) != protected:
                discard(old)
    return final


def mark_best(run_dir: Path, source: Path) -> None:
    """Point "best" at the numbered checkpoint `source` (one atomic replace of `best.json`)."""
    source = Path(source)
    if not source.name.isdigit():
        raise ValueError(f"mark_best needs a numbered checkpoint, got {source}")
    write_atomic(checkpoint_dir(run_dir) / BEST_POINTER, json.dumps({"step": int(source.name)}) + "\n")


def best_step(run_dir: Path) -> int | None:
    """The step `best.json` points at, or None (no pointer, or an unreadable one)."""
    try:
        data = json.loads((checkpoint_dir(run_dir) / BEST_POINTER).read_text())
        step = data["step"]
    except (OSError, ValueError, TypeError, KeyError):
        return None
    return step if isinstance(step, int) and not isinstance(step, bool) and step >= 0 else None


def is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in FILES)


def numbered(run_dir: Path) -> list[Path]:
    """Complete numbered checkpoints, oldest first."""
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if p.name.isdigit() and is_complete(p)]
    return sorted(found, key=lambda p: int(p.name))


def has_checkpoint(run_dir: Path) -> bool:
    """True iff the run can be resumed: it holds at least one complete numbered checkpoint."""
    return bool(numbered(run_dir))


def recover(run_dir: Path) -> None:
    """Finish or undo what an interrupted process left: temporary writes, trash, incomplete folders, a stale best.

    Call it only while holding the run lock (another live writer's temporary files would look like leftovers).
    """
    run_dir = Path(run_dir)
    if run_dir.is_dir():
        for entry in run_dir.iterdir():  # e.g. an interrupted write of config.yaml
            if entry.name.startswith(".") and entry.name.endswith(".tmp"):
                _remove(entry)
    root = checkpoint_dir(run_dir)
    if not root.is_dir():
        return
    for entry in root.iterdir():
        if entry.name.startswith(".") and (entry.name.endswith(".tmp") or entry.name.startswith(_TRASH)):
            _remove(entry)
        elif entry.name.isdigit() and not is_complete(entry):  # half-deleted by an older version: unusable
            discard(entry)
    if (root / ".best.old").is_dir() and not (root / BEST).exists():  # the old two-rename swap, interrupted
        os.replace(root / ".best.old", root / BEST)
    found = numbered(run_dir)
    if found:
        try:
            best = json.loads((found[-1] / META).read_text()).get("best")
            step = best.get("step") if isinstance(best, dict) else None
        except (OSError, ValueError, AttributeError):
            step = None
        # a kill between saving an improved checkpoint and moving the pointer: the latest meta knows the best
        if isinstance(step, int) and step != best_step(run_dir) and is_complete(root / f"{step:08d}"):
            mark_best(run_dir, root / f"{step:08d}")


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
        step = best_step(run_dir)
        if step is not None and is_complete(path := checkpoint_dir(run_dir) / f"{step:08d}"):
            return path
        for legacy in (BEST, ".best.old"):  # runs written before the pointer file (.best.old: a swap was cut)
            if is_complete(checkpoint_dir(run_dir) / legacy):
                return checkpoint_dir(run_dir) / legacy
        raise CheckpointError(f"{run_dir} has no best checkpoint (validation never ran)")
    if which.isdigit():
        path = checkpoint_dir(run_dir) / f"{int(which):08d}"
        if not is_complete(path):
            raise CheckpointError(f"{run_dir} has no checkpoint at step {int(which)}")
        return path
    raise CheckpointError(f"checkpoint must be 'latest', 'best' or a step number, got {which!r}")


# An optimiser state is a few times the weights; this caps what a corrupt or hostile optim.pt may inflate to.
MAX_STATE_BYTES = 8 << 30


def load_checkpoint(path: Path, *, with_state: bool = True) -> Checkpoint:
    """Read a checkpoint directory; anything corrupt or foreign is one CheckpointError line."""
    path = Path(path)
    try:
        meta = json.loads((path / META).read_text())
        weights = load_file(str(path / WEIGHTS))
        state = {}
        if with_state:
            check_zip(path / OPTIM, max_bytes=MAX_STATE_BYTES, what="optimizer state")
            state = torch.load(path / OPTIM, map_location="cpu", weights_only=True)
    except CheckpointError as error:
        raise CheckpointError(f"checkpoint {path} is unreadable: {error}") from None
    except Exception as error:  # corrupt files fail in torch/safetensors/json with many exception types
        raise CheckpointError(f"checkpoint {path} is unreadable: {_reason(error)}") from None
    _check(path, meta, state, with_state)
    best = meta.get("best")
    if isinstance(best, dict):  # written as strict JSON: a non-finite metric became null; it was never beaten
        meta["best"] = {k: float("nan") if v is None else v for k, v in best.items()}
    return Checkpoint(path=path, weights=weights, state=state, meta=meta)


def _check(path: Path, meta: Any, state: Any, with_state: bool) -> None:
    """What the trainer relies on: an integer step (the folder's own), RNG state and optimiser states."""
    step = meta.get("step") if isinstance(meta, dict) else None
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise CheckpointError(f"checkpoint {path} is unreadable: {META} has no non-negative integer step")
    if path.name.isdigit() and int(path.name) != step:
        raise CheckpointError(f"checkpoint {path} is unreadable: {META} says step {step}")
    if not with_state:
        return
    rng = state.get("torch_rng") if isinstance(state, dict) else None
    if not isinstance(rng, torch.Tensor) or rng.dtype != torch.uint8:
        raise CheckpointError(f"checkpoint {path} is unreadable: {OPTIM} holds no RNG state")
    if not isinstance(state.get("optimizers", {}), dict):
        raise CheckpointError(f"checkpoint {path} is unreadable: {OPTIM} holds no optimizer states")


def split_prefix(weights: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The sub-dict of `weights` under `prefix.`, with the prefix removed."""
    start = prefix + "."
    return {k[len(start):]: v for k, v in weights.items() if k.startswith(start)}


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float replaced by None, so the JSON written is strict."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def write_atomic(path: Path, text: str) -> None:
    """Replace `path` by `text` in one rename of a fsynced temporary file beside it."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def discard(path: Path) -> None:
    """Delete a checkpoint folder crash-safely: rename it into the trash (atomic), then remove the trash."""
    trash = path.parent / f"{_TRASH}{path.name}.{secrets.token_hex(4)}"
    os.replace(path, trash)
    _remove(trash)


def fsync_file(path: Path) -> None:
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Make renames inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _reason(error: BaseException) -> str:
    if isinstance(error, FileNotFoundError):
        return f"{Path(error.filename or '').name or 'a file'} is missing"
    if isinstance(error, zipfile.BadZipFile):
        return f"{OPTIM} is not a torch.save archive"
    text = str(error).strip()
    if "weights_only" in text or "Unsupported global" in text:
        return f"{OPTIM} holds pickled objects other than tensors (refused)"
    lines = text.splitlines()
    return lines[0] if lines else type(error).__name__
