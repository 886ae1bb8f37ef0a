"""SRFeat (Park et al., ECCV 2018): MSE pre-training, then perceptual loss + image and feature adversaries.

Phase `pretrain` trains the generator on MSE in its own [-1,1] space (`main_gan_init.py`). Phase `gan` uses
MSE(φ(sr)/12.75, φ(hr)/12.75) on VGG19 relu5_4 (post-ReLU, Caffe BGR input clipped to [0,1]) plus 1e-3·BCE of
each discriminator, whose own losses are also ×1e-3 (`main_gan_train.py`). The release built its GAN-stage
generator with `is_train=False`, so BN uses the pre-trained running statistics there (weights and BN affine
parameters still learn); `freeze_bn` does the same here. The variants are the discriminators the gan phase
trains: [generator, image] = SRFeat_I, [generator, feature] = SRFeat_F, both = SRFeat_IF (the release).
Specification: methods.md §2.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.srfeat import (
    FEATURE_LAYER,
    SRFeatDiscriminatorConfig,
    SRFeatGeneratorConfig,
    feature_discriminator,
    image_discriminator,
)
from perceptsr.config import require
from perceptsr.losses import PerceptualLoss, discriminator_loss, generator_loss
from perceptsr.methods.base import (
    GENERATOR,
    Batch,
    CriticInputs,
    Method,
    OptimizerConfig,
    Phase,
    ScheduleConfig,
    check_patch_size,
)

DISCRIMINATORS = ("image", "feature")

# The release's epochs over ~100k pre-cropped DIV2K patches at batch 9: its loop `range(0, N - 9, 9)` makes
# 11,111 iterations per epoch, and both scripts run epochs 0..n inclusive.
ITERATIONS_PER_EPOCH = 11_111


def _paper_phases() -> dict[str, Phase]:
    """Pre-training: 21 epochs at 1e-4, x0.1 from epoch 17. GAN: 5 epochs at 1e-4, x0.1 at epochs 2 and 4,
    Adam eps 1e-10. Adam beta1 0.9 throughout (`config.py`)."""
    epoch = ITERATIONS_PER_EPOCH
    gan_adam = OptimizerConfig(learning_rate=1e-4, betas=(0.9, 0.999), eps=1e-10)
    return {
        "pretrain": Phase(
            iterations=21 * epoch, trains=(GENERATOR,),
            generator_optimizer=OptimizerConfig(learning_rate=1e-4, betas=(0.9, 0.999)),
            schedule=ScheduleConfig(kind="multistep", milestones=(17 * epoch,), gamma=0.1),
        ),
        "gan": Phase(
            iterations=5 * epoch, trains=(GENERATOR, *DISCRIMINATORS), generator_optimizer=gan_adam,
            discriminator_optimizer=gan_adam,
            schedule=ScheduleConfig(kind="multistep", milestones=(2 * epoch, 4 * epoch), gamma=0.1),
        ),
    }


@dataclass(frozen=True)
class SRFeatConfig:
    """SRFeat settings; defaults are the release's SRFeat_IF."""

    generator: SRFeatGeneratorConfig = field(default_factory=SRFeatGeneratorConfig)
    image_discriminator: SRFeatDiscriminatorConfig = field(default_factory=SRFeatDiscriminatorConfig)
    feature_discriminator: SRFeatDiscriminatorConfig = field(default_factory=SRFeatDiscriminatorConfig)
    patch_size: int = 296  # the HR patch the dense heads are sized for; must equal data.patch_size with them
    feature_scale: float = 1 / 12.75  # φ54 scaling for both the perceptual loss and the feature D input
    perceptual_weight: float = 1.0
    image_weight: float = 1e-3
    feature_weight: float = 1e-3
    discriminator_weight: float = 1e-3  # the release scales the discriminators' BCE terms too
    freeze_bn: bool = True  # generator BN in eval mode (running statistics fixed) during the gan phase
    vgg_weights: str | None = None
    allow_random_vgg: bool = False
    phases: dict[str, Phase] = field(default_factory=_paper_phases)

    def __post_init__(self) -> None:
        require(set(self.phases) == {"pretrain", "gan"}, "phases",
                f"srfeat has pretrain and gan, got {sorted(self.phases)}")
        require(self.phases["pretrain"].trains == (GENERATOR,), "phases.pretrain.trains", "only the generator")
        unknown = set(self.phases["gan"].trains) - {GENERATOR, *DISCRIMINATORS}
        require(not unknown, "phases.gan.trains",
                f"phase gan can train generator, image, feature; not {sorted(unknown)}")
        require(self.patch_size >= 1, "patch_size", f"must be positive, got {self.patch_size}")


