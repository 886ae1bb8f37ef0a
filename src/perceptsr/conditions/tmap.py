"""FxSR's style map t: from the user's options at inference, and random smooth maps for training.

t = 0 asks for the distortion-oriented result, t = 1 for the perception-oriented one (FxSR-PD); a painted map
steers each region separately. The map lives at LR resolution, as FxSR's condition network is pointwise.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor

from perceptsr.data.resize import imresize
from perceptsr.errors import InputError
from perceptsr.io.images import LUMA_WEIGHTS, read_image

DEFAULT_T = 0.8  # FxSR's test script default (archs.fxsr.DEFAULT_T)


def check_t(t: float) -> float:
    """t as a float in [0, 1], or an InputError."""
    value = float(t)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise InputError(f"t must be between 0 and 1, got {t}")
    return value


def read_t_map(path: str | Path, size: tuple[int, int]) -> Tensor:
    """A painted picture as a (1,1,h,w) t map in [0,1] for an LR image of `size` = (h, w).

    Pixel value 0 -> t = 0, full white (255, or 65535 at 16 bit) -> t = 1. Colour pictures use their BT.601
    luma; alpha is ignored. Any picture size is resized to the LR grid with MATLAB bicubic (antialiased when
    shrinking, so it averages like an area filter) and clamped to [0,1] against the cubic's overshoot.
    """
    rgb = read_image(path).rgb
    if torch.equal(rgb[:, :1].expand_as(rgb), rgb):  # gray, stored as gray or as equal RGB channels
        luma = rgb[:, :1]
    else:
        luma = (rgb * torch.tensor(LUMA_WEIGHTS, dtype=rgb.dtype).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if tuple(luma.shape[-2:]) != tuple(size):
        luma = imresize(luma.double(), size=size).float()
    return luma.clamp(0, 1)


def t_condition(lr: Tensor, *, t: float | None, t_map: str | Path | None) -> Tensor:
    """The t map (N,1,h,w) for `lr` (N,3,h,w): a constant t (default 0.8), or the picture `t_map` resized to lr.

    Giving both, a t outside [0,1], or an unreadable picture is an InputError.
    """
    if t is not None and t_map is not None:
        raise InputError("give either --t or --t-map, not both")
    batch, _, height, width = lr.shape
    if t_map is not None:
        return read_t_map(t_map, (height, width)).to(lr.device).expand(batch, 1, height, width)
    value = DEFAULT_T if t is None else check_t(t)
    return torch.full((batch, 1, height, width), value, dtype=torch.float32, device=lr.device)


def random_smooth_maps(
    batch: int, height: int, width: int, *, blobs: int, generator: torch.Generator
) -> Tensor:
    """Random t maps (batch,1,height,width) in [0,1] for learning local control: Gaussian blobs on a base level.

    Each map starts at a uniform random level; each of `blobs` blobs (centre anywhere, sigma 10-40 % of the
    shorter side, its own uniform t) is blended in by its Gaussian weight. Every value is a convex mix of
    uniform draws, so maps stay in [0,1], are smooth, and cover the whole range. Draws come from `generator`
    only (CPU), so a resumed run draws the same maps.
    """
    def draw(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator)

    maps = draw(batch, 1, 1, 1).expand(batch, 1, height, width).clone()
    ys = torch.arange(height, dtype=torch.float32).view(1, 1, height, 1)
    xs = torch.arange(width, dtype=torch.float32).view(1, 1, 1, width)
    side = min(height, width)
    for _ in range(blobs):
        cy, cx = draw(batch, 1, 1, 1) * height, draw(batch, 1, 1, 1) * width
        sigma = (0.1 + 0.3 * draw(batch, 1, 1, 1)) * side
        level = draw(batch, 1, 1, 1)
        weight = torch.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2))
        maps = maps * (1 - weight) + level * weight
    return maps


TSampling = Literal["batch", "sample", "spatial", "mixed", "ends"]


def draw_t(kind: TSampling, batch: int, height: int, width: int, *, blobs: int, generator: torch.Generator) -> Tensor:
    """Training t maps (batch,1,height,width) on the CPU, drawn from `generator` (so a resumed run draws the same).

    `batch`: one uniform t for the whole batch (SROT's); `sample`: one per sample; `spatial`: a smooth random map
    per sample (`random_smooth_maps`, for local control); `mixed`: per sample, a coin picks a uniform t or a map,
    so the model learns both the global level and local changes; `ends`: per sample, t = 0 or t = 1 (a quarter each)
    or else `mixed`'s draw, so the two ends, which uniform draws and smooth maps rarely reach, get trained as much as
    the middle.
    """
    if kind == "ends":
        middle = draw_t("mixed", batch, height, width, blobs=blobs, generator=generator)
        pick = torch.randint(0, 4, (batch, 1, 1, 1), generator=generator)
        return torch.where(pick < 2, (pick == 1).to(middle.dtype), middle)
    if kind in ("spatial", "mixed"):
        maps = random_smooth_maps(batch, height, width, blobs=blobs, generator=generator)
        if kind == "spatial":
            return maps
        uniform = draw_t("sample", batch, height, width, blobs=blobs, generator=generator)
        coin = torch.rand((batch, 1, 1, 1), generator=generator) < 0.5
        return torch.where(coin, uniform, maps)
    values = torch.rand((1 if kind == "batch" else batch, 1, 1, 1), generator=generator)
    return values.expand(batch, 1, height, width).clone()
