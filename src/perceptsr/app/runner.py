"""The app's work without its page: which models there are, reading an upload, running a model, the download.

No Gradio here. Models come from a fixed catalog (the bundled ones and the release files in the models folder),
and the page names them by label only, so a request can never point the server at another file. Images go
through the same reader, pixel limit and one-line errors as `perceptsr upscale`; models through the same
`inference.upscale` path. A run can be cancelled between tiles: a forward pre-hook on the prepared model checks
the calling thread's cancel flag before each tile.
"""

from __future__ import annotations

import functools
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from perceptsr.conditions.seg import SEG_MODEL_ENV, segment_lr
from perceptsr.data.resize import imresize
from perceptsr.errors import InputError
from perceptsr.inference.upscale import DEFAULT_OVERLAP, RunOptions, load_prepared, upscale_image
from perceptsr.io.images import LoadedImage, read_image, write_image

RELEASE_SUFFIXES = (".safetensors", ".onnx")
SEG_ARCH = "outdoorsceneseg"
NO_SEG = ("No segmentation network: SFTGAN needs one for its automatic class map (put an outdoorsceneseg release, "
          "from `perceptsr convert segmentation_OST_bic.pth`, in --models-dir, or set PERCEPTSR_SEG_MODEL).")
APP_TILE = 256  # LR tile size when none is given: big images then report progress tile by tile


class CancelledError(Exception):
    """The user pressed Cancel during a run."""


@dataclass(frozen=True)
class ModelEntry:
    """One model the page offers: its label and where it loads from (a bundled name or a file)."""

    label: str
    source: str


@dataclass(frozen=True)
class Catalog:
    """The models the page offers, and the segmentation network for SFTGAN's automatic map (if any)."""

    models: dict[str, ModelEntry]
    seg_model: Path | None

    def entry(self, label: str | None) -> ModelEntry:
        """The model of a label the page sent; anything else (a path, a stale name) is a one-line error."""
        if label not in self.models:
            raise InputError(f"unknown model {label!r}: pick one of the list")
        return self.models[label]


def release_arch(path: Path) -> str | None:
    """The architecture a release file's header names, or None when the header cannot be read."""
    if path.suffix.lower() != ".safetensors":
        return None
    try:
        from safetensors import safe_open

        with safe_open(str(path), "pt") as handle:
            return (handle.metadata() or {}).get("arch")
    except Exception:  # a corrupt header: listed anyway, loading it shows the reason
        return None


def build_catalog(models_dir: Path | None) -> Catalog:
    """Every release file (and .onnx) in `models_dir`, sorted, then the bundled models of this install.

    The folder's models come first (the first is preselected): the user named that folder. A segmentation
    network release in it (arch outdoorsceneseg) is not listed: it is SFTGAN's automatic map, as is
    $PERCEPTSR_SEG_MODEL.
    """
    from perceptsr.zoo.models import BUNDLED, bundled_path

    models: dict[str, ModelEntry] = {}
    seg_model = Path(os.environ[SEG_MODEL_ENV]) if os.environ.get(SEG_MODEL_ENV) else None
    if models_dir is not None:
        if not models_dir.is_dir():
            raise InputError(f"--models-dir {models_dir}: no such folder")
        for path in sorted(models_dir.iterdir()):
            if not path.is_file() or path.suffix.lower() not in RELEASE_SUFFIXES:
                continue
            if release_arch(path) == SEG_ARCH:
                seg_model = seg_model or path
                continue
            label = path.name if path.name not in BUNDLED else f"{path.name} (file)"
            models[label] = ModelEntry(label, str(path.resolve()))
    models.update({name: ModelEntry(name, name) for name in BUNDLED if bundled_path(name) is not None})
    return Catalog(models=models, seg_model=seg_model)


_cancel = threading.local()


def _check_cancel(module: torch.nn.Module, args: tuple) -> None:
    event = getattr(_cancel, "event", None)
    if event is not None and event.is_set():
        raise CancelledError("cancelled")


@functools.lru_cache(maxsize=2)
def _load(source: str, mtime_ns: int, run: RunOptions) -> torch.nn.Module:
    model, _ = load_prepared(source, scale=None, run=run)
    model.register_forward_pre_hook(_check_cancel)
    return model


