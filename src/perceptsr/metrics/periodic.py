"""Periodic (lattice / checkerboard) artifacts: how much more the SR's spectrum peaks at the sampling lattice than HR's.

A x`s` upsampler that builds each output pixel from one of s*s sub-pixel filters (pixel shuffle, transposed
convolution) leaves, when those filters disagree, a pattern that repeats every s pixels: a checkerboard or a grid. Its
energy sits at the lattice frequencies (ky/s, kx/s) cycles/pixel, ky, kx = 0..s-1 (for x4 that includes x2's 1/2),
where a natural photo has only its smooth, falling spectrum. So the measure is spectral:

1. Luma (MATLAB Y; a single-channel image as it is) on the 0..255 scale, after the protocol's border crop.
2. A Welch power spectrum: half-overlapping T x T tiles, each minus its mean, times a 2-D Hann window, |FFT|^2;
   T = 64 rounded up to a multiple of s. One periodogram of the whole image has every bin fluctuating by ~100%, which
   makes "a peak" a matter of luck; averaging over tiles makes the background smooth. T a multiple of s puts every
   lattice frequency exactly on a bin whatever the image size (non-square and odd sizes change only how many tiles
   there are). Each tile's spectrum is divided by its own median power (plus that of 8-bit rounding noise) before the
   average, so every tile counts alike: a grid shows most, and matters most, in smooth regions, which an unweighted
   average would drown in the power of the textured ones.
3. At each lattice frequency except (0, 0), the ratio r = mean power of the 3x3 bins around it (the Hann main lobe of a
   tone on a bin) over the mean power of the ring of bins 2..5 away (Chebyshev distance), its highest and lowest
   eighth dropped. Trimmed, so that one neighbouring feature does not move it; a mean, not the median, because a
   steeply falling spectrum (a blurred image) has its ring median below the level at the centre and would look peaky.
   A smooth spectrum gives r near 1; a grid gives r >> 1.
4. r is floored at 1 (a dip below the local background is no grid) and averaged over the lattice points, in linear
   terms: a grid concentrated at one frequency (a x2 checkerboard puts everything at (1/2, 1/2)) still shows, as its
   peak less 10 log10(number of points), and a grid with harmonics everywhere counts them all, while the max would
   follow the single largest fluctuation of an image without a grid.

`lattice_artifacts(sr, hr)` = 10 log10 mean_f [max(r_SR(f), 1) / max(r_HR(f), 1)] in dB: 0 when SR is as periodic as
the ground truth (exactly 0 for SR = HR), large positive values for lattice artifacts; lower is better. Comparing
frequency by frequency removes what the photo itself has there (JPEG's 8x8 blocks put peaks at k/8, which includes
1/4, 1/2 and 3/4; regular textures, straight edges along the axes) without letting HR's peak at one lattice frequency
hide SR's at another, as a difference of two image scores would. Blur and non-periodic noise scale or fill the
spectrum smoothly and move it little. `lattice_score(image)` is the no-reference form, the same with a perfectly
smooth reference (r = 1 everywhere): >= 0, near 0 for a natural photo; it is HR's own value for model cards.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from torch import Tensor

from perceptsr.errors import InputError
from perceptsr.io.color import RGB_TO_YCBCR
from perceptsr.metrics.psnr_ssim import _to_hwc255

TILE = 64  # tile side before rounding up to a multiple of the scale: 1/64 cycles/pixel resolution
PEAK_RADIUS = 1  # the peak window: bins within this Chebyshev distance of a lattice frequency
RING_RADIUS = 5  # the background ring: bins PEAK_RADIUS+1 .. RING_RADIUS away


def tile_size(scale: int) -> int:
    """The Welch tile side for `scale`: TILE rounded up to a multiple of the scale, with room between lattice points
    for a peak window and its ring."""
    return scale * max(math.ceil(TILE / scale), RING_RADIUS + PEAK_RADIUS + 1)


def _check_scale(scale: int) -> None:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 2:
        raise InputError(f"lattice artifacts need an integer scale of 2 or more, got {scale!r}")


def _luma(image: Tensor, name: str, crop_border: int) -> np.ndarray:
    """(H, W) float64 luma on the 0..255 scale (Y of RGB, or the single channel), border cropped."""
    v = _to_hwc255(image, name)
    if isinstance(crop_border, bool) or not isinstance(crop_border, (int, np.integer)) or crop_border < 0:
        raise InputError(f"crop_border must be an integer >= 0, got {crop_border!r}")
    if crop_border:
        v = v[crop_border:-crop_border, crop_border:-crop_border]
    return v @ (RGB_TO_YCBCR[0] / 255.0) if v.shape[2] == 3 else v[..., 0]


def _starts(length: int, tile: int) -> np.ndarray:
    """Tile origins along one axis: every tile/2, the last one flush with the end."""
    return np.unique(np.append(np.arange(0, length - tile + 1, tile // 2), length - tile))


def welch_spectrum(y: np.ndarray, tile: int) -> np.ndarray:
    """Mean Hann-windowed power spectrum (tile, tile) of the half-overlapping tiles of `y` (each minus its mean), each
    tile's spectrum divided by its median power plus that of 8-bit rounding noise (so flat tiles are not blown up)."""
    h, w = y.shape
    if min(h, w) < tile:
        raise InputError(f"lattice artifacts need at least {tile}x{tile} pixels after the border crop, got {w}x{h}")
    window = np.hanning(tile + 1)[:-1]  # periodic Hann: a tone on a bin spreads over three bins
    window2d = np.outer(window, window)
    rounding = float((window2d**2).sum()) / 12.0  # power per bin of uniform +-0.5 rounding noise on the 0..255 scale
    tiles = sliding_window_view(y, (tile, tile))
    rows, cols = _starts(h, tile), _starts(w, tile)
    power = np.zeros((tile, tile))
    for row in rows:  # one row of tiles at a time bounds the memory on large images
        block = tiles[row, cols]
        block = (block - block.mean(axis=(1, 2), keepdims=True)) * window2d
        spectra = np.abs(np.fft.fft2(block)) ** 2
        level = np.median(spectra.reshape(len(cols), -1), axis=1) + rounding
        power += (spectra / level[:, None, None]).sum(axis=0)
    return power / (len(rows) * len(cols))


