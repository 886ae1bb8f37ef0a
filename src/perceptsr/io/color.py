"""RGB <-> YCbCr with MATLAB's BT.601 constants (studio range: Y in [16, 235]/255).

This is not OpenCV's JPEG YCrCb. The inverse uses BasicSR's rounded MATLAB constants, so results match the
reference tools to float precision (the round trip is exact to about 1e-7).
Matches: XPixelGroup/BasicSR:basicsr/utils/color_util.py (rgb2ycbcr, ycbcr2rgb, rgb2ycbcr_pt).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from perceptsr.errors import InputError

# Rows: Y, Cb, Cr; columns: R, G, B. Applied to [0,1] RGB, giving YCbCr on the 0..255 scale.
RGB_TO_YCBCR = np.array(
    [[65.481, 128.553, 24.966], [-37.797, -74.203, 112.0], [112.0, -93.786, -18.214]], dtype=np.float64
)
YCBCR_OFFSET = np.array([16.0, 128.0, 128.0])
# Rows: R, G, B; columns: Y, Cb, Cr; applied to 0..255 YCbCr, giving [0,1] RGB. MATLAB's rounded values.
YCBCR_TO_RGB = np.array(
    [[0.00456621, 0.0, 0.00625893], [0.00456621, -0.00153632, -0.00318811], [0.00456621, 0.00791071, 0.0]]
)
RGB_OFFSET = np.array([-222.921, 135.576, -276.836])


def _check(x: Tensor, what: str) -> None:
    if not isinstance(x, Tensor) or x.ndim < 3 or x.shape[-3] != 3 or not x.is_floating_point():
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise InputError(f"{what} needs a float tensor (..., 3, H, W), got {shape}")


def _mix(x: Tensor, matrix: np.ndarray, offset: np.ndarray) -> Tensor:
    """Per pixel: (matrix @ x + offset) / 255 over the channel axis -3, in x's dtype."""
    weight = torch.as_tensor(matrix / 255.0, dtype=x.dtype, device=x.device)
    bias = torch.as_tensor(offset / 255.0, dtype=x.dtype, device=x.device).view(-1, 1, 1)
    return torch.einsum("oc,...chw->...ohw", weight, x) + bias


def rgb_to_ycbcr(x: Tensor) -> Tensor:
    """RGB (..., 3, H, W) in [0,1] -> YCbCr (..., 3, H, W) in [0,1] (Y in [16/255, 235/255])."""
    _check(x, "rgb_to_ycbcr")
    return _mix(x, RGB_TO_YCBCR, YCBCR_OFFSET)


def rgb_to_y(x: Tensor) -> Tensor:
    """RGB (..., 3, H, W) in [0,1] -> MATLAB luma Y (..., 1, H, W) in [16/255, 235/255]."""
    _check(x, "rgb_to_y")
    return _mix(x, RGB_TO_YCBCR[:1], YCBCR_OFFSET[:1])


def ycbcr_to_rgb(x: Tensor) -> Tensor:
    """YCbCr (..., 3, H, W) in [0,1] -> RGB (..., 3, H, W), not clipped."""
    _check(x, "ycbcr_to_rgb")
    return _mix(x, YCBCR_TO_RGB * 255.0 * 255.0, RGB_OFFSET)


def bgr_to_y_numpy(bgr255: np.ndarray) -> np.ndarray:
    """BasicSR's `to_y_channel` on BGR values in 0..255 (H, W, 3): float32 Y on the 0..255 scale, not rounded.

    Kept bit-faithful (float32 /255, float64 dot, float32 cast, float32 *255) so metrics reproduce BasicSR's
    numpy numbers to ~1e-12.
    """
    img = bgr255.astype(np.float32) / np.float32(255.0)
    b, g, r = (img[..., i].astype(np.float64) for i in range(3))
    y = b * RGB_TO_YCBCR[0, 2] + g * RGB_TO_YCBCR[0, 1] + r * RGB_TO_YCBCR[0, 0] + 16.0
    return (y / 255.0).astype(np.float32) * np.float32(255.0)
