"""Loss terms shared by every method: pixel, adversarial kinds, the WGAN-GP gradient penalty, the one VGG
perceptual loss (`losses.perceptual`) and weighted terms (`losses.weighted`: per-sample or per-pixel weights).

Images are N×3×H×W in [0,1]; discriminator outputs are raw logits (no sigmoid applied). Every function returns
a scalar tensor; the caller weights and sums the terms. Methods compose these; none defines its own.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from perceptsr.errors import ConfigError
from perceptsr.losses.adversarial import (
    ADVERSARIAL_KINDS,
    AdversarialKind,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
)
from perceptsr.losses.perceptual import PerceptualLoss
from perceptsr.losses.weighted import (
    LossWeights,
    Weight,
    fit_weight,
    relativistic_terms,
    weighted_l1,
    weighted_mean,
    weighted_ragan,
)

PixelKind = Literal["l1", "mse", "charbonnier"]
__all__ = ["ADVERSARIAL_KINDS", "AdversarialKind", "LossWeights", "PerceptualLoss", "PixelKind", "Weight",
           "discriminator_loss", "fidelity_terms", "fit_weight", "generator_loss", "gradient_penalty", "lattice_loss",
           "pixel_loss", "weighted_l1", "relativistic_terms", "weighted_mean", "weighted_ragan"]


def pixel_loss(kind: PixelKind, sr: Tensor, hr: Tensor, *, eps: float = 1e-3) -> Tensor:
    """Mean over all elements of |d| ("l1"), d² ("mse") or sqrt(d² + eps²) ("charbonnier"), d = sr − hr."""
    if kind == "l1":
        return F.l1_loss(sr, hr)
    if kind == "mse":
        return F.mse_loss(sr, hr)
    if kind == "charbonnier":
        return torch.sqrt((sr - hr).square() + eps * eps).mean()
    raise ConfigError(f"unknown pixel loss {kind!r}; known: l1, mse, charbonnier")


def fidelity_terms(sr: Tensor, hr: Tensor, *, pixel_kind: PixelKind, pixel_weight: float,
                   content: PerceptualLoss | None) -> dict[str, Tensor]:
    """SRGAN-style terms tying SR to HR: "pixel" (weighted; left out at weight 0) and "content" (if given)."""
    terms = {}
    if pixel_weight:
        terms["pixel"] = pixel_weight * pixel_loss(pixel_kind, sr, hr)
    if content is not None:
        terms["content"] = content(sr, hr)
    return terms


def lattice_loss(sr: Tensor, hr: Tensor, scale: int) -> Tensor:
    """How much of SR − HR repeats with the upsampler's period: mean |m_ab − m| over the scale×scale sampling phases.

    m_ab is the mean of d = sr − hr over the pixels at (y mod scale, x mod scale) = (a, b) of each image and channel,
    m the mean over all of them. The DFT of d at the lattice frequencies (k/scale, l/scale) is a fixed linear map
    of these phase means, so they are exactly the energy `metrics.periodic` measures as lattice artifacts; textures
    average out over a patch, a checkerboard or grid from a sub-pixel upsampler does not. Measured against HR, so
    a periodic structure the ground truth has (a brick wall) costs nothing. Each pixel's gradient has the size of
    L1's, but the same sign across its phase: an adversarial gradient through strided convs or max-pooling (which
    is itself periodic) cannot build a lattice against it.
    """
    n, c, height, width = sr.shape
    height, width = height - height % scale, width - width % scale
    d = (sr - hr)[..., :height, :width].float()
    phases = d.reshape(n, c, height // scale, scale, width // scale, scale).mean(dim=(2, 4))
    return (phases - phases.mean(dim=(2, 3), keepdim=True)).abs().mean()
