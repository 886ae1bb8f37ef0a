"""SRGAN (Ledig et al., CVPR 2017) with its SRResNet pre-training, and its WGAN / WGAN-GP variants.

Phase `pretrain` trains the generator alone on a pixel loss (the paper's SRResNet-MSE); phase `gan` adds the VGG
content loss and the adversarial term. One-sided label smoothing is `real_label < 1` (Salimans et al. 2016);
virtual batch norm is the discriminator's `norm: virtual`; the WGAN variant is `adversarial: wgan` with an
RMSProp discriminator, `clip_discriminator` and `n_critic` in the gan phase (or `gradient_penalty` for WGAN-GP,
which the engine applies). Specification: methods.md §1.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor

from perceptsr.archs import ARCHS
from perceptsr.archs.discriminators import (
    IMAGE_DISCRIMINATORS,
    SRGANDiscriminatorConfig,
    VGGStyleDiscriminatorConfig,
)
from perceptsr.archs.srresnet import MSRResNetConfig, SRResNetConfig
from perceptsr.config import require
from perceptsr.losses import (
    AdversarialKind,
    PerceptualLoss,
    PixelKind,
    discriminator_loss,
    fidelity_terms,
    generator_loss,
    pixel_loss,
)
from perceptsr.methods.base import GENERATOR, Batch, Method, OptimizerConfig, Phase, ScheduleConfig, check_patch_size

GENERATORS = ("srresnet", "msrresnet")


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
    """SRGAN settings; defaults are the paper's (VGG54 post-ReLU / 12.75 on Caffe-style input, 1e-3 adversarial).

    `generator` is the config of `arch`, `discriminator` that of `discriminator_arch` (see `field_types`).
    """

    arch: Literal["srresnet", "msrresnet"] = "srresnet"
    generator: SRResNetConfig | MSRResNetConfig = field(default_factory=SRResNetConfig)
    discriminator_arch: Literal["srgan", "vggstyle"] = "srgan"
    discriminator: SRGANDiscriminatorConfig | VGGStyleDiscriminatorConfig = field(
        default_factory=SRGANDiscriminatorConfig)
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

    @staticmethod
    def field_types(data: Mapping[str, Any]) -> dict[str, type]:
        """The generator's config type follows `arch`, the discriminator's `discriminator_arch`."""
        arch, disc = str(data.get("arch", "srresnet")), str(data.get("discriminator_arch", "srgan"))
        types = {"generator": ARCHS[arch].config} if arch in GENERATORS else {}
        return types | ({"discriminator": IMAGE_DISCRIMINATORS[disc][1]} if disc in IMAGE_DISCRIMINATORS else {})

    def __post_init__(self) -> None:
        require(isinstance(self.generator, ARCHS[self.arch].config), "generator", f"is not a {self.arch} config")
        require(isinstance(self.discriminator, IMAGE_DISCRIMINATORS[self.discriminator_arch][1]), "discriminator",
                f"is not a {self.discriminator_arch} discriminator config")
        require(set(self.phases) == {"pretrain", "gan"}, "phases",
                f"srgan has pretrain and gan, got {sorted(self.phases)}")
        require(0.0 < self.real_label <= 1.0, "real_label", f"must be in (0, 1], got {self.real_label}")


class SRGAN(Method):
    """SRResNet/MSRResNet generator + SRGAN or VGG-style discriminator `image`."""

    def __init__(self, config: SRGANConfig) -> None:
        generator = self.make_generator(config)
        discriminator = IMAGE_DISCRIMINATORS[config.discriminator_arch][0]
        super().__init__(config, generator, image=discriminator(config.discriminator))
        self.content: PerceptualLoss | None = None

    def build_losses(self) -> None:
        cfg = self.config
        if self.runs("gan") and cfg.content_layers:
            self.content = PerceptualLoss(
                cfg.content_layers, criterion=cfg.content_criterion, normalize=cfg.content_normalize,
                feature_scale=cfg.content_scale, weights=cfg.vgg_weights, allow_random=cfg.allow_random_vgg,
            )

    def on_train_start(self, batch: Batch, dataset: torch.utils.data.Dataset) -> None:
        if not self.trains("image"):
            return
        image = self.discriminators["image"]
        dense = getattr(image.config, "head", "dense") == "dense"
        check_patch_size(batch, image.config.input_size if dense else None, "image",
                         f"set data.patch_size={image.config.input_size} or model.discriminator.head=conv")
        if getattr(image.config, "norm", None) == "virtual":
            image.set_reference(batch.hr)

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        if phase == "pretrain":
            return {self.config.pretrain_loss: pixel_loss(self.config.pretrain_loss, sr, batch.hr)}
        cfg, image = self.config, self.discriminators["image"]
        terms = fidelity_terms(sr, batch.hr, pixel_kind=cfg.pixel_loss, pixel_weight=cfg.pixel_weight,
                               content=self.content)
        real = image(batch.hr).detach() if cfg.adversarial == "ragan" else None
        terms["adversarial"] = cfg.adversarial_weight * generator_loss(cfg.adversarial, image(sr), real)
        return terms

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        image = self.discriminators["image"]
        return {"adversarial": discriminator_loss(
            self.config.adversarial, image(batch.hr), image(sr), real_label=self.config.real_label)}
