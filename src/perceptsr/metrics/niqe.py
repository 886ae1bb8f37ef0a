"""NIQE (Mittal et al. 2013, "Making a completely blind image quality analyzer"), lower is better.

Reproduces BasicSR's `calculate_niqe`, which matches the official MATLAB release to ~1e-5: MATLAB Y (or gray)
channel rounded to integers, 96x96 blocks without overlap, two scales (the second from MATLAB bicubic x0.5),
18 AGGD features per block and scale, and the official pristine model (`assets/niqe_pris_params.npz`).
Matches: XPixelGroup/BasicSR:basicsr/metrics/niqe.py.

The per-block loops of the original are vectorised over blocks; statistics are taken in float64 (the original
uses float32), which can move an AGGD shape estimate by one 0.001 grid cell and NIQE by ~1e-5.
"""

from __future__ import annotations

import logging
import math
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.ndimage import convolve
from scipy.special import gamma
from torch import Tensor

from perceptsr.data.resize import imresize
from perceptsr.errors import InputError
from perceptsr.io.color import bgr_to_y_numpy
from perceptsr.metrics.psnr_ssim import _snap, _to_hwc255

logger = logging.getLogger(__name__)

BLOCK = 96
_PARAMS = Path(__file__).resolve().parents[1] / "assets" / "niqe_pris_params.npz"
_GAM = np.arange(0.2, 10.001, 0.001)  # the AGGD shape grid of the original (9801 values)
_R_GAM = gamma(2 / _GAM) ** 2 / (gamma(1 / _GAM) * gamma(3 / _GAM))  # strictly increasing in _GAM
_SHIFTS = ((0, 1), (1, 0), (1, 1), (1, -1))  # horizontal, vertical and the two diagonal neighbours