class SRFeat(Method):
    """SRFeat generator + the discriminators its gan phase trains (`image` on images, `feature` on φ54)."""

    def __init__(self, config: SRFeatConfig) -> None:
        builders = {"image": (image_discriminator, config.image_discriminator),
                    "feature": (feature_discriminator, config.feature_discriminator)}
        trains = config.phases["gan"].trains
        generator = self.make_generator(config)
        super().__init__(config, generator, **{name: build(cfg, config.patch_size)
                                               for name, (build, cfg) in builders.items() if name in trains})
        self.perceptual: PerceptualLoss | None = None

    def build_losses(self) -> None:
        """VGG19 φ54/12.75 (Caffe input), shared by the perceptual loss and the feature discriminator; the release
        clips the VGG input to [0,1] (`Vgg19_simple_api`)."""
        cfg = self.config
        if self.runs("gan"):
            self.perceptual = PerceptualLoss({FEATURE_LAYER: cfg.perceptual_weight}, criterion="mse", normalize="caffe",
                                             feature_scale=cfg.feature_scale, clamp=True, weights=cfg.vgg_weights,
                                             allow_random=cfg.allow_random_vgg)

    def on_train_start(self, batch: Batch, dataset: torch.utils.data.Dataset) -> None:
        for name, net in self.discriminators.items():
            if net.config.head == "dense" and self.trains(name):
                check_patch_size(batch, self.config.patch_size, name, f"set model.patch_size={batch.hr.shape[-1]} "
                                 f"or model.{name}_discriminator.head=conv")

    def make_sr(self, batch: Batch, phase: str) -> Tensor:
        # Set here, right before the generator runs, so a validation pass toggling train() cannot undo it.
        frozen = phase == "gan" and self.config.freeze_bn
        for module in self.generator.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.train(self.training and not frozen)
        return self.generator(batch.lr)

    def _features(self, images: Tensor) -> Tensor:
        return self.perceptual.features(images)[FEATURE_LAYER]

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        if phase == "pretrain":
            return {"mse": F.mse_loss(sr * 2 - 1, batch.hr * 2 - 1)}
        cfg = self.config
        fake = self._features(sr)
        with torch.no_grad():
            real = self._features(batch.hr)
        terms = {"perceptual": self.perceptual.compare({FEATURE_LAYER: fake}, {FEATURE_LAYER: real})}
        if "image" in self.discriminators:
            terms["image"] = cfg.image_weight * generator_loss("vanilla", self.discriminators["image"](sr * 2 - 1))
        if "feature" in self.discriminators:
            terms["feature"] = cfg.feature_weight * generator_loss("vanilla", self.discriminators["feature"](fake))
        return terms

    def critic_inputs(self, name: str, batch: Batch, sr: Tensor) -> CriticInputs:
        """The image discriminator sees [-1,1] images, as in the release; the feature one φ54/12.75."""
        if name == "image":
            return CriticInputs(batch.hr * 2 - 1, sr * 2 - 1, self.discriminators["image"])
        with torch.no_grad():
            return CriticInputs(self._features(batch.hr), self._features(sr), self.discriminators["feature"])

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        weight, terms = self.config.discriminator_weight, {}
        for name, discriminator in self.discriminators.items():
            critic = self.critic_inputs(name, batch, sr)
            terms[name] = weight * discriminator_loss("vanilla", discriminator(critic.real), discriminator(critic.fake))
        return terms
