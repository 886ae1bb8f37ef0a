"""SFTGAN training (Wang et al., CVPR 2018; BSR-old `SFTGAN_ACD_model.py`, `train_sftgan.json`, methods.md §3.4).

One phase `gan`: the SFT generator against the ACD discriminator (a GAN head and an 8-way class head).
G: L1 on VGG19 conv5_4 (pre-ReLU, ImageNet-normalised) ×1, vanilla GAN ×5e-3, auxiliary class cross-entropy
×5e-3 (the GAN weight, as the original); D: GAN + class cross-entropy on real and fake, ×1. The cross-entropy
ignores label 0 (background). SFT and condition parameters (names containing "SFT" or "Cond") learn at 5× the
rate; the other generator parameters stay frozen until iteration 20k (`other_start`). Adam β1 0.9, lr 1e-4,
MultiStepLR [50k, 100k, 150k, 200k] ×0.5, 600k iterations.

Data (`SegTrainDataset`): each training image's map is precomputed by `perceptsr segment` into
`seg_dir/<stem>_segprob.npy` (8×H×W at the HR size mod 4) and cropped/flipped with the image; one sample in
`background_every` is a background sample (a `background` folder image, or the same image, with a one-hot
background map and class label 0). The class label of an image (ACD order: building 1, plant 2, mountain 3,
water 4, sky 5, grass 6, animal 7, else 0): `path` = the original rule, a category word in the image's folder or
file name; `map` = the argmax of the image's mean map (our data has no category folders); `auto` = path when
it names a category, else map. Not reproduced: the original's random pre-scaling of each image by 0.5–1.
`init` may name an SRResNet (BasicSR-old noBN, as `basicsr-srresnet-old` converts) run or release: its layers
are copied and the SFT/condition layers start fresh (kaiming ×0.1, bias 0; `transfer_params_sft.py`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.blocks import SFTLayer, default_init_weights
from perceptsr.archs.sftgan import ACDConfig, ACDDiscriminator, SFTNet, SFTNetConfig
from perceptsr.config import from_dict
from perceptsr.data.datasets import TrainDataset, crop_and_augment, to_tensor
from perceptsr.errors import CheckpointError, ConfigError, InputError
from perceptsr.losses import (
    AdversarialKind,
    PerceptualLoss,
    discriminator_loss,
    generator_loss,
    gradient_penalty,
    pixel_loss,
)
from perceptsr.methods.base import GENERATOR, Batch, Method, OptimizerConfig, ParamGroup, Phase, ScheduleConfig

logger = logging.getLogger(__name__)

ClassLabel = Literal["auto", "path", "map"]


def _phases() -> dict[str, Phase]:
    adam = OptimizerConfig(learning_rate=1e-4, betas=(0.9, 0.999))
    return {"gan": Phase(
        iterations=600_000, trains=(GENERATOR, "image"), generator_optimizer=adam, discriminator_optimizer=adam,
        schedule=ScheduleConfig(kind="multistep", milestones=(50_000, 100_000, 150_000, 200_000), gamma=0.5),
    )}


@dataclass(frozen=True)
class SFTGANConfig:
    """SFTGAN settings; defaults are BSR-old's `train_sftgan.json` (methods.md §3.4)."""

    generator: dict[str, Any] = field(default_factory=lambda: {"scale": 4})  # SFTNetConfig fields
    discriminator: dict[str, Any] = field(default_factory=dict)  # ACDConfig fields
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
        from_dict(SFTNetConfig, self.generator, "model.generator")
        from_dict(ACDConfig, self.discriminator, "model.discriminator")
        if set(self.phases) != {"gan"}:
            raise ConfigError(f"sftgan has one phase, gan; got {sorted(self.phases)}")
        if self.background_every < 0 or self.other_start < 0 or self.sft_learning_rate_scale <= 0:
            raise ConfigError("model.background_every and other_start must be >= 0, sft_learning_rate_scale > 0")


def class_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """Cross-entropy ignoring label 0 (background); 0 (with gradients) for a batch of background only."""
    if not bool((labels != 0).any()):
        return logits.sum() * 0.0
    return F.cross_entropy(logits, labels, ignore_index=0)


def is_sft(name: str) -> bool:
    """SFT and condition-net parameters, by the original's rule ('SFT' in k or 'Cond' in k)."""
    return "SFT" in name or "Cond" in name


def srresnet_pairs(num_block: int) -> list[tuple[str, str]]:
    """(SFTNet key, SRResNet key) of every layer both have, as BSR-old `transfer_params_sft.py` copies them."""
    layers = [("conv0", "conv_first")]
    for i in range(num_block):
        layers += [(f"sft_branch.{i}.conv0", f"body.{i}.conv1"), (f"sft_branch.{i}.conv1", f"body.{i}.conv2")]
    layers += [(f"sft_branch.{num_block + 1}", "conv_body"), ("HR_branch.0", "upsampler.0"),
               ("HR_branch.3", "upsampler.3"), ("HR_branch.6", "conv_hr"), ("HR_branch.8", "conv_last")]
    return [(f"{ours}.{p}", f"{theirs}.{p}") for ours, theirs in layers for p in ("weight", "bias")]


