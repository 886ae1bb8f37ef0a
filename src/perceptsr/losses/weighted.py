"""Loss terms with a weight that is a float, a per-sample N×1×1×1 or a per-pixel N×1×h×w tensor.

FxSR's t varies per sample or per pixel, so its loss weights do. A map is resized to each term's grid (bilinear,
antialiased) and the term becomes the weighted mean mean_{n,c,y,x}(w_n(y,x)·e), which equals w·mean(e) when w is
constant. The adversarial term has one logit per image, so it takes the per-sample mean of the map.
Specification: methods.md §0.6, §4.3-4.4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from perceptsr.losses.adversarial import generator_loss

Weight = float | Tensor


@dataclass
class LossWeights:
    """Weights of the relativistic objective's terms (ESRGAN's, and FxSR's as functions of t)."""

    pixel: Weight
    perceptual: dict[str, Weight]
    adversarial: Weight


def fit_weight(weight: Weight, size: Sequence[int]) -> Weight:
    """A weight map resized to `size` (bilinear, antialiased); floats, scalars and N×1×1×1 weights pass unchanged."""
    if not isinstance(weight, Tensor) or weight.dim() < 4 or tuple(weight.shape[-2:]) in ((1, 1), tuple(size)):
        return weight
    return F.interpolate(weight, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def weighted_mean(elementwise: Tensor, weight: Weight) -> Tensor:
    """mean(w·e) over N, C, H, W, with w broadcast over channels; = w·mean(e) for a constant w."""
    if not isinstance(weight, Tensor):
        return weight * elementwise.mean()
    return (fit_weight(weight, elementwise.shape[-2:]) * elementwise).mean()


def weighted_l1(a: Tensor, b: Tensor, weight: Weight) -> Tensor:
    """mean(w·|a − b|); = w·mean|a − b| for a constant w."""
    return weighted_mean((a - b).abs(), weight)


def weighted_ragan(fake: Tensor, real: Tensor, weight: Weight) -> Tensor:
    """The generator's RaGAN loss (losses.generator_loss "ragan") with a per-sample weight w_n.

    mean_n w_n·(½·BCE(real_n − mean(fake), 0) + ½·BCE(fake_n − mean(real), 1)); real logits are detached.
    """
    if not isinstance(weight, Tensor) or weight.dim() < 4:
        return weight * generator_loss("ragan", fake, real)
    real = real.detach()
    per_sample = weight.to(fake.dtype).mean(dim=(1, 2, 3)).view(-1, 1)

    def bce(logits: Tensor, target: float) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target), reduction="none")

    loss = 0.5 * bce(real - fake.mean(), 0.0) + 0.5 * bce(fake - real.mean(), 1.0)
    return (per_sample * loss).mean()


def relativistic_terms(sr: Tensor, hr: Tensor, discriminator: nn.Module, perceptual: nn.Module | None,
                       weights: LossWeights) -> dict[str, Tensor]:
    """ESRGAN's generator objective (FxSR's too): L1 pixel + perceptual (pre-ReLU VGG, L1) + RaGAN, as named terms."""
    terms = {"pixel": weighted_l1(sr, hr, weights.pixel)}
    if perceptual is not None and weights.perceptual:
        terms["perceptual"] = perceptual(sr, hr, weights.perceptual)
    terms["adversarial"] = weighted_ragan(discriminator(sr), discriminator(hr), weights.adversarial)
    return terms
