"""PSNR and SSIM that reproduce BasicSR's numpy `calculate_psnr` / `calculate_ssim`.

Both work on the 0..255 scale in float64, after cropping `crop_border` pixels from every edge, on RGB or
on MATLAB's Y channel. SSIM uses the 11x11 Gaussian window (sigma 1.5), keeps only the 'valid' region and
averages over channels.
Matches: XPixelGroup/BasicSR:basicsr/metrics/psnr_ssim.py, basicsr/metrics/metric_util.py.

BasicSR is fed uint8 images. A float tensor that holds uint8/255 values is recognised (every value within
1e-4 of the 1/255 grid) and snapped back onto the grid, and its Y channel is then computed with BasicSR's
exact float32 steps, so the numbers agree to ~1e-12. Other inputs are used as they are, in float64.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.ndimage import correlate1d
from torch import Tensor

from perceptsr.errors import InputError
from perceptsr.io.color import RGB_TO_YCBCR, bgr_to_y_numpy

_GRID_TOLERANCE = 1e-4  # on the 0..255 scale; float32 storage of k/255 is off by < 1e-5
_SSIM_SIZE, _SSIM_SIGMA = 11, 1.5
_C1, _C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def _to_hwc255(x: Tensor, name: str) -> np.ndarray:
    """(C,H,W) or (1,C,H,W) tensor in [0,1], C in {1,3} -> float64 HWC array on the 0..255 scale."""
    if not isinstance(x, Tensor):
        raise InputError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise InputError(f"{name} must hold one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim != 3 or x.shape[0] not in (1, 3):
        raise InputError(f"{name} must be (3,H,W), (1,3,H,W) or single-channel, got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise InputError(f"{name} must be a float tensor in [0,1], got {x.dtype}")
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    # Plain numpy from here: tiny torch ops are slow on a busy machine (thread-pool wake-ups).
    v = x.detach().cpu().numpy().transpose(1, 2, 0).astype(np.float64) * 255.0
    if not np.isfinite(v).all():
        raise InputError(f"{name} contains NaN or infinite values")
    return v


def _snap(v: np.ndarray) -> tuple[np.ndarray, bool]:
    """Snap values that sit on the uint8 grid back onto it exactly; report whether they did."""
    r = np.rint(v)
    on_grid = v.size > 0 and float(np.max(np.abs(v - r))) <= _GRID_TOLERANCE
    return (r, True) if on_grid else (v, False)


def _luma(v: np.ndarray, on_grid: bool) -> np.ndarray:
    """Y on the 0..255 scale (H, W, 1): BasicSR's float32 steps for uint8 data, plain float64 otherwise."""
    if on_grid:
        return bgr_to_y_numpy(v[..., ::-1])[..., None].astype(np.float64)
    return (v / 255.0 @ RGB_TO_YCBCR[0] + 16.0)[..., None]


def _prepare(sr: Tensor, hr: Tensor, crop_border: int, y_channel: bool) -> tuple[np.ndarray, np.ndarray]:
    """Validate, crop and (optionally) take Y: two float64 HWC arrays on the 0..255 scale."""
    a, b = _to_hwc255(sr, "sr"), _to_hwc255(hr, "hr")
    if a.shape != b.shape:
        raise InputError(f"sr and hr differ in shape: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise InputError(f"crop_border must be an integer >= 0, got {crop_border!r}")
    h, w = a.shape[:2]
    if 2 * crop_border >= min(h, w):
        raise InputError(f"crop_border {crop_border} leaves nothing of a {h}x{w} image")
    if crop_border:
        a = a[crop_border:-crop_border, crop_border:-crop_border]
        b = b[crop_border:-crop_border, crop_border:-crop_border]
    out = []
    for v in (a, b):
        v, on_grid = _snap(v)
        out.append(_luma(v, on_grid) if y_channel and v.shape[2] == 3 else v)
    return out[0], out[1]


def psnr(sr: Tensor, hr: Tensor, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Peak signal-to-noise ratio in dB on the 0..255 scale; inf for identical images.

    `sr`, `hr`: (3,H,W) or (1,3,H,W) in [0,1] (or single-channel, where `y_channel` does nothing).
    """
    a, b = _prepare(sr, hr, crop_border, y_channel)
    mse = float(np.mean((a - b) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * math.log10(255.0 * 255.0 / mse))


def _gaussian_1d() -> np.ndarray:
    """cv2.getGaussianKernel(11, 1.5) in float64."""
    half = _SSIM_SIZE // 2
    k = np.exp(-(np.arange(-half, half + 1, dtype=np.float64) ** 2) / (2 * _SSIM_SIGMA**2))
    return k / k.sum()


def _blur_valid(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Separable Gaussian filter of each channel of (H, W, C), keeping only the 'valid' region."""
    half = len(k) // 2
    return correlate1d(correlate1d(x, k, axis=0), k, axis=1)[half:-half, half:-half]


def ssim(sr: Tensor, hr: Tensor, *, crop_border: int = 0, y_channel: bool = False) -> float:
    """Structural similarity (Wang et al. 2004, MATLAB-style), averaged over channels; 1 for identical images.

    `sr`, `hr`: (3,H,W) or (1,3,H,W) in [0,1] (or single-channel). The cropped image must be at least 11x11.
    """
    x, y = _prepare(sr, hr, crop_border, y_channel)
    if min(x.shape[:2]) < _SSIM_SIZE:
        raise InputError(
            f"SSIM needs at least {_SSIM_SIZE}x{_SSIM_SIZE} pixels after cropping, got {x.shape[:2]}"
        )
    k = _gaussian_1d()
    mu1, mu2 = _blur_valid(x, k), _blur_valid(y, k)
    mu1_sq, mu2_sq, mu1_mu2 = mu1**2, mu2**2, mu1 * mu2
    sigma1_sq = _blur_valid(x * x, k) - mu1_sq
    sigma2_sq = _blur_valid(y * y, k) - mu2_sq
    sigma12 = _blur_valid(x * y, k) - mu1_mu2
    ssim_map = ((2 * mu1_mu2 + _C1) * (2 * sigma12 + _C2)) / (
        (mu1_sq + mu2_sq + _C1) * (sigma1_sq + sigma2_sq + _C2)
    )
    return float(ssim_map.mean(axis=(0, 1)).mean())
