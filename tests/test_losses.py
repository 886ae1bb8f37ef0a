"""Pixel, perceptual and adversarial losses, and the WGAN-GP penalty, on hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
from tolerance import assert_paths_close, network_depth
from torch.nn import functional as F  # noqa: N812

from perceptsr.errors import ConfigError
from perceptsr.losses import (
    ADVERSARIAL_KINDS,
    PerceptualLoss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    pixel_loss,
)

REAL = torch.tensor([2.0, 0.5])
FAKE = torch.tensor([-1.0, 0.5])


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_pixel_losses() -> None:
    sr, hr = torch.tensor([1.0, -2.0]), torch.zeros(2)
    assert pixel_loss("l1", sr, hr).item() == pytest.approx(1.5)
    assert pixel_loss("mse", sr, hr).item() == pytest.approx(2.5)
    expected = (math.sqrt(1 + 1e-6) + math.sqrt(4 + 1e-6)) / 2
    assert pixel_loss("charbonnier", sr, hr).item() == pytest.approx(expected, rel=1e-6)
    assert pixel_loss("charbonnier", hr, hr, eps=0.1).item() == pytest.approx(0.1)
    with pytest.raises(ConfigError):
        pixel_loss("l3", sr, hr)


def test_vanilla_with_one_sided_label_smoothing() -> None:
    real, fake = torch.tensor([2.0]), torch.tensor([-1.0])
    # BCE(2, 0.9) = 0.9·softplus(−2) + 0.1·softplus(2); BCE(−1, 0) = softplus(−1)
    expected = 0.9 * softplus(-2) + 0.1 * softplus(2) + softplus(-1)
    assert discriminator_loss("vanilla", real, fake, real_label=0.9).item() == pytest.approx(
        expected, rel=1e-6
    )
    assert discriminator_loss("vanilla", real, fake).item() == pytest.approx(
        softplus(-2) + softplus(-1), rel=1e-6
    )
    assert generator_loss("vanilla", fake).item() == pytest.approx(softplus(1), rel=1e-6)  # −log σ(−1)


def test_lsgan_hinge_wgan_values() -> None:
    assert discriminator_loss("lsgan", REAL, FAKE).item() == pytest.approx((1 + 0.25) / 2 + (1 + 0.25) / 2)
    assert discriminator_loss("lsgan", REAL, FAKE, real_label=0.9).item() == pytest.approx(
        (1.1**2 + 0.4**2) / 2 + 0.625
    )
    assert generator_loss("lsgan", FAKE).item() == pytest.approx((4 + 0.25) / 2)
    assert discriminator_loss("hinge", REAL, FAKE).item() == pytest.approx(0.25 + 0.75)
    assert generator_loss("hinge", FAKE).item() == pytest.approx(0.25)
    assert discriminator_loss("wgan", REAL, FAKE).item() == pytest.approx(-0.25 - 1.25)
    assert generator_loss("wgan", FAKE).item() == pytest.approx(0.25)


def test_ragan_values() -> None:
    rel = [2.25, 0.75]  # real − mean(fake); fake − mean(real) = [−2.25, −0.75]
    d_expected = 0.5 * sum(softplus(-r) for r in rel) / 2 + 0.5 * sum(softplus(-r) for r in rel) / 2
    g_expected = sum(softplus(r) for r in rel) / 2
    assert discriminator_loss("ragan", REAL, FAKE).item() == pytest.approx(d_expected, rel=1e-6)
    assert generator_loss("ragan", FAKE, REAL).item() == pytest.approx(g_expected, rel=1e-6)
    with pytest.raises(ValueError):
        generator_loss("ragan", FAKE)


def test_ragan_generator_does_not_train_through_real() -> None:
    real = REAL.clone().requires_grad_(True)
    fake = FAKE.clone().requires_grad_(True)
    generator_loss("ragan", fake, real).backward()
    assert real.grad is None and fake.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ADVERSARIAL_KINDS)
def test_signs_a_better_discriminator_has_lower_loss(kind: str) -> None:
    good = discriminator_loss(kind, torch.tensor([1.0, 0.9]), torch.tensor([0.0, 0.1]))
    bad = discriminator_loss(kind, torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.5]))
    assert torch.isfinite(good) and torch.isfinite(bad) and good < bad
    fooled = generator_loss(kind, torch.tensor([1.0, 0.9]), torch.tensor([0.0, 0.5]))
    caught = generator_loss(kind, torch.tensor([-3.0, -2.0]), torch.tensor([0.0, 0.5]))
    assert torch.isfinite(fooled) and fooled < caught


def test_label_smoothing_is_refused_where_it_has_no_meaning() -> None:
    for kind in ("hinge", "wgan"):
        with pytest.raises(ConfigError):
            discriminator_loss(kind, REAL, FAKE, real_label=0.9)
    with pytest.raises(ConfigError):
        discriminator_loss("bce", REAL, FAKE)
    with pytest.raises(ConfigError):
        generator_loss("bce", FAKE)


def _linear_critic(norm: float) -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    weight = torch.randn(3 * 4 * 4)
    weight = torch.nn.Parameter(weight / weight.norm() * norm)

    class Critic(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.weight = weight

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.flatten(1) @ self.weight

    return Critic(), weight


def test_gradient_penalty() -> None:
    real, fake = torch.rand(4, 3, 4, 4), torch.rand(4, 3, 4, 4)
    critic, _ = _linear_critic(1.0)
    assert gradient_penalty(critic, real, fake).item() == pytest.approx(0.0, abs=1e-10)
    critic, weight = _linear_critic(3.0)
    penalty = gradient_penalty(critic, real, fake)
    assert penalty.item() == pytest.approx(4.0, rel=1e-5)  # (‖w‖ − 1)² = 2²
    penalty.backward()  # create_graph=True: the penalty trains the critic
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_perceptual_loss_on_random_vgg() -> None:
    torch.manual_seed(0)
    with pytest.warns(UserWarning, match="RANDOM VGG"):
        loss = PerceptualLoss({"conv1_2": 1.0, "relu2_2": 0.5}, allow_random=True)
    hr = torch.rand(1, 3, 16, 16)
    sr = (hr + 0.1 * torch.randn_like(hr)).requires_grad_(True)
    value = loss(sr, hr)
    features_sr, features_hr = loss.extractor(sr), loss.extractor(hr)
    expected = F.l1_loss(features_sr["conv1_2"], features_hr["conv1_2"]) + 0.5 * F.l1_loss(
        features_sr["relu2_2"], features_hr["relu2_2"]
    )
    # sr and hr may go through the VGG as one batch: other kernels, so equal up to rounding at the features' scale
    scale = max(float(f.detach().abs().max()) for f in (*features_sr.values(), *features_hr.values()))
    assert_paths_close(value.detach(), expected.detach(), depth=network_depth(loss.extractor), min_scale=scale,
                       what="perceptual loss vs its formula")
    assert value.item() > 0
    assert loss(hr, hr).item() == 0.0
    value.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in loss.parameters())


def test_perceptual_feature_scale() -> None:
    losses = []
    for scale in (1.0, 1 / 12.75):
        torch.manual_seed(0)  # the same random VGG both times
        with pytest.warns(UserWarning):
            losses.append(
                PerceptualLoss({"relu1_2": 1.0}, criterion="mse", feature_scale=scale, allow_random=True)
            )
    hr, sr = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    plain, scaled = (loss(sr, hr).item() for loss in losses)
    assert plain > 0 and scaled == pytest.approx(plain / 12.75**2, rel=1e-5)
