"""ESRGAN (Wang et al., ECCV-W 2018): RRDBNet + relativistic average GAN + VGG54 (pre-ReLU) + L1, and the
objective FxSR shares with it.

Phase `pretrain` trains the PSNR model (RRDB_PSNR: L1 only, the paper's 2e-4 halved every 2e5 iterations);
phase `gan` is BasicSR's `train_ESRGAN_x4.yml`: L1 1e-2, VGG conv5_4 L1 ×1, RaGAN 5e-3, Adam 1e-4 β (0.9, 0.99),
MultiStepLR [50k, 100k, 200k, 300k] ×0.5 for 400k iterations, EMA 0.999, VGG-style discriminator on 128² patches.

`ESRGANLoss` is the shared generator objective. Each weight may be a float, a per-sample N×1×1×1 tensor or a
per-pixel N×1×h×w map (FxSR's t varies per sample or per pixel). A map is resized to each term's grid
(bilinear, antialiased) and the term becomes the weighted mean mean_{n,c,y,x}(w_n(y,x)·|a − b|), which equals
w·mean|a − b| when w is constant. The adversarial term has one logit per image, so it takes the per-sample mean
of the map. Specification: methods.md §0.6, §4.3-4.4.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.discriminators import VGGStyleDiscriminator, VGGStyleDiscriminatorConfig
from perceptsr.archs.rrdb import RRDBNet, RRDBNetConfig
from perceptsr.archs.vgg import VGGFeatureExtractor
from perceptsr.config import from_dict
from perceptsr.errors import ConfigError
from perceptsr.losses import PixelKind, discriminator_loss, generator_loss, pixel_loss
from perceptsr.methods.base import GENERATOR, Batch, Method, OptimizerConfig, Phase, ScheduleConfig

Weight = float | Tensor


def gan_phase(*, ema_decay: float) -> Phase:
    """ESRGAN's / SROT's adversarial phase: 400k iterations, Adam 1e-4 β (0.9, 0.99), halved at 50k-300k."""
    adam = OptimizerConfig(learning_rate=1e-4, betas=(0.9, 0.99))
    return Phase(
        iterations=400_000, trains=(GENERATOR, "image"), generator_optimizer=adam, discriminator_optimizer=adam,
        schedule=ScheduleConfig(kind="multistep", milestones=(50_000, 100_000, 200_000, 300_000), gamma=0.5),
        ema_decay=ema_decay,
    )


def _esrgan_phases() -> dict[str, Phase]:
    psnr = Phase(
        iterations=1_000_000, trains=(GENERATOR,),
        generator_optimizer=OptimizerConfig(learning_rate=2e-4, betas=(0.9, 0.99)),
        schedule=ScheduleConfig(kind="multistep", milestones=(200_000, 400_000, 600_000, 800_000), gamma=0.5),
        ema_decay=0.999,
    )
    return {"pretrain": psnr, "gan": gan_phase(ema_decay=0.999)}


def fit_weight(weight: Weight, size: Sequence[int]) -> Weight:
    """A weight map resized to `size` (bilinear, antialiased); floats, scalars and N×1×1×1 weights pass unchanged."""
    if not isinstance(weight, Tensor) or weight.dim() < 4 or tuple(weight.shape[-2:]) in ((1, 1), tuple(size)):
        return weight
    return F.interpolate(weight, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)


def weighted_l1(a: Tensor, b: Tensor, weight: Weight) -> Tensor:
    """mean(w·|a − b|) over N, C, H, W, with w broadcast over channels; = w·mean|a − b| for a constant w."""
    diff = (a - b).abs()
    if not isinstance(weight, Tensor):
        return weight * diff.mean()
    return (fit_weight(weight, diff.shape[-2:]) * diff).mean()


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


@dataclass
class LossWeights:
    """Weights of the generator's terms (floats or tensors, see the module docstring)."""

    pixel: Weight
    perceptual: dict[str, Weight]
    adversarial: Weight