def load_entry(entry: ModelEntry, run: RunOptions) -> torch.nn.Module:
    """The prepared model of a catalog entry (a FastModel, or an OnnxModel for .onnx; cached, a changed file is
    loaded again)."""
    path = Path(entry.source)
    mtime = path.stat().st_mtime_ns if path.is_file() else 0
    return _load(entry.source, mtime, run)


def model_kind(model: torch.nn.Module) -> str:
    """`t` (FxSR's style map), `seg` (SFTGAN's class map) or `plain`."""
    wanted = getattr(model, "condition_scales", {}) or {}
    return "t" if "t" in wanted else "seg" if "seg" in wanted else "plain"


def load_upload(path: str | Path, max_pixels: int) -> LoadedImage:
    """An uploaded file read as `upscale` reads it; errors name the file as the user called it."""
    return read_image(path, max_pixels=max_pixels)


def to_uint8(rgb: Tensor) -> np.ndarray:
    """(1,3,H,W) [0,1] -> (H,W,3) uint8 for display."""
    return (rgb[0].clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()


def preview(image: LoadedImage, max_side: int) -> np.ndarray:
    """The image as (H,W,3) uint8, shrunk (nearest) to at most `max_side` pixels on its longer side."""
    from perceptsr.app.paint import resize_nearest

    pixels = to_uint8(image.rgb)
    height, width = pixels.shape[:2]
    factor = max(height, width) / max_side
    if factor <= 1:
        return pixels
    return resize_nearest(pixels, (max(1, round(height / factor)), max(1, round(width / factor))))


def auto_segmentation(catalog: Catalog, lr: Tensor) -> np.ndarray | None:
    """SFTGAN's automatic map (1,8,4h,4w) of an LR image, or None when no segmentation network is available."""
    if catalog.seg_model is None:
        return None
    from perceptsr.conditions.seg import load_seg_model

    return segment_lr(load_seg_model(catalog.seg_model), lr).numpy()


def conditions_for(model: torch.nn.Module, image: LoadedImage, *, t: float, t_layers: list[np.ndarray],
                   seg: np.ndarray | None, seg_layers: list[np.ndarray]) -> dict[str, Tensor]:
    """The condition tensors of a run from what the page holds: the global t and the painted t layers (FxSR), or
    the automatic segmentation and the class brush's layers (SFTGAN)."""
    from perceptsr.app.paint import repaint_seg, t_map_from_layers
    from perceptsr.conditions.tmap import check_t

    kind = model_kind(model)
    if kind == "t":
        t_map = t_map_from_layers(t_layers, tuple(image.rgb.shape[-2:]), check_t(t))
        return {"t": torch.from_numpy(t_map)[None, None]}
    if kind == "seg":
        if seg is None:
            raise InputError(NO_SEG)
        return {"seg": torch.from_numpy(repaint_seg(seg, seg_layers))}
    return {}


def run_model(model: torch.nn.Module, image: LoadedImage, conditions: dict[str, Tensor], run: RunOptions,
              cancel: threading.Event | None = None) -> tuple[Tensor, Tensor | None]:
    """SR of `image` (and its alpha) through `inference.upscale`, stoppable between tiles by `cancel`."""
    _cancel.event = cancel
    try:
        return upscale_image(model, image, tile=run.tile or APP_TILE, overlap=run.tile_overlap or DEFAULT_OVERLAP,
                             conditions=conditions, precision=run.precision, progress=True)
    finally:
        _cancel.event = None


def bicubic(image: LoadedImage, scale: int) -> Tensor:
    """The MATLAB-bicubic upscale the result is compared against."""
    return imresize(image.rgb, scale)


def save_result(folder: Path, image: LoadedImage, sr: Tensor, alpha: Tensor | None, label: str, number: int) -> Path:
    """The result as `<stem>_<model>_<number>.png` in `folder`: 16-bit when the input was, keeping alpha and
    grayscale. The run number keeps every download of a session apart."""
    stem = Path(image.path).stem or "image"
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in Path(label).stem)
    path = folder / f"{stem}_{safe}_{number}.png"
    write_image(path, sr, alpha=alpha, grayscale=image.grayscale, bit_depth=16 if image.bit_depth == 16 else 8,
                overwrite=True)
    return path
