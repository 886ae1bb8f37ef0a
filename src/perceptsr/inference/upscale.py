"""Upscaling images with any generator: device, tiling, alpha, the canonical in/out format, and a folder
pipelined so that decoding and encoding overlap the forward."""

from __future__ import annotations

import math
import queue
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from perceptsr.errors import InputError
from perceptsr.inference.fast import FastModel, prepare
from perceptsr.inference.tile import auto_tile_size, choose_tile, tiled_forward
from perceptsr.io import images
from perceptsr.io.images import LoadedImage, check_output_size, upscale_alpha

# LR pixels shared by neighbouring tiles: above the bundled models' effective reach (at 16 their tiled fp32
# output matches the untiled one to float rounding, and bf16's own rounding is the only difference in bf16).
# Every shared pixel is computed twice, so a wider default only wastes time.
DEFAULT_OVERLAP = 16
# Largest LR tile side chosen automatically for fp32: beyond a few hundred pixels the HR-size maps of an x4 model
# leave the caches and the forward's rate per pixel drops; smaller tiles are stacked into batches of this many
# pixels. At a 2-byte precision the same bytes hold tiles sqrt(2) wider (speed_tile): a 1000-pixel side then
# takes 2 tiles, not 3, and computes 1.10x its pixels, not 1.21x (measured on the AVX512-BF16 EPYC, bench's end
# to end in bf16: 0.109 against 0.096 images/s).
SPEED_TILE = 384
# deflate level of written PNGs, from benchmarks/png_level.py (encode time against size on a 16-MP photo-like
# output, io.images.write_png): level 1 took 0.32 s for 29.6 MB, 3 0.35 s for 29.7, 6 1.68 s for 30.8 (6 is zlib's).
DEFAULT_PNG_LEVEL = 1


@dataclass(frozen=True)
class RunOptions:
    """How models run on images, the same for every command that runs one (upscale, eval, report, sweep, demo).

    precision: auto | fp32 | bf16 | fp16 (auto: reduced precision where the hardware runs it natively);
    tile: LR tile size (None: tile_plan's, per image); tile_overlap: LR pixels shared by neighbouring tiles;
    device: auto | cpu | cuda; compile: torch.compile the model (slow start).
    """

    device: str = "auto"
    precision: str = "fp32"
    tile: int | None = None
    tile_overlap: int = DEFAULT_OVERLAP
    compile: bool = False


def pick_device(name: str = "auto") -> torch.device:
    """`auto`: CUDA, then Apple MPS, then CPU. Never a hard-coded GPU index."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was requested but no CUDA device is available")
        return torch.device("cuda")
    if name == "auto" and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def load_prepared(source: str, *, scale: int | None, run: RunOptions) -> tuple[FastModel, torch.device]:
    """The model `source` (bicubic, a bundled name or a release file) on the run's device, prepared once at the run's
    precision: how `upscale` and every measuring command run models."""
    from perceptsr.zoo.models import load_model

    device = pick_device(run.device)
    model = prepare(load_model(source, scale=scale), precision=run.precision, device=device, compile=run.compile)
    return model, device


def model_width(model: nn.Module) -> int:
    """The widest conv in the model (feature channels), for the tile-size estimate; an ONNX model's is recorded."""
    widths = [m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)]
    return max(widths, default=getattr(model, "feature_width", 3))


def speed_tile(model: nn.Module) -> int:
    """SPEED_TILE scaled to the bytes of the model's maps: the same memory and cache footprint at every precision."""
    if getattr(model, "precision", "fp32") == "fp32":
        return SPEED_TILE
    return math.isqrt(2 * SPEED_TILE**2) // 8 * 8