class ESRGANLoss(nn.Module):
    """L1 pixel + Σ_l w_l·L1 on pre-ReLU VGG19 features (ImageNet-normalised input) + RaGAN, as named terms."""

    def __init__(self, layers: Sequence[str], *, vgg_weights: str | None, allow_random: bool) -> None:
        super().__init__()
        self.vgg = (VGGFeatureExtractor(list(layers), normalize="imagenet", weights=vgg_weights,
                                        allow_random=allow_random) if layers else None)

    def generator_terms(self, sr: Tensor, hr: Tensor, discriminator: nn.Module, weights: LossWeights
                        ) -> dict[str, Tensor]:
        terms = {"pixel": weighted_l1(sr, hr, weights.pixel)}
        if self.vgg is not None and weights.perceptual:
            sr_features = self.vgg(sr)
            with torch.no_grad():
                hr_features = self.vgg(hr)
            terms["perceptual"] = sum(
                (weighted_l1(sr_features[name], hr_features[name], w) for name, w in weights.perceptual.items()),
                sr.new_zeros(()),
            )
        terms["adversarial"] = weighted_ragan(discriminator(sr), discriminator(hr), weights.adversarial)
        return terms

    @staticmethod
    def discriminator_terms(discriminator: nn.Module, hr: Tensor, sr: Tensor) -> dict[str, Tensor]:
        return {"adversarial": discriminator_loss("ragan", discriminator(hr), discriminator(sr))}


def check_patch_size(discriminator: VGGStyleDiscriminator, batch: Batch) -> None:
    """The VGG-style discriminator's dense head fixes the HR patch size."""
    size = discriminator.config.input_size
    if batch.hr.shape[-1] != size or batch.hr.shape[-2] != size:
        raise ConfigError(
            f"the VGG-style discriminator takes {size}x{size} HR patches but data.patch_size gives "
            f"{batch.hr.shape[-2]}x{batch.hr.shape[-1]}; set data.patch_size={size}"
        )


@dataclass(frozen=True)
class ESRGANConfig:
    """ESRGAN settings; defaults are BasicSR's ESRGAN x4 recipe (and the paper's PSNR pre-training)."""

    generator: dict[str, Any] = field(default_factory=lambda: {"scale": 4})  # RRDBNetConfig
    discriminator: dict[str, Any] = field(default_factory=dict)  # VGGStyleDiscriminatorConfig
    pretrain_loss: PixelKind = "l1"
    pixel_weight: float = 1e-2
    perceptual_layers: dict[str, float] = field(default_factory=lambda: {"conv5_4": 1.0})  # VGG54 pre-ReLU
    adversarial_weight: float = 5e-3
    vgg_weights: str | None = None
    allow_random_vgg: bool = False
    phases: dict[str, Phase] = field(default_factory=_esrgan_phases)

    def __post_init__(self) -> None:
        from_dict(RRDBNetConfig, self.generator, "model.generator")
        from_dict(VGGStyleDiscriminatorConfig, self.discriminator, "model.discriminator")
        if set(self.phases) != {"pretrain", "gan"}:
            raise ConfigError(f"esrgan has phases pretrain and gan, got {sorted(self.phases)}")


class ESRGAN(Method):
    """RRDBNet generator + VGG-style discriminator `image`; PSNR pre-training, then the ESRGAN objective."""

    def __init__(self, config: ESRGANConfig) -> None:
        super().__init__(
            RRDBNet(from_dict(RRDBNetConfig, config.generator)),
            image=VGGStyleDiscriminator(from_dict(VGGStyleDiscriminatorConfig, config.discriminator)),
        )
        self.config = config
        layers = list(config.perceptual_layers) if config.phases["gan"].iterations > 0 else []
        self.loss = ESRGANLoss(layers, vgg_weights=config.vgg_weights, allow_random=config.allow_random_vgg)

    def on_train_start(self, batch: Batch) -> None:
        if self.config.phases["gan"].iterations > 0:
            check_patch_size(self.discriminators["image"], batch)

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        cfg = self.config
        if phase == "pretrain":
            return {cfg.pretrain_loss: pixel_loss(cfg.pretrain_loss, sr, batch.hr)}
        weights = LossWeights(cfg.pixel_weight, dict(cfg.perceptual_layers), cfg.adversarial_weight)
        return self.loss.generator_terms(sr, batch.hr, self.discriminators["image"], weights)

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        return self.loss.discriminator_terms(self.discriminators["image"], batch.hr, sr)
