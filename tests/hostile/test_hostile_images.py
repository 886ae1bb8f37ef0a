"""Hostile images and interrupted writes: non-finite pixels and conditions, outputs too big for memory, SIGTERM in
the middle of a write, stale temporary files, and a full disk. Every file is made by the test."""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from perceptsr.archs import ARCHS
from perceptsr.conditions.tmap import t_condition
from perceptsr.errors import InputError
from perceptsr.inference.upscale import upscale_image
from perceptsr.io import images as pio
from perceptsr.io.images import LoadedImage, atomic_output, clean_stale_temps, read_image, write_image
from perceptsr.zoo.release import save_release


def nan_tiff(path: Path) -> Path:
    values = np.full((6, 6), 0.5, np.float32)
    values[2, 3] = np.nan
    Image.fromarray(values, mode="F").save(path)
    return path


def test_a_nan_t_map_or_t_is_one_input_error(tmp_path: Path) -> None:
    lr = torch.rand(1, 3, 6, 6)
    with pytest.raises(InputError, match="NaN") as error:
        t_condition(lr, t=None, t_map=nan_tiff(tmp_path / "t.tif"))
    assert "\n" not in str(error.value)
    for t in (float("nan"), float("inf"), -0.1):
        with pytest.raises(InputError, match="between 0 and 1"):
            t_condition(lr, t=t, t_map=None)


def test_an_upscale_too_big_for_memory_is_refused_before_the_model_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    model = ARCHS["msrresnet"].module(ARCHS["msrresnet"].tiny(4)).eval()
    ran = []
    model.register_forward_hook(lambda *args: ran.append(True))
    image = LoadedImage(rgb=torch.rand(1, 3, 16, 16), alpha=None, grayscale=False, bit_depth=8, path=Path("big.png"))
    monkeypatch.setattr(pio, "available_memory", lambda: 64 * 64 * 3 * 4)  # far less than the x4 result needs
    with pytest.raises(InputError, match=r"big.png: upscaling 16x16 by 4 gives 64x64") as error:
        upscale_image(model, image)
    assert "\n" not in str(error.value) and not ran
    monkeypatch.setattr(pio, "available_memory", lambda: None)  # unknown: no refusal
    sr, _ = upscale_image(model, image)
    assert sr.shape == (1, 3, 64, 64)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_sigterm_or_sigint_during_a_write_removes_the_temporary_file(tmp_path: Path, signum: int) -> None:
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C raises KeyboardInterrupt
            with atomic_output(tmp_path / "out.png") as temp:
                temp.write_bytes(b"half an image")
                os.write(ready_w, b"x")
                while True:  # not signal.pause(): a signal that lands just before pause() leaves it waiting forever
                    time.sleep(0.01)
        finally:
            os._exit(1)
    os.read(ready_r, 1)
    assert len(list(tmp_path.glob(".out.png.*.tmp"))) == 1
    os.kill(pid, signum)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == (-signal.SIGTERM if signum == signal.SIGTERM else 1)
    assert list(tmp_path.iterdir()) == []


def dead_pid() -> int:
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)
    return pid


def test_stale_temporary_files_of_killed_runs_are_removed_on_the_next_write(tmp_path: Path) -> None:
    stale = tmp_path / f".a.png.{dead_pid()}.0123abcd.tmp"
    live = tmp_path / f".b.png.{os.getpid()}.89abcdef.tmp"
    old_style = tmp_path / ".c.png.0badf00d.tmp"
    foreign = tmp_path / ".notes.tmp"
    for path in (stale, live, old_style, foreign):
        path.write_bytes(b"x")
    os.utime(old_style, (1, 1))  # written long ago
    write_image(tmp_path / "out.png", torch.rand(1, 3, 4, 4))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, foreign.name, "out.png"])
    assert clean_stale_temps(tmp_path) == []


def full_disk(*args: object, **kwargs: object) -> None:
    target = args[1] if len(args) > 1 else kwargs.get("fp", kwargs.get("filename"))
    if isinstance(target, (str, Path)):
        Path(target).write_bytes(b"\x89PNG half")
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize(("suffix", "bit_depth"), [("png", 8), ("png", 16), ("tif", 8)])
def test_a_full_disk_while_writing_an_image_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                           suffix: str, bit_depth: int) -> None:
    if suffix == "png":  # PNGs are encoded by write_png, the other formats by Pillow
        monkeypatch.setattr(pio, "write_png", lambda file, samples, **options: full_disk(None, file.name))
    else:
        monkeypatch.setattr(Image.Image, "save", lambda self, *a, **k: full_disk(self, *a, **k))
    with pytest.raises(InputError, match="No space left on device") as error:
        write_image(tmp_path / f"out.{suffix}", torch.rand(1, 3, 4, 4), bit_depth=bit_depth)
    assert "\n" not in str(error.value)
    assert list(tmp_path.iterdir()) == []


def test_a_full_disk_while_saving_a_release_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from perceptsr.zoo import release

    spec = ARCHS["msrresnet"]
    config = spec.tiny(4)
    state = spec.module(config).state_dict()
    monkeypatch.setattr(release, "save_safetensors", lambda tensors, path, metadata=None: full_disk(None, path))
    with pytest.raises(OSError, match="No space left on device"):
        save_release(tmp_path / "model.safetensors", arch="msrresnet", config=config, state_dict=state)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.undo()
    monkeypatch.setattr(os, "fsync", lambda fd: full_disk())  # a late ENOSPC, reported when the data is flushed
    with pytest.raises(OSError, match="No space left on device"):
        save_release(tmp_path / "model.safetensors", arch="msrresnet", config=config, state_dict=state)
    assert list(tmp_path.iterdir()) == []


def test_an_animated_png_is_refused_and_a_nan_tiff_is_one_line(tmp_path: Path) -> None:
    frames = [Image.fromarray(np.full((4, 4, 3), v, np.uint8)) for v in (10, 200, 90)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    for path in (tmp_path / "a.png", nan_tiff(tmp_path / "n.tif")):
        with pytest.raises(InputError) as error:
            read_image(path)
        assert "\n" not in str(error.value)
