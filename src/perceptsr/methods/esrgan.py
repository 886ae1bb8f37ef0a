"""ESRGAN (Wang et al., ECCV-W 2018): RRDBNet + relativistic average GAN + VGG54 (pre-ReLU) + L1.

Phase `pretrain` trains the PSNR model (RRDB_PSNR: L1 only, the paper's 2e-4 halved every 2e5 iterations);
phase `gan` is BasicSR's `train_ESRGAN_x4.yml`: L1 1e-2, VGG conv5_4 L1 ×1, RaGAN 5e-3, Adam 1e-4 β (0.9, 0.99),
MultiStepLR [50k, 100k, 200k, 300k] ×0.5 for 400k iterations, EMA 0.999, VGG-style discriminator on 128² patches.
The objective is `losses.relativistic_terms` (FxSR's too). Specification: methods.md §0.6.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor

from perceptsr.archs.discriminators import VGGStyleDiscriminator, VGGStyleDiscriminatorConfig
from perceptsr.archs.rrdb import RRDBNetConfig
from perceptsr.config import require
from perceptsr.losses import (
    LossWeights,
    PerceptualLoss,
    PixelKind,
    discriminator_loss,
    pixel_loss,
    relativistic_terms,
)
from perceptsr.methods.base import (
    GENERATOR,
    Batch,
    Method,
    OptimizerConfig,
    Phase,
    ScheduleConfig,
    basicsr_gan_phase,
    check_patch_size,
)


def _esrgan_phases() -> dict[str, Phase]:
    psnr = Phase(
        iterations=1_000_000, trains=(GENERATOR,),
        generator_optimizer=OptimizerConfig(learning_rate=2e-4, betas=(0.9, 0.99)),
        schedule=ScheduleConfig(kind="multistep", milestones=(200_000, 400_000, 600_000, 800_000), gamma=0.5),
        ema_decay=0.999,
    )
    return {"pretrain": psnr, "gan": basicsr_gan_phase(ema_decay=0.999)}


@dataclass(frozen=True)
class ESRGANConfig:
    """ESRGAN settings; defaults are BasicSR's ESRGAN x4 recipe (and the paper's PSNR pre-training)."""

    generator: RRDBNetConfig = field(default_factory=RRDBNetConfig)
    discriminator: VGGStyleDiscriminatorConfig = field(default_factory=VGGStyleDiscriminatorConfig)
    pretrain_loss: PixelKind = "l1"
    pixel_weight: float = 1e-2
    perceptual_layers: dict[str, float] = field(default_factory=lambda: {"conv5_4": 1.0})  # VGG54 pre-ReLU
    adversarial_weight: float = 5e-3
    vgg_weights: str | None = None
    allow_random_vgg: bool = False
    phases: dict[str, Phase] = field(default_factory=_esrgan_phases)

    def __post_init__(self) -> None:
        require(set(self.phases) == {"pretrain", "gan"}, "phases",
                f"esrgan has pretrain and gan, got {sorted(self.phases)}")


class ESRGAN(Method):
    """RRDBNet generator + VGG-style discriminator `image`; PSNR pre-training, then the ESRGAN objective."""

    def __init__(self, config: ESRGANConfig) -> None:
        super().__init__(config, self.make_generator(config), image=VGGStyleDiscriminator(config.discriminator))
        self.perceptual: PerceptualLoss | None = None

    def build_losses(self) -> None:
        cfg = self.config
        if self.runs("gan") and cfg.perceptual_layers:
            self.perceptual = PerceptualLoss(cfg.perceptual_layers, weights=cfg.vgg_weights,
                                             allow_random=cfg.allow_random_vgg)

    def on_train_start(self, batch: Batch, dataset: torch.utils.data.Dataset) -> None:
        if self.runs("gan"):
            size = self.config.discriminator.input_size
            check_patch_size(batch, size, "VGG-style", f"set data.patch_size={size}")

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        cfg = self.config
        if phase == "pretrain":
            return {cfg.pretrain_loss: pixel_loss(cfg.pretrain_loss, sr, batch.hr)}
        weights = LossWeights(cfg.pixel_weight, dict(cfg.perceptual_layers), cfg.adversarial_weight)
        return relativistic_terms(sr, batch.hr, self.discriminators["image"], self.perceptual, weights)

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        image = self.discriminators["image"]
        return {"adversarial": discriminator_loss("ragan", image(batch.hr), image(sr))}
