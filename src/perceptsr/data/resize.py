"""MATLAB-compatible bicubic resizing, mod-cropping and the project's one degradation.

`imresize` reproduces MATLAB's `imresize(..., 'bicubic')` as ported by BasicSR: cubic kernel a = -0.5,
width 4, widened by 1/s when downscaling with antialiasing, symmetric border handling, output size ceil(h*s).
Matches: XPixelGroup/BasicSR:basicsr/utils/matlab_functions.py (`imresize`, `calculate_weights_indices`).

Unlike the original, which loops over output pixels and pads by copying, each axis is a sparse banded
(out x in) weight matrix with the symmetric padding folded into its column indices. It is applied as a few
dense matmuls over output blocks, so large images are fast, and tiny inputs (where the original's padding
raises) just work.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from numbers import Real
from typing import TypeVar

import numpy as np
import torch
from torch import Tensor

from perceptsr.errors import InputError

ArrayOrTensor = TypeVar("ArrayOrTensor", Tensor, np.ndarray)

_KERNEL_WIDTH = 4.0
_BLOCK_TARGET = 32  # about this many input pixels per output block: a balance of matmul waste and loop count


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic kernel with a = -0.5 (MATLAB's `cubic`)."""
    ax = np.abs(x)
    ax2, ax3 = ax**2, ax**3
    inner = (1.5 * ax3 - 2.5 * ax2 + 1.0) * (ax <= 1)
    outer = (-0.5 * ax3 + 2.5 * ax2 - 4.0 * ax + 2.0) * ((ax > 1) & (ax <= 2))
    return inner + outer


def _fold_symmetric(index: np.ndarray, length: int) -> np.ndarray:
    """Map 0-based indices outside [0, length) back inside by symmetric (edge-repeating) reflection."""
    period = 2 * length
    m = np.mod(index, period)
    return np.where(m >= length, period - 1 - m, m)


