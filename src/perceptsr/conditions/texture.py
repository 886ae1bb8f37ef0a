"""Where an image is textured (its structure tensor), and a gate that lets regions in by a strength.

One rule serves two places. fxsr_nat's `region` target lets a teacher's detail into a region once that detail's
local RMS passes threshold·(1 − s)/s at share s (methods/fxsr_nat.py), and fxsr_msrresnet's `texture_gate` turns
a t into a per-pixel t by the LR's own texture (`texture_strength`) the same way (archs/fxsr_msrresnet.py): at
s = 1 everything is in, at s = 0 nothing, and as s grows the most textured regions enter first, whole.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from perceptsr.io.images import LUMA_WEIGHTS


def gaussian_blur(x: Tensor, sigma: float, *, padding: str = "replicate") -> Tensor:
    """`x` (N×C×H×W) blurred per channel by a separable Gaussian of `sigma` pixels (radius 3 sigma).

    `replicate` padding works for any size; `reflect` needs more than the radius in each dimension.
    """
    radius = max(1, round(3 * sigma))
    taps = torch.exp(-torch.arange(-radius, radius + 1, dtype=x.dtype, device=x.device) ** 2 / (2 * sigma**2))
    taps = taps / taps.sum()
    n, c, h, w = x.shape
    x = x.reshape(n * c, 1, h, w)  # every channel through one 1-channel kernel (a fixed weight shape for ONNX)
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode=padding), taps.view(1, 1, 1, -1))
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode=padding), taps.view(1, 1, -1, 1))
    return x.reshape(n, c, h, w)


def region_gate(rms: Tensor, share: Tensor | float, threshold: float) -> Tensor:
    """1 where `rms` is above threshold·(1 − share)/share, 0 half the threshold below, a linear ramp between.

    Share 1 lets everything in (rms >= 0), share 0 nothing; written without dividing by the share.
    """
    share = torch.as_tensor(share, dtype=rms.dtype, device=rms.device)
    ramp = threshold / 2
    return ((share * (rms + ramp) - threshold * (1 - share)) / (share * ramp).clamp(min=1e-12)).clamp(0, 1)


def texture_strength(image: Tensor, sigma: float = 1.5) -> Tensor:
    """N×1×H×W: the square root of the smaller eigenvalue of the structure tensor of `image`'s luma (BT.601;
    central-difference gradients, averaged over a Gaussian window of `sigma` pixels).

    Large where the gradients in the window point many ways (texture: foliage, fur, gravel), small on flat
    regions and along a straight edge, whose gradients all point one way; a high-pass RMS would also pick the
    edges, where a perceptual model's additions are halos rather than texture.
    """
    luma = (image * torch.tensor(LUMA_WEIGHTS, dtype=image.dtype, device=image.device).view(1, 3, 1, 1)).sum(
        dim=1, keepdim=True)
    padded = F.pad(luma, (1, 1, 1, 1), mode="replicate")
    gx = (padded[..., 1:-1, 2:] - padded[..., 1:-1, :-2]) / 2
    gy = (padded[..., 2:, 1:-1] - padded[..., :-2, 1:-1]) / 2
    tensor = gaussian_blur(torch.cat([gx * gx, gy * gy, gx * gy], dim=1), sigma)
    xx, yy, xy = tensor[:, :1], tensor[:, 1:2], tensor[:, 2:]
    smaller = (xx + yy - ((xx - yy) ** 2 + 4 * xy**2).sqrt()) / 2
    return smaller.clamp(min=0).sqrt()


def texture_gated_t(t: Tensor, lr: Tensor, threshold: float) -> Tensor:
    """t (N×1×h×w or N×1×1×1) as a per-pixel map at lr's size: region_gate(texture_strength(lr), t, threshold).

    Computed in float32 whatever the autocast, so the gate does not move with the precision; returned in t's dtype.
    """
    with torch.autocast(lr.device.type, enabled=False):
        gated = region_gate(texture_strength(lr.float()), t.float(), threshold)
    return gated.to(t.dtype)