def _offsets(low: int, high: int) -> tuple[np.ndarray, np.ndarray]:
    """(dy, dx) of the bins whose Chebyshev distance from the origin is in low..high."""
    d = np.arange(-high, high + 1)
    dy, dx = np.meshgrid(d, d, indexing="ij")
    keep = (np.maximum(abs(dy), abs(dx)) >= low).ravel()
    return dy.ravel()[keep], dx.ravel()[keep]


def peak_ratios(power: np.ndarray, scale: int) -> np.ndarray:
    """Peak-to-background power ratio r at each lattice frequency (ky/s, kx/s) but (0,0), in row-major order."""
    tile = power.shape[0]
    step = tile // scale
    ky, kx = np.meshgrid(np.arange(scale), np.arange(scale), indexing="ij")
    cy, cx = (ky.ravel() * step)[1:, None], (kx.ravel() * step)[1:, None]  # drop (0, 0)
    floor = 1e-12 * float(power.mean()) + 1e-30  # an image without power anywhere has ratios of 1, not 0/0

    def gather(low: int, high: int) -> np.ndarray:
        dy, dx = _offsets(low, high)
        return power[(cy + dy) % tile, (cx + dx) % tile]  # the spectrum is periodic: windows wrap around

    peak = gather(0, PEAK_RADIUS).mean(axis=1)
    ring = np.sort(gather(PEAK_RADIUS + 1, RING_RADIUS), axis=1)
    trim = ring.shape[1] // 8
    background = ring[:, trim:-trim].mean(axis=1)
    return (peak + floor) / (background + floor)


def lattice_ratios(image: Tensor, *, scale: int, crop_border: int = 0) -> np.ndarray:
    """r at each lattice frequency of the image's luma (steps 1-3 of the module docstring), floored at 1."""
    _check_scale(scale)
    return _floored_ratios(_luma(image, "image", crop_border), scale)


def _floored_ratios(y: np.ndarray, scale: int) -> np.ndarray:
    return np.maximum(peak_ratios(welch_spectrum(y, tile_size(scale)), scale), 1.0)


def lattice_score(image: Tensor, *, scale: int, crop_border: int = 0) -> float:
    """The no-reference form, in dB: 10 log10 of the mean over the x`scale` lattice frequencies of the image's peak
    ratio floored at 1 (see the module docstring). >= 0; near 0 for a smooth spectrum, large with a grid.

    `image`: (3,H,W) or (1,3,H,W) in [0,1], or single-channel; at least tile_size(scale) pixels a side after the crop.
    """
    return float(10.0 * np.log10(lattice_ratios(image, scale=scale, crop_border=crop_border).mean()))


def lattice_artifacts(sr: Tensor, hr: Tensor, *, scale: int, crop_border: int = 0) -> float:
    """How much more SR peaks than HR at the x`scale` sampling lattice, in dB: 10 log10 of the mean over the lattice
    frequencies of SR's peak ratio over HR's (each floored at 1). 0 when SR is as periodic as the ground truth (exactly
    0 when SR equals HR), positive with checkerboard or grid artifacts; lower is better."""
    _check_scale(scale)
    ours, theirs = _luma(sr, "sr", crop_border), _luma(hr, "hr", crop_border)
    if ours.shape != theirs.shape:
        raise InputError(f"sr and hr differ in shape: {tuple(sr.shape)} vs {tuple(hr.shape)}")
    return float(10.0 * np.log10((_floored_ratios(ours, scale) / _floored_ratios(theirs, scale)).mean()))
