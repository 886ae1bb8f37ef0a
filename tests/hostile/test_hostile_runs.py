"""A run folder as a transactional store: leftovers of a kill, a second writer, corrupt checkpoints, a full disk."""

from __future__ import annotations

import errno
import json
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from tinyrun import tiny, tiny_data

from perceptsr.engine import checkpoint
from perceptsr.engine.checkpoint import (
    BEST,
    META,
    OPTIM,
    find,
    has_checkpoint,
    load_checkpoint,
    mark_best,
    numbered,
    recover,
    save_checkpoint,
)
from perceptsr.engine.runlock import RunLock
from perceptsr.engine.runlog import trim_log
from perceptsr.engine.setup import parse_train_config
from perceptsr.engine.train import Trainer
from perceptsr.errors import CheckpointError, InputError

WEIGHTS = {"generator.w": torch.arange(6, dtype=torch.float32).view(2, 3)}


def state() -> dict:
    return {"torch_rng": torch.get_rng_state(), "optimizers": {}}


def save(run: Path, step: int, keep: int = 2) -> Path:
    return save_checkpoint(run, step, WEIGHTS, state(), {"phase": "p", "best": None}, keep=keep)


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return tiny(*tiny_data(tmp_path_factory.mktemp("data")))


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_a_folder_with_only_a_killed_first_write_restarts_and_is_cleaned(config: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    leftover = run / "checkpoints" / ".00000001.1a2b3c4d.tmp"
    leftover.mkdir(parents=True)
    (leftover / "weights.safetensors").write_bytes(b"half")
    half_deleted = run / "checkpoints" / "00000003"  # an older version's interrupted prune: meta.json alone
    half_deleted.mkdir()
    (half_deleted / META).write_text('{"step": 3}')
    (run / "config.yaml").write_text("method: srgan\n")
    (run / ".config.yaml.deadbeef.tmp").write_text("meth")
    assert not has_checkpoint(run)
    with pytest.raises(CheckpointError, match="no checkpoint yet"):
        find(run, "latest")
    short = {**config, "model": {**config["model"], "phases": {"pretrain": {"iterations": 2},
                                                               "gan": {"iterations": 0}}}}
    assert Trainer(parse_train_config(short), run, resume=True, progress=False).run()
    assert [p.name for p in numbered(run)] == ["00000001", "00000002"]
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["00000001", "00000002", "best.json"]
    assert not list(run.glob(".*.tmp"))
    assert load_checkpoint(find(run, "latest")).meta["step"] == 2


def test_a_kill_during_the_old_best_swap_keeps_best(tmp_path: Path) -> None:
    run = tmp_path / "run"
    source = save(run, 2)
    root = run / "checkpoints"
    legacy = root / ".best.old"
    legacy.mkdir()
    for name in (META, "weights.safetensors", OPTIM):
        (legacy / name).write_bytes((source / name).read_bytes())
    assert find(run, BEST) == legacy  # export works even before a training process repairs it
    recover(run)
    assert find(run, BEST) == root / BEST


def test_best_is_a_pointer_kept_through_pruning_and_repaired_after_a_kill(tmp_path: Path) -> None:
    run = tmp_path / "run"
    mark_best(run, save(run, 1))
    for step in range(2, 6):
        save(run, step)
    assert [p.name for p in numbered(run)] == ["00000001", "00000004", "00000005"]  # best + the newest two
    assert find(run, BEST).name == "00000001"
    # a kill between saving an improved checkpoint and moving the pointer: its meta knows the best step
    save_checkpoint(run, 6, WEIGHTS, state(), {"best": {"psnr": 30.0, "step": 6}})
    assert find(run, BEST).name == "00000001"
    recover(run)
    assert find(run, BEST).name == "00000006"


def test_a_prune_killed_after_its_rename_leaves_only_trash_which_is_cleaned(tmp_path: Path) -> None:
    run = tmp_path / "run"
    save(run, 1, keep=0)
    doomed = save(run, 2, keep=0)
    os.replace(doomed, doomed.parent / ".trash.00000002.0000")
    assert [p.name for p in numbered(run)] == ["00000001"]
    recover(run)
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["00000001"]


@pytest.mark.parametrize("where", ["save", "fsync", "replace"])
def test_a_full_disk_while_saving_leaves_the_previous_checkpoints_intact(tmp_path: Path, where: str,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    run = tmp_path / "run"
    save(run, 1)
    before = sorted(p.name for p in (run / "checkpoints").iterdir())

    def full(*args: object, **kwargs: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    target = {"save": (torch, "save"), "fsync": (os, "fsync"), "replace": (os, "replace")}[where]
    monkeypatch.setattr(*target, full)
    with pytest.raises(OSError, match="No space left"):
        save(run, 2)
    monkeypatch.undo()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == before
    assert load_checkpoint(find(run, "latest")).meta["step"] == 1


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_a_second_writer_or_a_resume_of_a_live_run_is_refused(config: dict, tmp_path: Path) -> None:
    run = tmp_path / "run"
    save(run, 1)
    with RunLock(run):  # another open file description: flock conflicts even within one process
        with pytest.raises(InputError, match="in use by process") as refused:
            Trainer(parse_train_config(config), run, resume=True, progress=False)
        assert "\n" not in str(refused.value)
        with pytest.raises(InputError, match="in use"):
            Trainer(parse_train_config(config), tmp_path / "run", progress=False).run()
        assert [p.name for p in numbered(run)] == ["00000001"]
    lock = RunLock(run)
    lock.acquire()
    lock.release()


def test_the_lock_dies_with_its_holder(tmp_path: Path) -> None:
    run = tmp_path / "run"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            held = RunLock(run)
            held.acquire()
            os.write(ready_w, b"x")
            time.sleep(60)
        finally:
            os._exit(0)
    os.read(ready_r, 1)
    with pytest.raises(InputError, match=f"process {pid}"):
        RunLock(run).acquire()
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    with RunLock(run):
        pass


@pytest.mark.parametrize("damage", ["step-text", "step-other", "meta-list", "no-rng", "pickle-global", "random",
                                    "truncated", "missing-optim"])
def test_corrupt_checkpoints_are_one_line_checkpoint_errors(tmp_path: Path, damage: str) -> None:
    path = save(tmp_path / "run", 4)
    meta = json.loads((path / META).read_text())
    if damage == "step-text":
        (path / META).write_text(json.dumps({**meta, "step": "4"}))
    elif damage == "step-other":
        (path / META).write_text(json.dumps({**meta, "step": 7}))
    elif damage == "meta-list":
        (path / META).write_text("[4]")
    elif damage == "no-rng":
        torch.save({"optimizers": {}}, path / OPTIM)
    elif damage == "pickle-global":
        torch.save({"torch_rng": torch.get_rng_state(), "optimizers": {}, "x": time.struct_time((0,) * 9)},
                   path / OPTIM)
    elif damage == "random":
        (path / OPTIM).write_bytes(os.urandom(2000))
    elif damage == "truncated":
        data = (path / OPTIM).read_bytes()
        (path / OPTIM).write_bytes(data[: len(data) // 2])
    else:
        (path / OPTIM).unlink()
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    assert "\n" not in str(error.value) and "weights_only=False" not in str(error.value)


def test_a_torn_log_line_and_steps_past_the_checkpoint_are_dropped(tmp_path: Path) -> None:
    log = tmp_path / "log.jsonl"
    log.write_text('{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n{"step": 3, "a": 3}\n{"step": 4, "a"')
    trim_log(log, 2)
    assert log.read_text() == '{"step": 1, "a": 1}\n{"step": 2, "a": 2}\n'


def test_meta_json_is_strict(tmp_path: Path) -> None:
    path = save_checkpoint(tmp_path / "run", 1, WEIGHTS, state(),
                           {"best": {"psnr": float("inf"), "niqe": float("nan"), "step": 1}})
    text = (path / META).read_text()
    assert "NaN" not in text and "Infinity" not in text
    assert json.loads(text)["best"] == {"psnr": None, "niqe": None, "step": 1}
    best = load_checkpoint(path).meta["best"]  # read back as "never beaten", as inf and NaN behave
    assert best["step"] == 1 and all(best[k] != best[k] for k in ("psnr", "niqe"))
    assert checkpoint.finite_json([1.0, float("-inf")]) == [1.0, None]


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_the_cli_restarts_a_folder_left_by_a_kill_during_the_first_checkpoint(config: dict, tmp_path: Path) -> None:
    import yaml

    from perceptsr.cli.main import main

    short = {**config, "model": {**config["model"], "phases": {"pretrain": {"iterations": 1},
                                                               "gan": {"iterations": 0}}}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(short))
    for args in (["train", str(tmp_path / "tiny.yaml"), "-o", str(tmp_path / "fresh")],
                 ["train", "--resume", str(tmp_path / "resumed")]):
        run = Path(args[-1])
        (run / "checkpoints" / ".00000001.1a2b3c4d.tmp").mkdir(parents=True)
        (run / "config.yaml").write_text(yaml.safe_dump(short))
        assert main([*args, "--quiet"]) == 0
        assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["00000001", "best.json"]
    assert main(["train", str(tmp_path / "tiny.yaml"), "-o", str(tmp_path / "fresh"), "--quiet"]) == 2


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 96 KiB tmpfs (needs root and mount rights; skipped with the reason otherwise)."""
    import subprocess

    disk = tmp_path / "disk"
    disk.mkdir()
    if os.geteuid() != 0:
        pytest.skip("a real full disk needs root to mount a small tmpfs (the injected ENOSPC tests still run)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(disk)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs: {mounted.stderr.decode(errors='replace').strip()}")
    try:
        yield disk
    finally:
        subprocess.run(["umount", str(disk)], check=False)


def test_a_really_full_disk_keeps_checkpoints_releases_and_images_whole(small_disk: Path) -> None:
    from perceptsr.archs import ARCHS
    from perceptsr.io.images import write_image
    from perceptsr.zoo.release import save_release

    run = small_disk / "run"
    save(run, 1)
    big = {"generator.w": torch.rand(64, 1024)}  # 256 KiB: more than the disk holds
    with pytest.raises(OSError) as error:
        save_checkpoint(run, 2, big, state(), {"best": None})
    assert error.value.errno == errno.ENOSPC
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["00000001"]
    assert load_checkpoint(find(run, "latest")).meta["step"] == 1
    spec = ARCHS["msrresnet"]
    config = spec.tiny(4)
    wide = {k: torch.rand(v.shape) for k, v in spec.module(config).state_dict().items()}
    wide["conv_first.weight"] = torch.rand(8, 3, 3, 3)
    with pytest.raises(OSError):
        save_release(small_disk / "model.safetensors", arch="msrresnet", config=config,
                     state_dict={**wide, "pad": torch.rand(64, 1024)})
    with pytest.raises(InputError, match="No space left") as refused:
        write_image(small_disk / "noise.png", torch.rand(1, 3, 256, 256))
    assert "\n" not in str(refused.value)
    assert sorted(p.name for p in small_disk.iterdir()) == ["run"]
