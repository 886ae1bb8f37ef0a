"""SFTGAN training (Wang et al., CVPR 2018; BSR-old `SFTGAN_ACD_model.py`, `train_sftgan.json`, methods.md §3.4).

One phase `gan`: the SFT generator against the ACD discriminator (a GAN head and an 8-way class head).
G: L1 on VGG19 conv5_4 (pre-ReLU, ImageNet-normalised) ×1, vanilla GAN ×5e-3, auxiliary class cross-entropy
×5e-3 (the GAN weight, as the original); D: GAN + class cross-entropy on real and fake, ×1. The cross-entropy
ignores label 0 (background). SFT and condition parameters (names containing "SFT" or "Cond") learn at 5× the
rate; the other generator parameters stay frozen until iteration 20k (`other_start`). Adam β1 0.9, lr 1e-4,
MultiStepLR [50k, 100k, 150k, 200k] ×0.5, 600k iterations. The data (maps, labels, background mix) is
`data.segpairs.SegTrainDataset`. `init` may name an SRResNet (BasicSR-old noBN, as `basicsr-srresnet-old`
converts) run or release: its layers are copied and the SFT/condition layers start fresh (kaiming ×0.1, bias 0;
`transfer_params_sft.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.sftgan import ACDConfig, ACDDiscriminator, SFTNetConfig
from perceptsr.config import require
from perceptsr.data.segpairs import ClassLabel, SegTrainDataset
from perceptsr.errors import ConfigError
from perceptsr.losses import (
    AdversarialKind,
    PerceptualLoss,
    discriminator_loss,
    fidelity_terms,
    generator_loss,
)
from perceptsr.methods.base import (
    GENERATOR,
    Batch,
    CriticInputs,
    Method,
    OptimizerConfig,
    ParamGroup,
    Phase,
    ScheduleConfig,
    check_patch_size,
)
from perceptsr.methods.transfer import init_from_srresnet, is_sft


def _phases() -> dict[str, Phase]:
    adam = OptimizerConfig(learning_rate=1e-4, betas=(0.9, 0.999))
    return {"gan": Phase(
        iterations=600_000, trains=(GENERATOR, "image"), generator_optimizer=adam, discriminator_optimizer=adam,
        schedule=ScheduleConfig(kind="multistep", milestones=(50_000, 100_000, 150_000, 200_000), gamma=0.5),
    )}


@dataclass(frozen=True)
class SFTGANConfig:
    """SFTGAN settings; defaults are BSR-old's `train_sftgan.json` (methods.md §3.4)."""

    generator: SFTNetConfig = field(default_factory=SFTNetConfig)
    discriminator: ACDConfig = field(default_factory=ACDConfig)
    seg_dir: str | None = None  # folder of <stem>_segprob.npy maps (perceptsr segment TRAIN_FOLDERS -o SEG_DIR)
    background: tuple[str, ...] = ()  # HR folders of general scenes (DIV2K in the original); () = the training set
    background_every: int = 10  # one sample in N is a background sample; 0 = never
    class_label: ClassLabel = "auto"
    pixel_weight: float = 0.0
    pixel_loss: Literal["l1", "mse", "charbonnier"] = "l1"
    content_layers: dict[str, float] = field(default_factory=lambda: {"conv5_4": 1.0})
    content_criterion: Literal["l1", "mse"] = "l1"
    adversarial: AdversarialKind = "vanilla"
    adversarial_weight: float = 5e-3
    generator_class_weight: float = 5e-3  # the original weights G's class loss by the GAN weight
    discriminator_class_weight: float = 1.0
    sft_learning_rate_scale: float = 5.0
    other_start: int = 20_000  # non-SFT generator parameters are stepped from this phase iteration on
    vgg_weights: str | None = None
    allow_random_vgg: bool = False
    phases: dict[str, Phase] = field(default_factory=_phases)

    def __post_init__(self) -> None:
        require(set(self.phases) == {"gan"}, "phases", f"sftgan has one phase, gan; got {sorted(self.phases)}")
        require(self.background_every >= 0, "background_every", f"must be >= 0, got {self.background_every}")
        require(self.other_start >= 0, "other_start", f"must be >= 0, got {self.other_start}")
        require(self.sft_learning_rate_scale > 0, "sft_learning_rate_scale",
                f"must be > 0, got {self.sft_learning_rate_scale}")


