"""Run logs: JSON lines always (`RUN/log.jsonl`), TensorBoard too when it is installed.

A run killed after its last checkpoint has logged steps that the resumed run will log again, and a kill in the
middle of a write leaves a torn last line. So a logger opened at `start_step` first drops every record past
that step and every line that is not a JSON object (rewriting the file atomically): the log of a resumed run
reads as the log of an uninterrupted one. Values are written as strict JSON (a non-finite number becomes null).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from perceptsr.engine.checkpoint import finite_json, write_atomic


class RunLogger:
    """Appends one JSON object per call; a no-op on non-zero ranks (`enabled=False`)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True, start_step: int = 0) -> None:
        self.enabled = enabled
        self.handle = None
        self.board = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        trim_log(run_dir / "log.jsonl", start_step)
        self.handle = open(run_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(run_dir / "tensorboard"), purge_step=start_step or None)
        except ImportError:
            self.board = None

    def log(self, step: int, phase: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "phase": phase, "time": round(time.time(), 3), **values}
        self.handle.write(json.dumps(finite_json(record), allow_nan=False) + "\n")
        self.handle.flush()
        if self.board is not None:
            for key, value in values.items():
                self.board.add_scalar(f"{phase}/{key}", value, step)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.board is not None:
            self.board.close()


def _keeps(line: str, start_step: int) -> bool:
    try:
        record = json.loads(line)
    except ValueError:
        return False
    step = record.get("step") if isinstance(record, dict) else None
    return isinstance(step, int) and step <= start_step


def trim_log(path: Path, start_step: int) -> None:
    """Drop records past `start_step` and torn or foreign lines from `path`, if there are any."""
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        return
    kept = [line for line in lines if _keeps(line, start_step)]
    if len(kept) != len(lines) or not path.read_bytes().endswith(b"\n") and lines:
        write_atomic(path, "".join(line + "\n" for line in kept))