def _taps(in_len: int, out_len: int, scale: float, antialiasing: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per output pixel: folded input indices and weights, both (out_len, taps), in float64."""
    widen = scale < 1 and antialiasing
    kernel_width = _KERNEL_WIDTH / scale if widen else _KERNEL_WIDTH
    if kernel_width > 16 * (in_len + 4):  # the kernel would wrap around the image dozens of times
        raise InputError(f"scale {scale:.3g} is too small for a side of {in_len} pixels")
    x = np.arange(1, out_len + 1, dtype=np.float64)
    u = x / scale + 0.5 * (1 - 1 / scale)  # 1-based input coordinate of each output pixel centre
    left = np.floor(u - kernel_width / 2)
    p = math.ceil(kernel_width) + 2
    indices = left[:, None] + np.arange(p, dtype=np.float64)[None, :]
    distance = u[:, None] - indices
    weights = scale * _cubic(distance * scale) if widen else _cubic(distance)
    weights = weights / weights.sum(axis=1, keepdims=True)
    # As the original: drop the first/last tap column if it holds zeros (always so in exact arithmetic).
    zeros = (weights == 0).sum(axis=0)
    if zeros[0] > 0:
        indices, weights = indices[:, 1:], weights[:, 1:]
    if zeros[-1] > 0:
        indices, weights = indices[:, :-1], weights[:, :-1]
    folded = _fold_symmetric(indices.astype(np.int64) - 1, in_len)
    return folded, weights


@dataclass(frozen=True)
class _Block:
    """Output rows [start, stop) read input rows [lo, hi) through the dense (stop-start, hi-lo) matrix."""

    start: int
    stop: int
    lo: int
    hi: int
    matrix: np.ndarray


@lru_cache(maxsize=64)
def _plan(in_len: int, out_len: int, scale: float, antialiasing: bool) -> tuple[_Block, ...]:
    """Banded weight matrix of one axis, cut into output blocks (float64, cached)."""
    index, weight = _taps(in_len, out_len, scale, antialiasing)
    taps = index.shape[1]
    step = max(1, min(out_len, round(max(_BLOCK_TARGET - taps, taps) * scale)))
    blocks = []
    for start in range(0, out_len, step):
        stop = min(out_len, start + step)
        idx = index[start:stop]
        lo, hi = int(idx.min()), int(idx.max()) + 1
        matrix = np.zeros((stop - start, hi - lo))
        rows = np.broadcast_to(np.arange(stop - start)[:, None], idx.shape)
        np.add.at(matrix, (rows, idx - lo), weight[start:stop])  # folded taps can land on the same pixel
        blocks.append(_Block(start, stop, lo, hi, matrix))
    return tuple(blocks)


@lru_cache(maxsize=64)
def _torch_plan(
    in_len: int, out_len: int, scale: float, antialiasing: bool, dtype: torch.dtype, device: torch.device
) -> tuple[tuple[int, int, int, int, Tensor], ...]:
    """`_plan` as (start, stop, lo, hi, matrix) with the matrices in the image's dtype and device.

    Built outside inference mode: a cached matrix first made under `torch.inference_mode()` would be an inference
    tensor, which autograd refuses to save when a later caller resizes with gradients.
    """
    with torch.inference_mode(False):
        return tuple(
            (b.start, b.stop, b.lo, b.hi, torch.as_tensor(b.matrix, dtype=dtype, device=device))
            for b in _plan(in_len, out_len, scale, antialiasing)
        )


def _resize_axis(x: Tensor, dim: int, out_len: int, scale: float, antialiasing: bool) -> Tensor:
    """Resize the (N, H, W) tensor `x` along dim -2 (H) or -1 (W)."""
    blocks = _torch_plan(x.shape[dim], out_len, scale, antialiasing, x.dtype, x.device)
    shape = list(x.shape)
    shape[dim] = out_len
    out = x.new_empty(shape)
    if x.requires_grad and torch.is_grad_enabled():
        for start, stop, lo, hi, matrix in blocks:
            if dim == -2:
                out[:, start:stop, :] = torch.matmul(matrix, x[:, lo:hi, :])
            else:
                out[:, :, start:stop] = torch.matmul(x[:, :, lo:hi], matrix.T)
        return out
    # Without autograd, write each block straight into the output (no temporaries): about 2x faster.
    for x_n, out_n in zip(x, out, strict=True):
        for start, stop, lo, hi, matrix in blocks:
            if dim == -2:
                torch.mm(matrix, x_n[lo:hi], out=out_n[start:stop])
            else:
                torch.mm(x_n[:, lo:hi], matrix.T, out=out_n[:, start:stop])
    return out


def _check_scale(value: float, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value <= 0:
        raise InputError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def _axis_targets(
    in_hw: tuple[int, int], scale: float | None, size: tuple[int, int] | None
) -> tuple[tuple[int, float], tuple[int, float]]:
    """(out_len, scale) for H and W. With `size`, each axis uses scale = out/in, as MATLAB does."""
    if (scale is None) == (size is None):
        raise InputError("imresize needs exactly one of scale or size")
    if scale is not None:
        s = _check_scale(scale, "imresize scale")
        outs = tuple(math.ceil(n * s) for n in in_hw)
        if min(outs) < 1:
            raise InputError(f"imresize scale {scale} gives an empty output for an input of {in_hw}")
        return (outs[0], s), (outs[1], s)
    if len(size) != 2 or any(
        isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in size
    ):
        raise InputError(f"imresize size must be two integers >= 1 (height, width), got {size!r}")
    return (int(size[0]), size[0] / in_hw[0]), (int(size[1]), size[1] / in_hw[1])


def _resize_nhw(
    x: Tensor, targets: tuple[tuple[int, float], tuple[int, float]], antialiasing: bool
) -> Tensor:
    """Resize a (N, H, W) floating tensor; float16/bfloat16 are computed in float32."""
    work = x if x.dtype in (torch.float32, torch.float64) else x.float()
    (out_h, scale_h), (out_w, scale_w) = targets
    # Resize first along the axis that gives the smaller intermediate image.
    if out_w * x.shape[-2] <= out_h * x.shape[-1]:
        work = _resize_axis(work, -1, out_w, scale_w, antialiasing)
        work = _resize_axis(work, -2, out_h, scale_h, antialiasing)
    else:
        work = _resize_axis(work, -2, out_h, scale_h, antialiasing)
        work = _resize_axis(work, -1, out_w, scale_w, antialiasing)
    return work.to(x.dtype)


def imresize(
    x: ArrayOrTensor,
    scale: float | None = None,
    *,
    size: tuple[int, int] | None = None,
    antialiasing: bool = True,
) -> ArrayOrTensor:
    """MATLAB bicubic resize of a tensor (..., H, W) or a numpy image HWC / HW.

    Give exactly one of `scale` (output ceil(h*scale) x ceil(w*scale)) or `size` = (height, width).
    Values are not clipped (bicubic overshoots [0,1]); the dtype is kept (float32 in float32, float64 in
    float64). Tensors keep autograd. A numpy HWC result is, like BasicSR's, an HWC view of CHW memory
    (not C-contiguous; np.ascontiguousarray it if a consumer needs that).
    """
    if isinstance(x, np.ndarray):
        if x.ndim not in (2, 3) or not np.issubdtype(x.dtype, np.floating):
            raise InputError(f"imresize needs a float numpy image HW or HWC, got {x.dtype} {x.shape}")
        hwc = x[:, :, None] if x.ndim == 2 else x
        chw = torch.from_numpy(np.array(hwc.transpose(2, 0, 1), order="C"))  # a copy: x may be read-only
        out = imresize(chw, scale, size=size, antialiasing=antialiasing).permute(1, 2, 0).numpy()
        return out[:, :, 0] if x.ndim == 2 else out
    if not isinstance(x, Tensor):
        raise InputError(f"imresize needs a torch.Tensor or numpy.ndarray, got {type(x).__name__}")
    if x.ndim < 2 or not x.is_floating_point() or x.shape[-1] < 1 or x.shape[-2] < 1:
        raise InputError(
            f"imresize needs a float tensor (..., H, W) with H, W >= 1, got {x.dtype} {tuple(x.shape)}"
        )
    targets = _axis_targets((x.shape[-2], x.shape[-1]), scale, size)
    lead = x.shape[:-2]
    out = _resize_nhw(x.reshape(-1, x.shape[-2], x.shape[-1]), targets, antialiasing)
    return out.reshape(*lead, out.shape[-2], out.shape[-1])


def _check_int_scale(scale: int) -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise InputError(f"scale must be an integer >= 1, got {scale!r}")
    return int(scale)


def modcrop(x: ArrayOrTensor, scale: int) -> ArrayOrTensor:
    """Crop H and W (bottom/right) down to multiples of `scale`: tensor (..., H, W) or numpy HW / HWC."""
    s = _check_int_scale(scale)
    if isinstance(x, np.ndarray):
        if x.ndim not in (2, 3):
            raise InputError(f"modcrop needs a numpy image HW or HWC, got shape {x.shape}")
        h, w = x.shape[:2]
        return x[: h - h % s, : w - w % s, ...]
    if x.ndim < 2:
        raise InputError(f"modcrop needs a tensor (..., H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    return x[..., : h - h % s, : w - w % s]


def degrade(hr: Tensor, scale: int, *, bit_depth: int | None = 8) -> Tensor:
    """The project's degradation: modcrop, MATLAB bicubic x1/scale, clamp, quantise to 2**bit_depth-1 levels.

    `hr` is (..., C, H, W) float in [0,1]; the result is (..., C, H//scale, W//scale) of the same dtype.
    With bit_depth=None the values are neither clamped nor rounded.
    """
    s = _check_int_scale(scale)
    if not isinstance(hr, Tensor) or hr.ndim < 2:
        raise InputError("degrade needs a tensor (..., C, H, W)")
    if hr.shape[-2] < s or hr.shape[-1] < s:
        raise InputError(f"image {hr.shape[-2]}x{hr.shape[-1]} is smaller than the scale {s}")
    if bit_depth is not None and (
        isinstance(bit_depth, bool) or not isinstance(bit_depth, int) or bit_depth < 1
    ):
        raise InputError(f"bit_depth must be an integer >= 1 or None, got {bit_depth!r}")
    hr = modcrop(hr, s)
    if not hr.is_floating_point():
        raise InputError(f"degrade needs a float image in [0,1], got {hr.dtype}")
    h, w = hr.shape[-2:]
    # Explicit sizes and scale 1/s, as imresize(hr, 1/s) computes them, without ceil() float noise.
    lead = hr.shape[:-2]
    lr = _resize_nhw(hr.reshape(-1, h, w), ((h // s, 1 / s), (w // s, 1 / s)), True)
    lr = lr.reshape(*lead, h // s, w // s)
    if bit_depth is None:
        return lr
    levels = 2**bit_depth - 1
    return torch.round(lr.clamp(0, 1) * levels) / levels
