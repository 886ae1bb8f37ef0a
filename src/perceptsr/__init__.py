"""perceptsr: perception-oriented single-image super-resolution.

Public API:
    load_model(name_or_path)  -> torch.nn.Module in eval mode; forward(lr, **conditions), `.scale`
    upscale(image, model=...) -> SR tensor (1,3,sH,sW) in [0,1] (clamped), tiled for large images
    degrade(image, scale)     -> the papers' LR: modcrop + MATLAB bicubic 1/scale, 8-bit rounded
Images are float32 tensors N x 3 x H x W, RGB in [0,1], or paths to image files.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor, nn

from perceptsr.zoo.models import load_model

__all__ = ["degrade", "load_model", "upscale"]
__version__ = "0.1.0"


def _as_tensor(image: Tensor | str | Path) -> Tensor:
    if isinstance(image, (str, Path)):
        from perceptsr.io.images import read_image

        return read_image(image).rgb
    return image if image.dim() == 4 else image.unsqueeze(0)


def upscale(
    image: Tensor | str | Path,
    model: nn.Module | str = "default",
    *,
    tile: int | None = None,
    overlap: int = 32,
    **conditions: Tensor,
) -> Tensor:
    """Super-resolve one image (a (1,3,h,w)/(3,h,w) tensor in [0,1] or a file path); returns (1,3,sh,sw) in [0,1]."""
    from perceptsr.inference.upscale import upscale_tensor

    net = load_model(model) if isinstance(model, str) else model
    lr = _as_tensor(image)
    with torch.inference_mode():
        return upscale_tensor(net, lr, tile=tile, overlap=overlap, conditions=conditions or None).clamp(0, 1)


def degrade(image: Tensor | str | Path, scale: int) -> Tensor:
    """The LR the papers use: modcrop to a multiple of `scale`, MATLAB bicubic downscale, rounded to 8 bit."""
    from perceptsr.data.resize import degrade as _degrade

    return _degrade(_as_tensor(image), scale)
