"""SRGAN (Ledig et al., CVPR 2017) with its SRResNet pre-training, and its WGAN / WGAN-GP variants.

Phase `pretrain` trains the generator alone on a pixel loss (the paper's SRResNet-MSE); phase `gan` adds the VGG
content loss and the adversarial term. One-sided label smoothing is `real_label < 1` (Salimans et al. 2016);
virtual batch norm is the discriminator's `norm: virtual`; the WGAN variant is `adversarial: wgan` with an
RMSProp discriminator, `clip_discriminator` and `n_critic` in the gan phase (or `gradient_penalty` for WGAN-GP).
Specification: methods.md §1.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from torch import Tensor, nn

from perceptsr.archs import ARCHS
from perceptsr.archs.discriminators import (
    SRGANDiscriminator,
    SRGANDiscriminatorConfig,
    VGGStyleDiscriminator,
    VGGStyleDiscriminatorConfig,
)
from perceptsr.config import from_dict
from perceptsr.errors import ConfigError
from perceptsr.losses import (
    AdversarialKind,
    PerceptualLoss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    pixel_loss,
)
from perceptsr.methods.base import GENERATOR, Batch, Method, OptimizerConfig, Phase, ScheduleConfig

PixelKind = Literal["l1", "mse", "charbonnier"]
DISCRIMINATORS = {
    "srgan": (SRGANDiscriminator, SRGANDiscriminatorConfig),
    "vggstyle": (VGGStyleDiscriminator, VGGStyleDiscriminatorConfig),
}


def _paper_phases() -> dict[str, Phase]:
    """SRResNet: 1e6 iterations at 1e-4; SRGAN: 1e5 at 1e-4 then 1e5 at 1e-5 (§1.1), Adam beta1 0.9."""
    adam = OptimizerConfig(learning_rate=1e-4, betas=(0.9, 0.999))
    return {
        "pretrain": Phase(iterations=1_000_000, trains=(GENERATOR,), generator_optimizer=adam),
        "gan": Phase(
            iterations=200_000, trains=(GENERATOR, "image"), generator_optimizer=adam, discriminator_optimizer=adam,
            schedule=ScheduleConfig(kind="multistep", milestones=(100_000,), gamma=0.1),
        ),
    }


@dataclass(frozen=True)
class SRGANConfig:
    """SRGAN settings; defaults are the paper's (VGG54 post-ReLU / 12.75 on Caffe-style input, 1e-3 adversarial)."""

    arch: Literal["srresnet", "msrresnet"] = "srresnet"
    generator: dict[str, Any] = field(default_factory=lambda: {"scale": 4})
    discriminator_arch: Literal["srgan", "vggstyle"] = "srgan"
    discriminator: dict[str, Any] = field(default_factory=dict)
    pretrain_loss: PixelKind = "mse"
    pixel_loss: PixelKind = "mse"
    pixel_weight: float = 0.0
    content_layers: dict[str, float] = field(default_factory=lambda: {"relu5_4": 1.0})
    content_criterion: Literal["l1", "mse"] = "mse"
    content_normalize: Literal["imagenet", "caffe"] = "caffe"
    content_scale: float = 1 / 12.75
    adversarial: AdversarialKind = "vanilla"
    adversarial_weight: float = 1e-3
    real_label: float = 1.0
    vgg_weights: str | None = None
    allow_random_vgg: bool = False
    phases: dict[str, Phase] = field(default_factory=_paper_phases)

    def __post_init__(self) -> None:
        from_dict(ARCHS[self.arch].config, self.generator, "model.generator")
        from_dict(DISCRIMINATORS[self.discriminator_arch][1], self.discriminator, "model.discriminator")
        if set(self.phases) != {"pretrain", "gan"}:
            raise ConfigError(f"srgan has phases pretrain and gan, got {sorted(self.phases)}")
        if not 0.0 < self.real_label <= 1.0:
            raise ConfigError(f"model.real_label must be in (0, 1], got {self.real_label}")


class SRGAN(Method):
    """SRResNet/MSRResNet generator + SRGAN or VGG-style discriminator `image`."""

    def __init__(self, config: SRGANConfig) -> None:
        arch = ARCHS[config.arch]
        d_module, d_config = DISCRIMINATORS[config.discriminator_arch]
        super().__init__(
            arch.module(from_dict(arch.config, config.generator)),
            image=d_module(from_dict(d_config, config.discriminator)),
        )
        self.config = config
        gan = config.phases["gan"]
        self.content: nn.Module | None = None
        if gan.iterations > 0 and config.content_layers:
            self.content = PerceptualLoss(
                config.content_layers, criterion=config.content_criterion, normalize=config.content_normalize,
                feature_scale=config.content_scale, weights=config.vgg_weights, allow_random=config.allow_random_vgg,
            )

    def on_train_start(self, batch: Batch) -> None:
        image = self.discriminators["image"]
        size = getattr(image.config, "input_size", None)
        if size and getattr(image.config, "head", "dense") == "dense" and batch.hr.shape[-1] != size:
            raise ConfigError(
                f"the discriminator's dense head needs {size}x{size} HR patches but data.patch_size gives "
                f"{batch.hr.shape[-1]}; set data.patch_size={size} or model.discriminator.head=conv"
            )
        if getattr(image.config, "norm", None) == "virtual":
            image.set_reference(batch.hr)

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        if phase == "pretrain":
            return {self.config.pretrain_loss: pixel_loss(self.config.pretrain_loss, sr, batch.hr)}
        cfg, image = self.config, self.discriminators["image"]
        terms = {}
        if cfg.pixel_weight:
            terms["pixel"] = cfg.pixel_weight * pixel_loss(cfg.pixel_loss, sr, batch.hr)
        if self.content is not None:
            terms["content"] = self.content(sr, batch.hr)
        real = image(batch.hr).detach() if cfg.adversarial == "ragan" else None
        terms["adversarial"] = cfg.adversarial_weight * generator_loss(cfg.adversarial, image(sr), real)
        return terms

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        image = self.discriminators["image"]
        terms = {"adversarial": discriminator_loss(
            self.config.adversarial, image(batch.hr), image(sr), real_label=self.config.real_label)}
        weight = self.phases[phase].gradient_penalty
        if weight:
            terms["gradient_penalty"] = weight * gradient_penalty(image, batch.hr, sr)
        return terms
