"""Upscaling one image with any generator: device, tiling, alpha, and the canonical in/out format."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from perceptsr.errors import InputError
from perceptsr.inference.fast import FastModel, prepare
from perceptsr.inference.tile import auto_tile_size, tiled_forward
from perceptsr.io.images import LoadedImage, check_output_size, upscale_alpha

DEFAULT_OVERLAP = 32  # LR pixels; above the receptive field's effective reach of the bundled models


@dataclass(frozen=True)
class RunOptions:
    """How models run on images, the same for every command that runs one (upscale, eval, report, sweep, demo).

    precision: auto | fp32 | bf16 | fp16 (auto: reduced precision where the hardware runs it natively);
    tile: LR tile size (None: chosen from free memory); tile_overlap: LR pixels shared by neighbouring tiles;
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
) -> Tensor:
    """SR of a (1,3,h,w) [0,1] tensor, unclamped, on CPU. Tiles when the image is large or `tile` is given.

    Runs through `inference.fast.prepare` (fused, channels-last, inference mode) at `precision` (auto|fp32|bf16|
    fp16); a model already prepared at that precision (e.g. with compile=True) is used as it is. This is the path of
    `upscale` and of every measuring command (evaluation.evaluate).
    """
    device = device or next((p.device for p in model.parameters()), torch.device("cpu"))
    if not (isinstance(model, FastModel) and model.requested == precision):
        model = prepare(model, precision=precision, device=device)
    if tile is None:
        tile = auto_tile_size(model_width(model), model.scale)
    return tiled_forward(model, lr, scale=model.scale, tile=tile, overlap=overlap, conditions=conditions,
                         device=device, progress=progress)


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
    """SR of a loaded image, plus its alpha upscaled with MATLAB bicubic (models see colour only).

    progress=True shows a tqdm bar over the tiles (the app's progress bar follows it)."""
    check_output_size(image.rgb.shape[-1], image.rgb.shape[-2], model.scale, what=str(image.path))
    sr = upscale_tensor(model, image.rgb, tile=tile, overlap=overlap, device=device, conditions=conditions,
                        precision=precision, progress=progress)
    alpha = upscale_alpha(image.alpha, model.scale) if image.alpha is not None else None
    return sr, alpha
