"""Kill-soak: a tiny run SIGKILLed again and again (at random moments and inside checkpoint writes), resumed each
time, ends bit-identical to an uninterrupted run: weights, best checkpoint and log.

Each attempt runs in a forked child of the test process (torch is imported once, so an attempt costs a fraction of
a second). A child either kills itself at its N-th file-system call of the checkpoint store (before or after the
call: inside a checkpoint write, between the rename and the best pointer, in the middle of pruning), or in the middle
of its N-th training iteration (after the step's update, before anything of it is saved). Seeded and counted in calls,
not seconds, so the schedule is the same on a fast or a slow machine, and a failure replays.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import sys
import traceback
from pathlib import Path

import pytest
import torch
from tinyrun import tiny, tiny_data

from perceptsr.engine import checkpoint
from perceptsr.engine.checkpoint import BEST, find, load_checkpoint, numbered
from perceptsr.engine.setup import parse_train_config
from perceptsr.engine.train import Trainer

SEED = 20261202
ATTEMPTS = 12
HOOKED = [(os, "replace"), (os, "fsync"), (os, "mkdir"), (os, "unlink"), (os, "rmdir"), (shutil, "rmtree"),
          (torch, "save"), (checkpoint, "save_safetensors")]


def _arm(kill_at: int, after: bool) -> None:
    """Make this process SIGKILL itself at its `kill_at`-th hooked call (just before it, or just after it)."""
    calls = [0]

    def wrap(function):  # noqa: ANN001, ANN202
        def hooked(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            calls[0] += 1
            if calls[0] == kill_at and not after:
                os.kill(os.getpid(), signal.SIGKILL)
            result = function(*args, **kwargs)
            if calls[0] == kill_at and after:
                os.kill(os.getpid(), signal.SIGKILL)
            return result
        return hooked

    for owner, name in HOOKED:
        setattr(owner, name, wrap(getattr(owner, name)))


def _arm_step(kill_at: int) -> None:
    """Make this process SIGKILL itself inside its `kill_at`-th training iteration (its update done, nothing saved)."""
    step = Trainer.train_step
    calls = [0]

    def hooked(self, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        logs = step(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return logs

    Trainer.train_step = hooked


def attempt(config: dict, run_dir: Path, *, resume: bool, kill_at: int | None, after: bool,
            kill_step: int | None = None) -> int:
    """Fork a child that trains (self-killing at a hooked call when `kill_at`, or inside iteration `kill_step`)."""
    pid = os.fork()
    if pid == 0:
        code = 0
        try:
            if kill_at is not None:
                _arm(kill_at, after)
            if kill_step is not None:
                _arm_step(kill_step)
            Trainer(parse_train_config(config), run_dir, resume=resume, progress=False).run()
        except BaseException:  # noqa: BLE001 - the child reports everything through its exit code
            traceback.print_exc()
            code = 3
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return pid


def state_of(run: Path) -> tuple[dict, dict, list]:
    latest = load_checkpoint(find(run, "latest")).weights
    best = load_checkpoint(find(run, BEST), with_state=False)
    log = [{k: v for k, v in json.loads(line).items() if k not in ("time", "elapsed_s")}
           for line in (run / "log.jsonl").read_text().splitlines()]
    return latest, {"step": best.meta["step"], **best.weights}, log


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_sigkill_anywhere_then_resume_is_bit_identical(tmp_path: Path) -> None:
    config = tiny(*tiny_data(tmp_path))
    whole = tmp_path / "whole"
    _, status = os.waitpid(attempt(config, whole, resume=False, kill_at=None, after=False), 0)
    assert os.waitstatus_to_exitcode(status) == 0

    rng = random.Random(SEED)
    cut, kills, inside = tmp_path / "cut", 0, 0
    for number in range(ATTEMPTS):
        self_kill = rng.random() < 0.7
        if self_kill:  # inside the store: a save makes ~15 hooked calls
            pid = attempt(config, cut, resume=number > 0, kill_at=rng.randint(1, 20), after=rng.random() < 0.5)
        else:  # in the middle of training, outside the store
            pid = attempt(config, cut, resume=number > 0, kill_at=None, after=False, kill_step=rng.randint(1, 3))
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        assert code in (0, -signal.SIGKILL), f"attempt {number} failed with exit code {code} (see stderr)"
        kills += code == -signal.SIGKILL
        inside += code == -signal.SIGKILL and self_kill
        if code == 0:
            break
    else:  # the last attempt runs undisturbed to the end
        _, status = os.waitpid(attempt(config, cut, resume=True, kill_at=None, after=False), 0)
        assert os.waitstatus_to_exitcode(status) == 0
    print(f"\nkill-soak: {kills} SIGKILLs ({inside} at a file-system call of the run store), then finished")  # noqa: T201
    assert kills >= 5, f"only {kills} kills: the schedule no longer exercises resume"

    assert not [p.name for p in (cut / "checkpoints").iterdir() if p.name.startswith(".")]
    assert [p.name for p in numbered(cut)] == [p.name for p in numbered(whole)]
    (want_latest, want_best, want_log), (got_latest, got_best, got_log) = state_of(whole), state_of(cut)
    assert want_latest.keys() == got_latest.keys()
    assert all(torch.equal(want_latest[k], got_latest[k]) for k in want_latest)
    assert want_best["step"] == got_best["step"]
    assert all(torch.equal(want_best[k], got_best[k]) for k in want_best if k != "step")
    assert got_log == want_log
