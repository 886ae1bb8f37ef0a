"""FxSR's conditional objective: one generator trained for every t in [0,1], with loss weights that are
functions of t (methods.md §4.3-4.4). FxSR's own training code is not public; the recipe is SROT's.

- t ~ U(0,1) is drawn in `prepare` from the step's generator: one t per iteration (`t_sampling: batch`, SROT),
  one per sample (`sample`), or a random smooth map per sample (`spatial`: Gaussian blobs, for local control).
  The generator sees T = the map at LR size. With per-sample or per-pixel t every weight below becomes a
  per-sample / per-pixel weight and each term a weighted mean (see losses/weighted.py), so a pixel is trained
  with the objective of its own t; with one t per batch this is SROT's scalar objective exactly.
- FxSR-PD (`objective: pd`, seungho-snu/SROT:codes/models/SRGAN_model.py "ESRGAN-SROT-M1234"):
  L1 weight 1e-2 + 20·(1 − t); RaGAN weight 5e-3·t; the L VGG layers (conv1_2, conv2_2, conv3_4, conv4_4,
  pre-ReLU, L1) get w_k = clamp(t − k/L, 0, 1/L): layer k ramps up over the k-th quarter of [0,1].
- FxSR-DS (`objective: ds`) is a PROJECT DECISION, not sourced: L1 1e-2 and RaGAN 5e-3 fixed; a unit VGG weight
  slides linearly from conv2_2 (t = 0) over conv3_4 (t = .5) to conv4_4 (t = 1): w_k = max(0, 1 − |t·(L−1) − k|).
- The generator starts from an RRDB PSNR model (config `init`) with fresh SFT layers and condition network.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from perceptsr.archs.discriminators import VGGStyleDiscriminator, VGGStyleDiscriminatorConfig
from perceptsr.archs.fxsr import FxSRNetConfig
from perceptsr.conditions.tmap import TSampling, draw_t
from perceptsr.config import require
from perceptsr.losses import LossWeights, PerceptualLoss, discriminator_loss, relativistic_terms
from perceptsr.methods.base import Batch, Method, Phase, basicsr_gan_phase, check_patch_size
from perceptsr.methods.transfer import init_from_rrdb

PD_LAYERS = ("conv1_2", "conv2_2", "conv3_4", "conv4_4")  # SROT's w12, w22, w34, w44
DS_LAYERS = ("conv2_2", "conv3_4", "conv4_4")  # VGG22 -> VGG44 (FxSR readme's texture levels)


@dataclass(frozen=True)
class FxSRConfig:
    """FxSR-PD by default (SROT's schedule and training setup)."""

    generator: FxSRNetConfig = field(default_factory=FxSRNetConfig)
    discriminator: VGGStyleDiscriminatorConfig = field(default_factory=VGGStyleDiscriminatorConfig)
    objective: Literal["pd", "ds"] = "pd"
    t_sampling: TSampling = "batch"
    blobs: int = 3  # Gaussian blobs per random map (t_sampling: spatial)
    perceptual_layers: tuple[str, ...] = ()  # () = the objective's: PD_LAYERS or DS_LAYERS
    pixel_weight: float = 1e-2  # L1 weight at t = 1 (pd); the fixed L1 weight (ds)
    distortion_weight: float = 20.0  # pd: the L1 weight grows by this·(1 − t)
    adversarial_weight: float = 5e-3  # pd: times t; ds: fixed
    vgg_weights: str | None = None
    allow_random_vgg: bool = False
    phases: dict[str, Phase] = field(default_factory=lambda: {"gan": basicsr_gan_phase(ema_decay=0.0)})

    def __post_init__(self) -> None:
        require(set(self.phases) == {"gan"}, "phases", f"fxsr has the one phase gan, got {sorted(self.phases)}")
        require(self.blobs >= 0, "blobs", f"must be >= 0, got {self.blobs}")
        require(self.objective == "pd" or len(self.layers) >= 2, "perceptual_layers",
                "the ds objective slides across at least 2 layers")

    @property
    def layers(self) -> tuple[str, ...]:
        return self.perceptual_layers or (PD_LAYERS if self.objective == "pd" else DS_LAYERS)


def loss_weights(config: FxSRConfig, t: Tensor) -> LossWeights:
    """The weights of the objective at t (any shape: a scalar, N×1×1×1 or an N×1×h×w map)."""
    layers = config.layers
    count = len(layers)
    if config.objective == "pd":
        step = 1.0 / count
        return LossWeights(
            pixel=config.pixel_weight + config.distortion_weight * (1 - t),
            perceptual={name: (t - k * step).clamp(0.0, step) for k, name in enumerate(layers)},
            adversarial=config.adversarial_weight * t,
        )
    return LossWeights(
        pixel=config.pixel_weight,
        perceptual={name: (1 - (t * (count - 1) - k).abs()).clamp_min(0.0) for k, name in enumerate(layers)},
        adversarial=config.adversarial_weight,
    )


class FxSR(Method):
    """FxSR generator + VGG-style discriminator `image`, trained with the t-conditioned objective."""

    def __init__(self, config: FxSRConfig) -> None:
        super().__init__(config, self.make_generator(config), image=VGGStyleDiscriminator(config.discriminator))
        self.perceptual: PerceptualLoss | None = None

    def build_losses(self) -> None:
        if self.runs("gan"):
            self.perceptual = PerceptualLoss(dict.fromkeys(self.config.layers, 1.0), weights=self.config.vgg_weights,
                                             allow_random=self.config.allow_random_vgg)

    def on_train_start(self, batch: Batch, dataset: torch.utils.data.Dataset) -> None:
        if not self.trains("image"):
            return
        size = self.config.discriminator.input_size
        check_patch_size(batch, size, "VGG-style", f"set data.patch_size={size}")

    def prepare(self, batch: Batch, phase: str, rng: torch.Generator) -> Batch:
        n, _, height, width = batch.lr.shape
        t = draw_t(self.config.t_sampling, n, height, width, blobs=self.config.blobs, generator=rng)
        t = t.to(device=batch.lr.device, dtype=batch.lr.dtype)
        return Batch(batch.lr, batch.hr, {**batch.extras, "t": t})

    def make_sr(self, batch: Batch, phase: str) -> Tensor:
        return self.generator(batch.lr, t=batch.extras["t"])

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        weights = loss_weights(self.config, batch.extras["t"])
        return relativistic_terms(sr, batch.hr, self.discriminators["image"], self.perceptual, weights)

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        image = self.discriminators["image"]
        return {"adversarial": discriminator_loss("ragan", image(batch.hr), image(sr))}

    def after_step(self, step: int, phase: str, batch: Batch) -> dict[str, float]:
        return {"t": float(batch.extras["t"].mean())}

    def init_generator(self, state_dict: dict[str, Tensor]) -> None:
        """Start from an RRDB PSNR model (SFT layers and condition net fresh) or a whole FxSR model."""
        init_from_rrdb(self.generator, state_dict)
