"""NatSR (Soh et al., CVPR 2019): FRSR + naturalness from an explicit natural manifold discriminator (NMD).

Phases, run in order (any may have 0 iterations):
- `nmd`: only the NMD learns, on batches built from the HR patches (`data.nmd.nmd_batch`: ¼ DCT-noisy (σ),
  ¼ blurry (α), ½ clean; labels unnatural 0, natural 1); sigmoid BCE. Curriculum (`data.nmd.Curriculum`): every
  `curriculum_every` steps the NMD is validated on fixed patches; when the 10-entry moving average of the noise
  (blur) accuracy is ≥ 95%, σ ← 0.8σ (α ← min(α + 0.1, 0.9)). σ, α and the histories are Method buffers, so
  checkpoints keep them and resume restores them.
- `pretrain`: FRSR with L1 (the released FRSR models).
- `gan`: L1 + 1e-3·naturalness + 1e-3·RaGAN against the spectral-norm D `image`; the NMD is frozen (from
  `nmd_init`, loaded by `build_losses`, or from the nmd phase).
Specification: methods.md §5. Matches: JWSoh/NatSR:Train_NMD/train.py, train.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.natsr import NMD, FRSRConfig, NatSRDiscriminator, NatSRDiscriminatorConfig, NMDConfig
from perceptsr.config import require
from perceptsr.data.nmd import (
    MIN_GRADIENT,
    MIN_VARIANCE,
    TEXTURE_TRIES,
    Curriculum,
    NMDValidation,
    TexturedDataset,
    nmd_batch,
)
from perceptsr.errors import ConfigError
from perceptsr.losses import discriminator_loss, generator_loss, lattice_loss
from perceptsr.methods.base import GENERATOR, Batch, Method, OptimizerConfig, Phase, ScheduleConfig

PHASES = ("nmd", "pretrain", "gan")


def _paper_phases() -> dict[str, Phase]:
    """NMD: Adam 1e-4, constant. FRSR and NatSR: Adam 2e-4 halved once after 100k of the phase's own iterations.

    The original decays 2e-4 by 0.1 every 100k steps of a `global_step` that both optimisers increment, floored
    at 1e-4: so 2e-4, then 1e-4 after 50k real iterations. What it meant is 2e-4, then 1e-4 after 100k.
    The iteration counts are not in the source (its epoch limit is 20000, i.e. "until stopped"): UNCERTAIN.
    """
    adam_d = OptimizerConfig(learning_rate=1e-4)
    adam = OptimizerConfig(learning_rate=2e-4)
    halve = ScheduleConfig(kind="multistep", milestones=(100_000,), gamma=0.5)
    return {
        "nmd": Phase(iterations=100_000, trains=("nmd",), discriminator_optimizer=adam_d),
        "pretrain": Phase(iterations=300_000, trains=(GENERATOR,), generator_optimizer=adam, schedule=halve),
        "gan": Phase(iterations=200_000, trains=(GENERATOR, "image"), generator_optimizer=adam,
                     discriminator_optimizer=adam, schedule=halve),
    }


@dataclass(frozen=True)
class NatSRConfig:
    """NatSR settings; defaults are the original's (methods.md §5.4-5.5)."""

    generator: FRSRConfig = field(default_factory=FRSRConfig)
    nmd: NMDConfig = field(default_factory=NMDConfig)
    discriminator: NatSRDiscriminatorConfig = field(default_factory=NatSRDiscriminatorConfig)
    nmd_init: str | None = None  # NMD weights: a natsr run dir, the converted/TF/npz NMD checkpoint
    texture_filter: bool = False  # keep only patches with enough texture (the original's data scripts do)
    min_gradient: float = MIN_GRADIENT  # mean squared gradient threshold of the texture filter
    min_variance: float = MIN_VARIANCE  # variance threshold of the texture filter
    texture_tries: int = TEXTURE_TRIES  # crops tried per sample before taking the most textured one
    initial_sigma: float = 0.1  # DCT noise σ at the start of the curriculum
    sigma_decay: float = 0.8  # σ ← σ·decay when the noise branch is learnt
    initial_alpha: float = 0.5  # blur blend α at the start (α·HR + (1−α)·ILR)
    alpha_step: float = 0.1  # α ← min(α + step, max_alpha) when the blur branch is learnt
    max_alpha: float = 0.9
    curriculum_every: int = 100  # validate the NMD every N steps of the nmd phase
    curriculum_threshold: float = 95.0  # moving-average accuracy (%) that triggers an update (≥)
    curriculum_window: int = 10  # entries of the moving average (they start at 0, as the original's)
    curriculum_val_size: int = 100  # corrupted patches per branch, and as many clean ones
    pixel_weight: float = 1.0  # L1 in the gan phase
    naturalness_weight: float = 1e-3  # −log NMD(SR)
    adversarial_weight: float = 1e-3  # RaGAN (the original's sum of its two terms)
    lattice_weight: float = 0.0  # losses.lattice_loss in the gan phase: not the paper's (0); see the bundled card
    phases: dict[str, Phase] = field(default_factory=_paper_phases)

    def __post_init__(self) -> None:
        require(tuple(self.phases) == PHASES, "phases", f"natsr has {', '.join(PHASES)} in that order, got "
                f"{list(self.phases)}")
        expected = {"nmd": ("nmd",), "pretrain": (GENERATOR,), "gan": (GENERATOR, "image")}
        for name, phase in self.phases.items():
            require(not phase.iterations or set(phase.trains) == set(expected[name]), f"phases.{name}.trains",
                    f"natsr phase {name} trains {list(expected[name])}, got {list(phase.trains)}")
        for key in ("curriculum_every", "curriculum_window", "curriculum_val_size", "texture_tries"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(0 < self.initial_alpha <= self.max_alpha <= 1, "initial_alpha",
                "natsr needs 0 < initial_alpha <= max_alpha <= 1")
        require(self.initial_sigma > 0, "initial_sigma", f"must be > 0, got {self.initial_sigma}")
        require(not self.phases["gan"].iterations or self.phases["nmd"].iterations or self.nmd_init is not None,
                "nmd_init", "the natsr gan phase needs a trained NMD: set model.nmd_init or an nmd phase")


class NatSR(Method):
    """FRSR generator; discriminators `nmd` (when the nmd or gan phase runs) and `image` (when gan runs)."""

    no_gradient_penalty = {"nmd": "the NMD classifies natural vs corrupted HR patches; it is no real-vs-fake critic"}

    def __init__(self, config: NatSRConfig) -> None:
        runs = {name: phase.iterations > 0 for name, phase in config.phases.items()}
        nets = {}
        if runs["nmd"] or runs["gan"]:
            nets["nmd"] = NMD(config.nmd)
        if runs["gan"]:
            nets["image"] = NatSRDiscriminator(config.discriminator)
        super().__init__(config, self.make_generator(config), **nets)  # D first, as always
        self.register_buffer("noise_sigma", torch.tensor(config.initial_sigma, dtype=torch.float64))
        self.register_buffer("blend_alpha", torch.tensor(config.initial_alpha, dtype=torch.float64))
        self.register_buffer("noise_accuracy_history", torch.zeros(config.curriculum_window, dtype=torch.float64))
        self.register_buffer("blur_accuracy_history", torch.zeros(config.curriculum_window, dtype=torch.float64))
        self.curriculum = Curriculum(config.curriculum_threshold, config.sigma_decay, config.alpha_step,
                                     config.max_alpha)
        self.nmd_validation: NMDValidation | None = None

    def build_losses(self) -> None:
        """Load `nmd_init` (only for training: exporting a run never reads it)."""
        from perceptsr.convert.natsr import load_nmd

        if self.config.nmd_init is not None and "nmd" in self.discriminators:
            load_nmd(self.discriminators["nmd"], self.config.nmd_init)

    def train_dataset(self, data: Any, *, scale: int, progress: bool) -> torch.utils.data.Dataset:
        dataset = super().train_dataset(data, scale=scale, progress=progress)
        cfg = self.config
        if cfg.texture_filter:
            dataset = TexturedDataset(dataset, min_gradient=cfg.min_gradient, min_variance=cfg.min_variance,
                                      tries=cfg.texture_tries)
        return dataset

    def on_train_start(self, batch: Batch, dataset: torch.utils.data.Dataset) -> None:
        """Check patch and batch sizes; fix the curriculum's validation patches (from the training data)."""
        height, width = batch.hr.shape[-2:]
        if (self.runs("nmd") or self.runs("gan")) and (height % 16 or width % 16):
            raise ConfigError(f"the NMD needs HR patches that are multiples of 16, got data.patch_size {height}")
        if self.runs("nmd") and batch.hr.shape[0] % 4:
            raise ConfigError(f"the nmd phase splits batches in quarters; batch size {batch.hr.shape[0]} is not "
                              "a multiple of 4 (per process)")
        if self.runs("nmd"):
            self.nmd_validation = NMDValidation(dataset, count=self.config.curriculum_val_size,
                                                scale=self.generator.scale)

    def prepare(self, batch: Batch, phase: str, rng: torch.Generator) -> Batch:
        """nmd phase: extras `nmd_input` (¼ noisy, ¼ blurry, ½ clean HR) and `nmd_label` (0, 0, 1), N×1."""
        if phase != "nmd":
            return batch
        images, labels = nmd_batch(batch.hr, batch.lr, sigma=float(self.noise_sigma), alpha=float(self.blend_alpha),
                                   scale=self.generator.scale, rng=rng)
        return Batch(batch.lr, batch.hr, {**batch.extras, "nmd_input": images, "nmd_label": labels})

    def make_sr(self, batch: Batch, phase: str) -> Tensor | None:
        return None if phase == "nmd" else self.generator(batch.lr)

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        l1 = F.l1_loss(sr, batch.hr)
        if phase == "pretrain":
            return {"l1": l1}
        cfg, image = self.config, self.discriminators["image"]
        natural = self.discriminators["nmd"](sr)
        # −log σ(z) in its stable form (the original adds 1e-10 inside the log); the RaGAN sum has no ½.
        naturalness = F.binary_cross_entropy_with_logits(natural, torch.ones_like(natural))
        adversarial = 2 * generator_loss("ragan", image(sr), image(batch.hr))
        terms = {"l1": cfg.pixel_weight * l1, "naturalness": cfg.naturalness_weight * naturalness,
                 "adversarial": cfg.adversarial_weight * adversarial}
        if cfg.lattice_weight:
            terms["lattice"] = cfg.lattice_weight * lattice_loss(sr, batch.hr, self.generator.scale)
        return terms

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        if phase == "nmd":
            logits = self.discriminators["nmd"](batch.extras["nmd_input"])
            return {"nmd": F.binary_cross_entropy_with_logits(logits, batch.extras["nmd_label"])}
        image = self.discriminators["image"]
        return {"adversarial": 2 * discriminator_loss("ragan", image(batch.hr), image(sr))}

    def after_step(self, step: int, phase: str, batch: Batch) -> dict[str, float]:
        """The curriculum: validate every `curriculum_every` steps of the nmd phase and update σ, α."""
        if phase != "nmd":
            return {}
        logs = {"nmd_sigma": float(self.noise_sigma), "nmd_alpha": float(self.blend_alpha)}
        if (step + 1) % self.config.curriculum_every:
            return logs
        accuracies = self.validate_nmd()
        self.curriculum.advance(self.noise_sigma, self.blend_alpha,
                                (self.noise_accuracy_history, self.blur_accuracy_history), accuracies)
        return {"nmd_val_noise_accuracy": accuracies[0], "nmd_val_blur_accuracy": accuracies[1],
                "nmd_sigma": float(self.noise_sigma), "nmd_alpha": float(self.blend_alpha)}

    def validate_nmd(self) -> tuple[float, float]:
        """Accuracies (%) on [noisy, clean] and on [blurry, clean] fixed patches at the current σ and α."""
        return self.nmd_validation.accuracies(self.discriminators["nmd"], float(self.noise_sigma),
                                              float(self.blend_alpha))
