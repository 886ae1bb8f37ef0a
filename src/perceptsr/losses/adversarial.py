"""Adversarial losses from discriminator logits, and the WGAN-GP gradient penalty the engine applies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from perceptsr.errors import ConfigError

AdversarialKind = Literal["vanilla", "lsgan", "hinge", "ragan", "wgan"]
ADVERSARIAL_KINDS: tuple[str, ...] = ("vanilla", "lsgan", "hinge", "ragan", "wgan")


def _bce(logits: Tensor, target: float) -> Tensor:
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def discriminator_loss(
    kind: AdversarialKind, real: Tensor, fake: Tensor, *, real_label: float = 1.0
) -> Tensor:
    """Discriminator loss from logits on real (HR) and fake (SR, detached by the caller) images.

    With σ the sigmoid, BCE(z, t) = −t·log σ(z) − (1−t)·log(1−σ(z)), means over the batch, r = `real_label`:
    - vanilla: BCE(real, r) + BCE(fake, 0). r < 1 is one-sided label smoothing (e.g. 0.9).
    - lsgan:   mean((real − r)²) + mean(fake²).
    - hinge:   mean(relu(1 − real)) + mean(relu(1 + fake)).
    - ragan:   relativistic average GAN in ESRGAN's form,
               ½·BCE(real − mean(fake), r) + ½·BCE(fake − mean(real), 0).
    - wgan:    mean(fake) − mean(real) (critic; pair with weight clipping or `gradient_penalty`).
    hinge and wgan have no labels, so `real_label` must stay 1 for them.
    """
    if kind in ("hinge", "wgan") and real_label != 1.0:
        raise ConfigError(f"real_label (label smoothing) does not apply to the {kind} loss; leave it at 1.0")
    if kind == "vanilla":
        return _bce(real, real_label) + _bce(fake, 0.0)
    if kind == "lsgan":
        return (real - real_label).square().mean() + fake.square().mean()
    if kind == "hinge":
        return F.relu(1 - real).mean() + F.relu(1 + fake).mean()
    if kind == "ragan":
        return 0.5 * _bce(real - fake.mean(), real_label) + 0.5 * _bce(fake - real.mean(), 0.0)
    if kind == "wgan":
        return fake.mean() - real.mean()
    raise ConfigError(f"unknown adversarial loss {kind!r}; known: {', '.join(ADVERSARIAL_KINDS)}")


def generator_loss(kind: AdversarialKind, fake: Tensor, real: Tensor | None = None) -> Tensor:
    """Generator's adversarial loss from the discriminator's logits on its SR output.

    - vanilla: BCE(fake, 1) = mean(−log σ(fake)) (the non-saturating form of −log D(G(x))).
    - lsgan:   mean((fake − 1)²).
    - hinge, wgan: −mean(fake).
    - ragan:   ½·BCE(real − mean(fake), 0) + ½·BCE(fake − mean(real), 1); needs the real logits, which are
               detached here (the generator gets gradients only through `fake`).
    """
    if kind == "vanilla":
        return _bce(fake, 1.0)
    if kind == "lsgan":
        return (fake - 1).square().mean()
    if kind in ("hinge", "wgan"):
        return -fake.mean()
    if kind == "ragan":
        if real is None:
            raise ValueError("the ragan generator loss needs the discriminator's logits on real images")
        real = real.detach()
        return 0.5 * _bce(real - fake.mean(), 0.0) + 0.5 * _bce(fake - real.mean(), 1.0)
    raise ConfigError(f"unknown adversarial loss {kind!r}; known: {', '.join(ADVERSARIAL_KINDS)}")


def gradient_penalty(discriminator: Callable[[Tensor], Tensor], real: Tensor, fake: Tensor) -> Tensor:
    """WGAN-GP penalty mean((‖∇_x̂ D(x̂)‖₂ − 1)²) at x̂ = α·real + (1−α)·fake, α ~ U(0,1) per example.

    Built with create_graph=True so the penalty back-propagates into the discriminator. Use a discriminator
    without batch norm (per-example gradients are then well defined); the caller multiplies by λ (10).
    """
    alpha = torch.rand(real.shape[0], *([1] * (real.ndim - 1)), device=real.device, dtype=real.dtype)
    mixed = (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)
    (grad,) = torch.autograd.grad(discriminator(mixed).sum(), mixed, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).square().mean()
