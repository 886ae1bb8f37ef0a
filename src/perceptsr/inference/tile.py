"""Run any image-to-image network on any image size, one overlapping tile at a time.

Layout along each axis: tiles of exactly `tile` LR pixels, spread evenly so that neighbours share at least
2*overlap + ramp pixels, where the crossfade width ramp = min(overlap, (tile - 2*overlap) // 2). Each tile's
weight is zero within `overlap` pixels of a cut edge (an edge inside the image; image borders need no
margin), then rises linearly over the next `ramp` pixels, then is 1. So every output pixel is blended only
from tiles where it had at least `overlap` LR pixels of context on every side: with overlap >= the network's
receptive radius, tiled output equals untiled output up to float rounding. With a smaller overlap the
crossfade hides the seams instead.

Memory: tile (i, j)'s weight is wy_i(y) * wx_j(x), so the total weight is (sum_i wy_i(y)) * (sum_j wx_j(x));
each 1-D weight is divided by its 1-D total up front and tiles are accumulated already normalised into one
float32 output. Nothing image-sized exists besides that output (and the caller's input).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from perceptsr.errors import InputError

log = logging.getLogger(__name__)

FALLBACK_TILE = 256
# auto_tile_size: live LR-size feature maps in a typical SR body (input, output, residual, skip); the
# upsampler adds scale**2 more at HR size. Use a quarter of free memory: the output and the OS need the rest.
_LIVE_MAPS = 4
_MEMORY_SHARE = 0.25
_TILE_RANGE = (64, 2048)
PROGRESS_TILES = 4  # more tiles than this: the bar shows at once (a long image); fewer: only after the delay
PROGRESS_DELAY_S = 2.0


def tiled_forward(model: Callable[..., Tensor], lr: Tensor, *, scale: int, tile: int | None, overlap: int,
                  conditions: Mapping[str, Tensor] | None = None, out: Tensor | None = None,
                  progress: bool = False, device: torch.device | str | None = None, batch: int = 1) -> Tensor:
    """Upscale lr (N,3,h,w) by `scale` with `model(lr_tile, **condition_tiles)`, tile by tile.

    Each condition is (N,C,k*h,k*w) for an integer k >= 1 (k=1: LR-size like FxSR's t, k=scale: HR-size
    like SFTGAN's segmentation) and is cut at the tile's coordinates times k; a scalar one (a float or 0-d
    tensor, like FxSR's t = 0.5) goes to every tile as it is. tile=None or tile >= the image:
    one call. Tiles go to `device` (default lr.device); the result (N,C,scale*h,scale*w) float32 is on the
    CPU, or is `out` when given (it is overwritten). Runs under torch.inference_mode().

    batch: tiles per model call (all tiles have one size, so they stack along N); each call gets
    batch * N images. progress: a tqdm bar by tiles on stderr, shown at once for more than PROGRESS_TILES
    tiles, else only once PROGRESS_DELAY_S have passed.
    """
    if lr.dim() != 4:
        raise ValueError(f"tiled_forward needs lr of shape (N,3,h,w), got {tuple(lr.shape)}")
    _check_tiling(tile, overlap, scale)
    batch_size, _, height, width = lr.shape
    device = torch.device(device) if device is not None else lr.device
    conditions = dict(conditions or {})
    factors = {name: _condition_factor(name, value, lr) for name, value in conditions.items()
               if isinstance(value, Tensor) and value.dim() > 0}
    rows, row_weights = _layout(height, tile, overlap, scale)
    cols, col_weights = _layout(width, tile, overlap, scale)
    places = [(y, wy, x, wx) for y, wy in zip(rows, row_weights, strict=True)
              for x, wx in zip(cols, col_weights, strict=True)]
    batch = max(1, batch)
    bar = tqdm(total=len(places), disable=not progress or len(places) < 2, unit="tile", desc="tiles", leave=False,
               delay=0 if len(places) > PROGRESS_TILES else PROGRESS_DELAY_S)
    with torch.inference_mode(), bar:
        for first in range(0, len(places), batch):
            group = places[first:first + batch]
            lr_tiles = torch.cat([lr[:, :, y0:y1, x0:x1] for (y0, y1), _, (x0, x1), _ in group]).to(device)
            cond_tiles = {name: torch.cat([value[:, :, y0 * factors[name]:y1 * factors[name],
                                                 x0 * factors[name]:x1 * factors[name]]
                                           for (y0, y1), _, (x0, x1), _ in group]).to(device)
                          if name in factors else value for name, value in conditions.items()}
            sr = model(lr_tiles, **cond_tiles)
            (y0, y1), _, (x0, x1), _ = group[0]
            expected = (batch_size * len(group), (y1 - y0) * scale, (x1 - x0) * scale)
            if sr.dim() != 4 or (sr.shape[0], *sr.shape[2:]) != expected:
                raise InputError(f"the model returned {tuple(sr.shape)} for a {y1 - y0}x{x1 - x0} tile, "
                                 f"not x{scale}: is --scale right for this model?")
            if first == 0:
                out = _prepare_out(out, (batch_size, sr.shape[1], height * scale, width * scale))
            for index, ((y0, _), wy, (x0, _), wx) in enumerate(group):
                _accumulate(out, sr[index * batch_size:(index + 1) * batch_size], y0 * scale, wy, x0 * scale, wx)
            bar.update(len(group))
    return out


def _check_tiling(tile: int | None, overlap: int, scale: int) -> None:
    if scale < 1:
        raise InputError(f"scale must be a positive integer, not {scale}")
    if overlap < 0:
        raise InputError(f"tile overlap must be >= 0, not {overlap}")
    if tile is not None and tile <= 2 * overlap:
        raise InputError(f"tile size {tile} must be larger than 2 x overlap ({2 * overlap}): "
                         f"use a bigger --tile or a smaller --tile-overlap")


def _condition_factor(name: str, value: Tensor, lr: Tensor) -> int:
    """The integer k with value (N,C,k*h,k*w) for lr (N,3,h,w); anything else is an InputError."""
    height, width = lr.shape[-2:]
    if value.dim() != 4 or value.shape[0] != lr.shape[0]:
        raise InputError(f"condition '{name}' has shape {tuple(value.shape)}; expected ({lr.shape[0]},C,H,W)")
    factor = value.shape[-2] // height
    if factor < 1 or value.shape[-2] != factor * height or value.shape[-1] != factor * width:
        raise InputError(f"condition '{name}' is {value.shape[-2]}x{value.shape[-1]}, not an integer "
                         f"multiple of the {height}x{width} input")
    return factor


def _spans(length: int, tile: int | None, overlap: int) -> list[tuple[int, int]]:
    """Tile extents [start, stop) along one axis: full-size tiles spread evenly over the axis."""
    if tile is None or length <= tile:
        return [(0, length)]
    stride = tile - 2 * overlap - _ramp(tile, overlap)  # >= 1 since tile > 2 * overlap
    count = math.ceil((length - tile) / stride) + 1
    # rounding keeps every step <= stride (steps are at most ceil((length - tile) / (count - 1)) <= stride)
    starts = [(i * (length - tile) + (count - 1) // 2) // (count - 1) for i in range(count)]
    return [(start, start + tile) for start in starts]


def _ramp(tile: int, overlap: int) -> int:
    """Crossfade width: `overlap`, shortened for tiles too small to also keep a core as wide as the ramp."""
    return min(overlap, (tile - 2 * overlap) // 2)


def _layout(length: int, tile: int | None, overlap: int, scale: int
            ) -> tuple[list[tuple[int, int]], list[Tensor]]:
    """Spans along one axis and each span's HR weights, already divided by the axis' total weight."""
    spans = _spans(length, tile, overlap)
    ramp = 0 if len(spans) == 1 else _ramp(tile, overlap)
    raw = [_span_weight(start, stop, length, margin=overlap * scale, ramp=ramp * scale, scale=scale)
           for start, stop in spans]
    total = torch.zeros(length * scale, dtype=torch.float64)
    for (start, stop), weight in zip(spans, raw, strict=True):
        total[start * scale:stop * scale] += weight
    if not bool((total > 0).all()):  # the spacing in _spans guarantees coverage; this would be a bug
        raise RuntimeError(f"tile layout leaves pixels without weight: {spans}")
    return spans, [(weight / total[start * scale:stop * scale]).float()
                   for (start, stop), weight in zip(spans, raw, strict=True)]


def _span_weight(start: int, stop: int, length: int, *, margin: int, ramp: int, scale: int) -> Tensor:
    """HR weight of one tile: 0 within `margin` of a cut edge, a linear rise over `ramp`, then 1."""
    size = (stop - start) * scale
    position = torch.arange(size, dtype=torch.float64)
    far = torch.full_like(position, math.inf)
    to_cut = torch.minimum(position if start > 0 else far, size - 1 - position if stop < length else far)
    return ((to_cut - margin + 1) / (ramp + 1)).clamp(0, 1)


def _prepare_out(out: Tensor | None, shape: tuple[int, ...]) -> Tensor:
    """A zeroed float32 output: `out` checked, or a new CPU tensor made outside inference mode (so callers may
    still change it in place)."""
    if out is None:
        with torch.inference_mode(False):
            return torch.zeros(shape, dtype=torch.float32)
    if tuple(out.shape) != shape or out.dtype != torch.float32:
        raise ValueError(f"out must be float32 {shape}, got {out.dtype} {tuple(out.shape)}")
    return out.zero_()


def _accumulate(out: Tensor, sr: Tensor, top: int, wy: Tensor, left: int, wx: Tensor) -> None:
    """out[rows, cols] += sr * outer(wy, wx), where that weight is non-zero (never in place on sr)."""
    ys, xs = torch.nonzero(wy).flatten(), torch.nonzero(wx).flatten()
    y0, y1, x0, x1 = int(ys[0]), int(ys[-1]) + 1, int(xs[0]), int(xs[-1]) + 1
    weight = wy[y0:y1, None] * wx[None, x0:x1]
    sr = sr[:, :, y0:y1, x0:x1].to(out.device, torch.float32)
    out[:, :, top + y0:top + y1, left + x0:left + x1].addcmul_(sr, weight.to(out.device))


def choose_tile(height: int, width: int, overlap: int, limit: int) -> int | None:
    """The tile side (<= limit) that computes the fewest pixels for a height x width image; None when the
    whole image fits in one tile.

    Neighbouring tiles share 2*overlap + ramp pixels, computed twice; how many pixels that wastes depends on how
    the tile count divides the image, so every side is tried (a 1000-pixel axis with overlap 16 and limit 384
    gets 3 tiles of 366, not 3 of 384 or 4 of 288).
    """
    if height <= limit and width <= limit:
        return None
    lowest = min(limit, max(_TILE_RANGE[0], 2 * overlap + 8))
    best, best_cost = limit, math.inf
    for side in range(lowest, limit + 1):
        cost = _computed(height, side, overlap) * _computed(width, side, overlap)
        if cost < best_cost:
            best, best_cost = side, cost
    return best


def _computed(length: int, tile: int, overlap: int) -> int:
    """Pixels computed along one axis: tile count x tile length (the count _spans makes)."""
    if length <= tile:
        return length
    stride = tile - 2 * overlap - _ramp(tile, overlap)
    return (math.ceil((length - tile) / stride) + 1) * tile


def auto_tile_size(model_channels: int, scale: int, *, available_bytes: int | None = None) -> int:
    """A tile size (LR pixels per side) that should fit in memory, from a rough per-pixel estimate.

    Estimate: 4 bytes * model_channels * (4 live LR-size maps + scale**2 HR-size maps) per LR pixel, within
    a quarter of `available_bytes` (default: MemAvailable from /proc/meminfo; FALLBACK_TILE when unknown).
    Rounded down to a multiple of 8 and kept within 64..2048.
    """
    if available_bytes is None:
        available_bytes = _memory_available()
        if available_bytes is None:
            log.info("free memory unknown; using tile size %d", FALLBACK_TILE)
            return FALLBACK_TILE
    per_pixel = 4 * max(1, model_channels) * (_LIVE_MAPS + scale**2)
    side = math.isqrt(max(0, int(available_bytes * _MEMORY_SHARE)) // per_pixel)
    return max(_TILE_RANGE[0], min(_TILE_RANGE[1], side // 8 * 8))


def _memory_available(meminfo: Path = Path("/proc/meminfo")) -> int | None:
    try:
        for line in meminfo.read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        return None
    return None