def class_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy ignoring label 0 (background); 0 (with gradients) for a batch of background only."""
    if not bool((labels != 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=0)


class SFTGAN(Method):
    """SFTNet generator + ACD discriminator `image`."""

    def __init__(self, config: SFTGANConfig) -> None:
        super().__init__(config, self.make_generator(config), image=ACDDiscriminator(config.discriminator))
        self.content: PerceptualLoss | None = None

    def build_losses(self) -> None:
        cfg = self.config
        if self.runs("gan") and cfg.content_layers:
            self.content = PerceptualLoss(cfg.content_layers, criterion=cfg.content_criterion, normalize="imagenet",
                                          weights=cfg.vgg_weights, allow_random=cfg.allow_random_vgg)

    def train_dataset(self, data: Any, *, scale: int, progress: bool) -> SegTrainDataset:
        cfg = self.config
        if data.val:
            raise ConfigError("sftgan cannot validate during training (validation images have no segmentation "
                              "maps): leave data.val empty and evaluate exported models with `upscale --seg`")
        if data.scale_augment:
            raise ConfigError("sftgan cannot use data.scale_augment: the segmentation maps are made at the training "
                              "images' own size")
        if not cfg.seg_dir:
            raise ConfigError("sftgan needs model.seg_dir, the maps of the training images "
                              "(perceptsr segment TRAIN_FOLDER -o SEG_DIR)")
        return SegTrainDataset(
            data.train, seg_dir=cfg.seg_dir, background=cfg.background, background_every=cfg.background_every,
            class_label=cfg.class_label, scale=scale, patch_size=data.patch_size, hflip=data.hflip,
            rotate=data.rotate, cache_dir=data.cache_dir, progress=progress,
        )

    def on_train_start(self, batch: Batch, dataset: torch.utils.data.Dataset) -> None:
        if not self.trains("image"):
            return
        size = self.config.discriminator.input_size
        check_patch_size(batch, size, "ACD", f"set data.patch_size={size} or model.discriminator.input_size")

    def make_sr(self, batch: Batch, phase: str) -> Tensor:
        return self.generator(batch.lr, seg=batch.extras["seg"])

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        cfg, image = self.config, self.discriminators["image"]
        terms = fidelity_terms(sr, batch.hr, pixel_kind=cfg.pixel_loss, pixel_weight=cfg.pixel_weight,
                               content=self.content)
        fake, fake_class = image(sr)
        real = image(batch.hr)[0].detach() if cfg.adversarial == "ragan" else None
        terms["adversarial"] = cfg.adversarial_weight * generator_loss(cfg.adversarial, fake, real)
        terms["class"] = cfg.generator_class_weight * class_loss(fake_class, batch.extras["label"])
        return terms

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        image, labels = self.discriminators["image"], batch.extras["label"]
        real, real_class = image(batch.hr)
        fake, fake_class = image(sr)
        return {
            "adversarial": discriminator_loss(self.config.adversarial, real, fake),
            "class": self.config.discriminator_class_weight * (class_loss(real_class, labels)
                                                               + class_loss(fake_class, labels)),
        }

    def critic_inputs(self, name: str, batch: Batch, sr: Tensor) -> CriticInputs:
        """The ACD's GAN head is the critic (its class head is not)."""
        return CriticInputs(batch.hr, sr, lambda x: self.discriminators[name](x)[0])

    def parameter_groups(self, network: str, phase: str) -> list[ParamGroup]:
        if network != GENERATOR:
            return super().parameter_groups(network, phase)
        named = list(self.generator.named_parameters())
        return [ParamGroup([p for n, p in named if is_sft(n)], lr_scale=self.config.sft_learning_rate_scale),
                ParamGroup([p for n, p in named if not is_sft(n)], start=self.config.other_start)]

    def init_generator(self, state_dict: dict[str, Tensor]) -> None:
        if set(state_dict) == set(self.generator.state_dict()):
            super().init_generator(state_dict)
        else:
            init_from_srresnet(self.generator, state_dict)
