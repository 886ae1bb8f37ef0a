"""LR-PSNR: how well an SR image agrees with its LR input once it is downscaled again (NTIRE 2021, FxSR Table 1).

One definition, used by every command: PSNR on RGB, no border crop, between the LR image and
`data.resize.degrade(SR, s)`, i.e. the SR downscaled by MATLAB bicubic 1/s and rounded to 8 bit — the same function,
with the same rounding, that makes the LR from the HR. Why rounded: the NTIRE 2021 "Learning the Super-Resolution
Space" toolkit (measure.py) reads SR and ground truth as uint8 and downscales both with a MATLAB-imresize port that
returns uint8, so its SR-side LR is on the 8-bit grid like the LR it is compared with; and only then is an SR that
reproduces its LR exactly scored as perfect (inf dB) rather than as a finite number set by rounding noise.
"""

from __future__ import annotations

from torch import Tensor

from perceptsr.data.resize import degrade
from perceptsr.errors import InputError
from perceptsr.metrics.psnr_ssim import psnr


def lr_psnr(sr: Tensor, lr: Tensor, *, scale: int) -> float:
    """PSNR (dB, RGB, no crop) of `degrade(sr, scale)` (8-bit) against `lr`; inf when they are equal.

    `sr` (1,3,sH,sW) and `lr` (1,3,H,W) in [0,1]; `sr` is mod-cropped to the scale first (as `degrade` does).
    """
    if scale < 2:
        raise InputError(f"LR-PSNR needs a scale of 2 or more, got {scale}")
    down = degrade(sr, scale)
    if down.shape != lr.shape:
        raise InputError(f"LR-PSNR: the SR downscaled x1/{scale} is {tuple(down.shape)}, the LR {tuple(lr.shape)}")
    return psnr(down, lr, crop_border=0, y_channel=False)