def init_from_srresnet(generator: SFTNet, state: dict[str, Tensor]) -> list[str]:
    """Load an SRResNet (noBN, ReLU, `srresnet` arch keys) into `generator`, SFT/condition layers fresh.

    Every source key must be used and every shape match (a CheckpointError names the first that does not).
    The fresh layers get kaiming-normal ×0.1 weights and zero biases. Returns the keys that were initialised
    fresh, in state-dict order.
    """
    pairs = srresnet_pairs(generator.config.num_block)
    own = generator.state_dict()
    unused = sorted(set(state) - {theirs for _, theirs in pairs})
    if unused:
        raise CheckpointError(f"init: {unused[0]} has no place in the SFTGAN generator (expected a noBN ReLU "
                              f"SRResNet, e.g. converted SRGAN_bicx4_noBN_DIV2K.pth, with "
                              f"{generator.config.num_block} blocks)")
    for ours, theirs in pairs:
        if theirs not in state:
            raise CheckpointError(f"init: missing {theirs} (the SFTGAN generator has {generator.config.num_block} "
                                  f"blocks and form {generator.config.form})")
        if state[theirs].shape != own[ours].shape:
            raise CheckpointError(f"init: {theirs} has shape {list(state[theirs].shape)} but {ours} needs "
                                  f"{list(own[ours].shape)} (SRResNet init needs form pytorch and equal widths)")
    fresh = [m for m in generator.modules() if isinstance(m, SFTLayer)] + [generator.CondNet]
    default_init_weights(fresh, 0.1)
    loaded = generator.state_dict()
    loaded.update({ours: state[theirs] for ours, theirs in pairs})
    generator.load_state_dict(loaded, strict=True)
    copied = {ours for ours, _ in pairs}
    return [key for key in own if key not in copied]


# ACD class labels: words of the original's file-path rule, and the segmentation channel -> label map (the
# two orders differ, methods.md §6.2).
PATH_LABELS = (("building", 1), ("plant", 2), ("mountain", 3), ("water", 4), ("sky", 5), ("grass", 6), ("animal", 7))
SEG_TO_LABEL = (0, 5, 4, 6, 3, 1, 2, 7)


def image_label(path: Path, seg: np.ndarray, rule: ClassLabel) -> int:
    """The ACD label of a training image from its folder/file name and/or its map (8×H×W)."""
    name = f"{path.parent.name}/{path.stem}".lower()
    by_path = next((label for word, label in PATH_LABELS if word in name), 0)
    if rule == "path" or (rule == "auto" and by_path):
        return by_path
    return SEG_TO_LABEL[int(np.asarray(seg, dtype=np.float64).mean(axis=(1, 2)).argmax())]


class SegTrainDataset(TrainDataset):
    """TrainDataset plus each image's map (memory-mapped from `seg_dir`, cropped and flipped with the image),
    its class label, and the background mix. Samples: {"lr", "hr", "seg" (8,p,p), "label" (long)}."""

    def __init__(self, folders: Sequence[str | Path], *, seg_dir: str | Path, background: Sequence[str | Path],
                 background_every: int, class_label: ClassLabel, scale: int, patch_size: int, hflip: bool,
                 rotate: bool, cache_dir: str | Path | None = None, progress: bool = True) -> None:
        super().__init__(folders, scale=scale, patch_size=patch_size, hflip=hflip, rotate=rotate,
                         cache_dir=cache_dir, progress=progress)
        self.background_every = background_every
        self.seg_files: list[Path] = []
        self.labels: list[int] = []
        for path, hr in zip(self.paths, self.hr_images, strict=True):
            file = Path(seg_dir) / f"{path.stem}_segprob.npy"
            if file in self.seg_files:
                raise InputError(f"two training images are named {path.stem}: their maps would share {file}")
            seg = self._open(file)
            if seg.ndim != 3 or seg.shape[0] != len(SEG_TO_LABEL) or seg.shape[1:] != hr.shape[:2]:
                raise InputError(f"{file} has shape {seg.shape}, but {path} (mod-cropped to {scale}) needs "
                                 f"(8, {hr.shape[0]}, {hr.shape[1]}): remake it with `perceptsr segment`")
            self.seg_files.append(file)
            self.labels.append(image_label(path, seg, class_label))
        self.background = TrainDataset(background, scale=scale, patch_size=patch_size, hflip=hflip,
                                       rotate=rotate, cache_dir=cache_dir, progress=progress) if background else None

    @staticmethod
    def _open(file: Path) -> np.ndarray:
        if not file.is_file():
            raise InputError(f"segmentation map {file} is missing: make the maps of the training images with "
                             f"`perceptsr segment TRAIN_FOLDER -o {file.parent}`")
        try:
            return np.load(file, mmap_mode="r", allow_pickle=False)
        except (OSError, ValueError) as error:
            raise InputError(f"cannot read segmentation map {file}: {error}") from None

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Tensor]:
        index, sample_seed = key
        coin = np.random.default_rng([sample_seed, 1])  # a stream apart from the crop's
        if self.background_every and int(coin.integers(self.background_every)) == 0:
            if self.background is not None:
                sample = self.background[(int(coin.integers(len(self.background))), sample_seed)]
            else:
                sample = super().__getitem__(key)
            seg = torch.zeros(len(SEG_TO_LABEL), *sample["hr"].shape[-2:])
            seg[0] = 1.0
            return {**sample, "seg": seg, "label": torch.tensor(0)}
        lr, hr, seg = crop_and_augment(
            [self.lr_images[index], self.hr_images[index], self._open(self.seg_files[index]).transpose(1, 2, 0)],
            [1, self.scale, self.scale], np.random.default_rng(sample_seed), patch_lr=self.patch_lr,
            hflip=self.hflip, rotate=self.rotate)
        seg = torch.from_numpy(np.ascontiguousarray(seg.transpose(2, 0, 1), dtype=np.float32))
        return {"lr": to_tensor(lr), "hr": to_tensor(hr), "seg": seg, "label": torch.tensor(self.labels[index])}


