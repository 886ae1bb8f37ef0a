"""Run logs: JSON lines always (`RUN/log.jsonl`), TensorBoard too when it is installed."""

from __future__ import annotations

import json
import time
from pathlib import Path


class RunLogger:
    """Appends one JSON object per call; a no-op on non-zero ranks (`enabled=False`)."""

    def __init__(self, run_dir: Path, *, enabled: bool = True) -> None:
        self.enabled = enabled
        self.handle = None
        self.board = None
        if not enabled:
            return
        run_dir.mkdir(parents=True, exist_ok=True)
        self.handle = open(run_dir / "log.jsonl", "a", encoding="utf-8")  # noqa: SIM115 - closed in close()
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.board = SummaryWriter(str(run_dir / "tensorboard"))
        except ImportError:
            self.board = None

    def log(self, step: int, phase: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        record = {"step": step, "phase": phase, "time": round(time.time(), 3), **values}
        self.handle.write(json.dumps(record) + "\n")
        self.handle.flush()
        if self.board is not None:
            for key, value in values.items():
                self.board.add_scalar(f"{phase}/{key}", value, step)

    def close(self) -> None:
        if self.handle is not None:
            self.handle.close()
        if self.board is not None:
            self.board.close()