@lru_cache(maxsize=1)
def _pristine() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mu (1,36), cov (36,36), gaussian_window (7,7)) of the official pristine model."""
    with np.load(_PARAMS, allow_pickle=False) as z:
        return z["mu_pris_param"], z["cov_pris_param"], z["gaussian_window"]


def _nearest_grid(target: np.ndarray) -> np.ndarray:
    """Index of the _R_GAM value nearest each target, as np.argmin((_R_GAM - t)**2) picks it (0 for NaN)."""
    hi = np.clip(np.searchsorted(_R_GAM, target), 1, len(_R_GAM) - 1)
    lo = hi - 1
    take_hi = (_R_GAM[hi] - target) ** 2 < (_R_GAM[lo] - target) ** 2
    return np.where(np.isnan(target), 0, np.where(take_hi, hi, lo))


def _aggd(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """AGGD (alpha, beta_l, beta_r) for each row of `samples` (n, m) by moment matching (paper Eq. 7)."""
    sq = samples**2
    neg, pos = samples < 0, samples > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        left_std = np.sqrt((sq * neg).sum(axis=1) / neg.sum(axis=1))
        right_std = np.sqrt((sq * pos).sum(axis=1) / pos.sum(axis=1))
        gammahat = left_std / right_std
        rhat = np.abs(samples).mean(axis=1) ** 2 / sq.mean(axis=1)
        rhatnorm = rhat * (gammahat**3 + 1) * (gammahat + 1) / (gammahat**2 + 1) ** 2
        alpha = _GAM[_nearest_grid(rhatnorm)]
        ratio = np.sqrt(gamma(1 / alpha) / gamma(3 / alpha))
    return alpha, left_std * ratio, right_std * ratio


def _block_features(blocks: np.ndarray) -> np.ndarray:
    """The 18 NIQE features of each normalised block in `blocks` (n, b, b) -> (n, 18)."""
    n = blocks.shape[0]
    alpha, beta_l, beta_r = _aggd(blocks.reshape(n, -1))
    feats = [alpha, (beta_l + beta_r) / 2]
    for shift in _SHIFTS:
        # The original rolls each block circularly, so products wrap around inside the block.
        product = blocks * np.roll(blocks, shift, axis=(1, 2))
        alpha, beta_l, beta_r = _aggd(product.reshape(n, -1))
        mean = (beta_r - beta_l) * (gamma(2 / alpha) / gamma(1 / alpha))  # paper Eq. 8
        feats += [alpha, mean, beta_l, beta_r]
    return np.stack(feats, axis=1)


def _scale_features(img: np.ndarray, window: np.ndarray, block: int) -> np.ndarray:
    """Features of all blocks of one scale; `img` (float32, 0..255) is an exact multiple of `block`."""
    mu = convolve(img, window, mode="nearest")  # float32 out, as in the original
    sigma = np.sqrt(np.abs(convolve(np.square(img), window, mode="nearest") - np.square(mu)))
    normalised = ((img - mu) / (sigma + 1)).astype(np.float64)  # paper Eq. 1
    nh, nw = img.shape[0] // block, img.shape[1] // block
    # Block order as the original: column of blocks by column (w outer, h inner).
    blocks = normalised.reshape(nh, block, nw, block).transpose(2, 0, 1, 3).reshape(nh * nw, block, block)
    return _block_features(blocks)


def _quality(img: np.ndarray) -> float:
    """NIQE of a rounded float32 gray/Y image (H, W) on the 0..255 scale."""
    mu_pris, cov_pris, window = _pristine()
    nh, nw = img.shape[0] // BLOCK, img.shape[1] // BLOCK
    img = img[: nh * BLOCK, : nw * BLOCK]
    first = _scale_features(img, window, BLOCK)
    half = imresize(img / np.float32(255.0), 0.5, antialiasing=True) * np.float32(255.0)
    second = _scale_features(half.astype(np.float32), window, BLOCK // 2)
    distparam = np.concatenate([first, second], axis=1)

    valid = distparam[~np.isnan(distparam).any(axis=1)]
    if valid.shape[0] < 2:
        logger.warning("NIQE is undefined here: fewer than two textured 96x96 blocks; returning NaN")
        return float("nan")
    mu_dist = np.nanmean(distparam, axis=0)
    cov_dist = np.cov(valid, rowvar=False)
    invcov = np.linalg.pinv((cov_pris + cov_dist) / 2)  # paper Eq. 10
    diff = mu_pris[0] - mu_dist
    return float(math.sqrt(diff @ invcov @ diff))


def _gray_bgr(bgr255: np.ndarray) -> np.ndarray:
    """OpenCV's float BGR2GRAY of img/255, times 255 (float32), as BasicSR's convert_to='gray'."""
    img = bgr255.astype(np.float32) / np.float32(255.0)
    b, g, r = img[..., 0], img[..., 1], img[..., 2]
    gray = b * np.float32(0.114) + g * np.float32(0.587) + r * np.float32(0.299)
    return gray * np.float32(255.0)


def niqe(img: Tensor, *, crop_border: int = 0, convert_to: str = "y") -> float:
    """No-reference NIQE score (lower = more natural) of one image.

    `img`: (3,H,W) or (1,3,H,W) RGB in [0,1] (single-channel images are used as they are). `convert_to` picks
    MATLAB's Y ("y") or OpenCV gray ("gray"). After cropping `crop_border` pixels per edge the image must hold
    at least two 96x96 blocks. Returns NaN when fewer than two blocks have texture (e.g. a flat image).
    """
    if convert_to not in ("y", "gray"):
        raise InputError(f"convert_to must be 'y' or 'gray', got {convert_to!r}")
    v, _ = _snap(_to_hwc255(img, "img"))
    if v.shape[2] == 3:
        bgr = v[..., ::-1]
        channel = bgr_to_y_numpy(bgr) if convert_to == "y" else _gray_bgr(bgr)
    else:
        channel = v[..., 0].astype(np.float32)
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise InputError(f"crop_border must be an integer >= 0, got {crop_border!r}")
    if crop_border:
        channel = channel[crop_border:-crop_border, crop_border:-crop_border]
    h, w = channel.shape
    if (h // BLOCK) * (w // BLOCK) < 2:
        raise InputError(
            f"NIQE needs at least two {BLOCK}x{BLOCK} blocks, but the image is {h}x{w} "
            f"after crop_border={crop_border}"
        )
    return _quality(np.round(channel))  # rounding matches MATLAB, which works on uint8