def tile_plan(model: nn.Module, height: int, width: int, *, tile: int | None, overlap: int) -> tuple[int | None, int]:
    """(tile side, tiles per forward) for a height x width input: the given tile, or the one choose_tile finds
    within speed_tile and free memory; tiles smaller than speed_tile go speed_tile**2 pixels to a forward."""
    cap = min(auto_tile_size(model_width(model), model.scale), speed_tile(model))
    if tile is None:
        tile = choose_tile(height, width, overlap, cap)
    if tile is None:
        return None, 1
    return tile, max(1, cap**2 // tile**2)


def upscale_tensor(
    model: nn.Module,
    lr: Tensor,
    *,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    device: torch.device | None = None,
    conditions: Mapping[str, Tensor] | None = None,
    progress: bool = False,
    precision: str = "fp32",
    batch: int | None = None,
) -> Tensor:
    """SR of a (1,3,h,w) [0,1] tensor, unclamped, on CPU. Tiles when the image is large or `tile` is given.

    Runs through `inference.fast.prepare` (fused, channels-last, inference mode) at `precision` (auto|fp32|bf16|
    fp16); a model already prepared at that precision (e.g. with compile=True) is used as it is. This is the path of
    `upscale` and of every measuring command (evaluation.evaluate). batch: tiles per forward (default: tile_plan's).
    """
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    if not (isinstance(model, FastModel) and model.requested == precision):
        model = prepare(model, precision=precision, device=device)
    tile, planned = tile_plan(model, *lr.shape[-2:], tile=tile, overlap=overlap)
    return tiled_forward(model, lr, scale=model.scale, tile=tile, overlap=overlap, conditions=conditions,
                         device=device, progress=progress, batch=batch or planned)


def upscale_image(
    model: nn.Module,
    image: LoadedImage,
    *,
    tile: int | None = None,
    overlap: int = DEFAULT_OVERLAP,
    device: torch.device | None = None,
    conditions: Mapping[str, Tensor] | None = None,
    precision: str = "fp32",
    progress: bool = False,
) -> tuple[Tensor, Tensor | None]:
    """SR of a loaded image, plus its alpha upscaled with MATLAB bicubic (models see colour only)."""
    check_output_size(image.rgb.shape[-1], image.rgb.shape[-2], model.scale, what=str(image.path))
    sr = upscale_tensor(model, image.rgb, tile=tile, overlap=overlap, device=device, conditions=conditions,
                        precision=precision, progress=progress)
    alpha = upscale_alpha(image.alpha, model.scale) if image.alpha is not None else None
    return sr, alpha


_END = object()  # closes a pipeline queue


def run_in_order(items: Sequence[Any], read: Callable[[Any], Any], compute: Callable[[Any, Any], Any],
                 write: Callable[[Any, Any, Any], None], *, pipelined: bool = True,
                 done: Callable[[], None] | None = None) -> None:
    """write(item, read(item), compute(item, read(item))) for each item, in order.

    pipelined: read runs one item ahead in a reader thread and write one item behind in a writer thread, while
    compute runs here (decoding and PNG encoding release the GIL, so they overlap the forward). At most two
    computed results are alive: the one being written and the one being computed. The files and the error are
    those of the plain loop (pipelined=False): the first failure in item order is raised here as it was raised
    (after every earlier item was written), and nothing after it is written.
    """
    if not pipelined:
        for item in items:
            data = read(item)
            write(item, data, compute(item, data))
            if done:
                done()
        return
    stop = threading.Event()
    reads: queue.Queue = queue.Queue(maxsize=1)
    writes: queue.Queue = queue.Queue(maxsize=1)
    failed: list[BaseException] = []  # the writer's error

    def reader() -> None:
        for item in items:
            if stop.is_set():
                return
            try:
                entry: tuple[bool, Any] = (True, read(item))
            except BaseException as error:  # noqa: BLE001 - handed to the main thread, raised there
                entry = (False, error)
            reads.put(entry)
            if not entry[0]:
                return

    def writer() -> None:
        while (entry := writes.get()) is not _END:
            try:
                if not failed:  # earlier items are written even after a later failure
                    write(*entry)
            except BaseException as error:  # noqa: BLE001 - raised by the main thread
                failed.append(error)
            finally:
                writes.task_done()
        writes.task_done()

    threads = [threading.Thread(target=reader, name="perceptsr-read", daemon=True),
               threading.Thread(target=writer, name="perceptsr-write", daemon=True)]
    for thread in threads:
        thread.start()
    try:
        for item in items:
            ok, data = reads.get()
            if not ok:
                raise data
            result = compute(item, data)
            writes.join()  # the previous result is written: only this one and the next forward stay alive
            if failed:
                break
            writes.put((item, data, result))
            del data, result
            if done:
                done()
    except BaseException:
        stop.set()
        raise
    finally:
        _drain(reads)
        writes.put(_END)
        threads[1].join()
        if failed:
            raise failed[0]


def _drain(reads: queue.Queue) -> None:
    """Unblock a reader waiting to put (it sees the stop flag next)."""
    try:
        while True:
            reads.get_nowait()
    except queue.Empty:
        pass


def upscale_files(model: nn.Module, pairs: Sequence[tuple[Path, Path]], *, run: RunOptions, device: torch.device,
                  conditions_for: Callable[[Path, LoadedImage], Mapping[str, Tensor]], max_pixels: int,
                  overwrite: bool = False, png_level: int | None = DEFAULT_PNG_LEVEL, progress: bool = False,
                  pipelined: bool = True, done: Callable[[], None] | None = None,
                  written: Callable[[tuple[Path, Path]], None] | None = None) -> None:
    """Upscale each input to its output (atomically), in order, decoding the next input and encoding the previous
    output while the model runs (run_in_order). The model is prepared once by the caller (load_prepared).
    written(pair) is called once each output is complete (the batch manifest records it)."""

    def read(pair: tuple[Path, Path]) -> LoadedImage:
        return images.read_image(pair[0], max_pixels=max_pixels)

    def compute(pair: tuple[Path, Path], image: LoadedImage) -> np.ndarray:
        sr, alpha = upscale_image(model, image, tile=run.tile, overlap=run.tile_overlap, device=device,
                                  conditions=conditions_for(pair[0], image), precision=run.precision,
                                  progress=progress)
        # converted to integer samples here, not in the writer thread (images.image_samples says why)
        return images.image_samples(pair[1], sr, alpha=alpha, grayscale=image.grayscale, bit_depth=image.bit_depth)

    def write(pair: tuple[Path, Path], image: LoadedImage, samples: np.ndarray) -> None:
        images.write_samples(pair[1], samples, overwrite=overwrite, png_level=png_level)
        if written is not None:
            written(pair)

    run_in_order(pairs, read, compute, write, pipelined=pipelined, done=done)