class SFTGAN(Method):
    """SFTNet generator + ACD discriminator `image`."""

    def __init__(self, config: SFTGANConfig) -> None:
        super().__init__(SFTNet(from_dict(SFTNetConfig, config.generator)),
                         image=ACDDiscriminator(from_dict(ACDConfig, config.discriminator)))
        self.config = config
        self.content: PerceptualLoss | None = None
        if config.phases["gan"].iterations > 0 and config.content_layers:
            self.content = PerceptualLoss(config.content_layers, criterion=config.content_criterion,
                                          normalize="imagenet", weights=config.vgg_weights,
                                          allow_random=config.allow_random_vgg)

    def train_dataset(self, data: Any, *, scale: int, progress: bool) -> SegTrainDataset:
        cfg = self.config
        if data.val:
            raise ConfigError("sftgan cannot validate during training (validation images have no segmentation "
                              "maps): leave data.val empty and evaluate exported models with `upscale --seg`")
        if not cfg.seg_dir:
            raise ConfigError("sftgan needs model.seg_dir, the maps of the training images "
                              "(perceptsr segment TRAIN_FOLDER -o SEG_DIR)")
        return SegTrainDataset(
            data.train, seg_dir=cfg.seg_dir, background=cfg.background, background_every=cfg.background_every,
            class_label=cfg.class_label, scale=scale, patch_size=data.patch_size, hflip=data.hflip,
            rotate=data.rotate, cache_dir=data.cache_dir, progress=progress,
        )

    def on_train_start(self, batch: Batch) -> None:
        size = self.discriminators["image"].config.input_size
        if batch.hr.shape[-1] != size:
            raise ConfigError(f"the ACD discriminator takes {size}x{size} HR patches but data.patch_size gives "
                              f"{batch.hr.shape[-1]}; set data.patch_size={size} or model.discriminator.input_size")

    def make_sr(self, batch: Batch, phase: str) -> Tensor:
        return self.generator(batch.lr, seg=batch.extras["seg"])

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        cfg, image = self.config, self.discriminators["image"]
        terms = {}
        if cfg.pixel_weight:
            terms["pixel"] = cfg.pixel_weight * pixel_loss(cfg.pixel_loss, sr, batch.hr)
        if self.content is not None:
            terms["content"] = self.content(sr, batch.hr)
        fake, fake_class = image(sr)
        real = image(batch.hr)[0].detach() if cfg.adversarial == "ragan" else None
        terms["adversarial"] = cfg.adversarial_weight * generator_loss(cfg.adversarial, fake, real)
        terms["class"] = cfg.generator_class_weight * class_loss(fake_class, batch.extras["label"])
        return terms

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        image, labels = self.discriminators["image"], batch.extras["label"]
        real, real_class = image(batch.hr)
        fake, fake_class = image(sr)
        terms = {
            "adversarial": discriminator_loss(self.config.adversarial, real, fake),
            "class": self.config.discriminator_class_weight * (class_loss(real_class, labels)
                                                               + class_loss(fake_class, labels)),
        }
        weight = self.phases[phase].gradient_penalty
        if weight:
            terms["gradient_penalty"] = weight * gradient_penalty(lambda x: image(x)[0], batch.hr, sr)
        return terms

    def parameter_groups(self, network: str, phase: str) -> list[ParamGroup]:
        if network != GENERATOR:
            return super().parameter_groups(network, phase)
        named = list(self.generator.named_parameters())
        return [ParamGroup([p for n, p in named if is_sft(n)], lr_scale=self.config.sft_learning_rate_scale),
                ParamGroup([p for n, p in named if not is_sft(n)], start=self.config.other_start)]

    def init_generator(self, state_dict: dict[str, Tensor]) -> None:
        if set(state_dict) == set(self.generator.state_dict()):
            super().init_generator(state_dict)
            return
        fresh = init_from_srresnet(self.generator, state_dict)
        logger.warning("init: copied %d SRResNet tensors; %d SFT/condition tensors start fresh (kaiming x0.1, "
                       "bias 0): %s", len(self.generator.state_dict()) - len(fresh), len(fresh), ", ".join(fresh))
