"""NatSR (Soh et al., CVPR 2019): FRSR + naturalness from an explicit natural manifold discriminator (NMD).

Phases, run in order (any may have 0 iterations):
- `nmd`: only the NMD learns, on batches built from the HR patches: ¼ DCT-noisy (σ), ¼ blurry (α), ½ clean;
  labels unnatural 0, natural 1; sigmoid BCE. Curriculum: every `curriculum_every` steps the NMD is validated
  on fixed patches; when the 10-entry moving average of the noise (blur) accuracy is ≥ 95%, σ ← 0.8σ
  (α ← min(α + 0.1, 0.9)). The original tests the blur average with `== 95.0`, which almost never fires;
  here both use ≥. σ, α and the histories are Method buffers, so checkpoints keep them and resume restores them.
- `pretrain`: FRSR with L1 (the released FRSR models).
- `gan`: L1 + 1e-3·naturalness + 1e-3·RaGAN against the spectral-norm D `image`; the NMD is frozen.
Specification: methods.md §5. Matches: JWSoh/NatSR:Train_NMD/train.py, train.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import Tensor
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.natsr import FRSR, NMD, FRSRConfig, NatSRDiscriminator, NatSRDiscriminatorConfig, NMDConfig
from perceptsr.data.nmd import (
    TexturedDataset,
    blur_blend,
    dct_noise,
    fixed_patches,
    inject_dct_noise,
    interpolated_lr,
)
from perceptsr.errors import CheckpointError, ConfigError
from perceptsr.losses import discriminator_loss, generator_loss
from perceptsr.methods.base import GENERATOR, Batch, Method, OptimizerConfig, Phase, ScheduleConfig

PHASES = ("nmd", "pretrain", "gan")
CURRICULUM_SEED = 2521  # fixes the validation patches and their noise (the original's Val_2521 set)


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
    min_gradient: float = 0.005  # mean squared gradient threshold of the texture filter
    min_variance: float = 0.03  # variance threshold of the texture filter
    texture_tries: int = 10  # crops tried per sample before taking the most textured one
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
    phases: dict[str, Phase] = field(default_factory=_paper_phases)

    def __post_init__(self) -> None:
        if tuple(self.phases) != PHASES:
            raise ConfigError(f"natsr has phases {', '.join(PHASES)} in that order, got {list(self.phases)}")
        expected = {"nmd": ("nmd",), "pretrain": (GENERATOR,), "gan": (GENERATOR, "image")}
        for name, phase in self.phases.items():
            if phase.iterations and set(phase.trains) != set(expected[name]):
                raise ConfigError(f"natsr phase {name} trains {list(expected[name])}, got {list(phase.trains)}")
        if min(self.curriculum_every, self.curriculum_window, self.curriculum_val_size, self.texture_tries) < 1:
            raise ConfigError("natsr curriculum_every, curriculum_window, curriculum_val_size and texture_tries "
                              "must be >= 1")
        if not (0 < self.initial_alpha <= self.max_alpha <= 1 and self.initial_sigma > 0):
            raise ConfigError("natsr needs 0 < initial_alpha <= max_alpha <= 1 and initial_sigma > 0")
        if self.phases["gan"].iterations and not self.phases["nmd"].iterations and self.nmd_init is None:
            raise ConfigError("the natsr gan phase needs a trained NMD: set model.nmd_init or an nmd phase")


class NatSR(Method):
    """FRSR generator; discriminators `nmd` (when the nmd or gan phase runs) and `image` (when gan runs)."""

    def __init__(self, config: NatSRConfig) -> None:
        runs = {name: phase.iterations > 0 for name, phase in config.phases.items()}
        nets = {}
        if runs["nmd"] or runs["gan"]:
            nets["nmd"] = NMD(config.nmd)
        if runs["gan"]:
            nets["image"] = NatSRDiscriminator(config.discriminator)
        super().__init__(FRSR(config.generator), **nets)
        self.config = config
        self.register_buffer("noise_sigma", torch.tensor(config.initial_sigma, dtype=torch.float64))
        self.register_buffer("blend_alpha", torch.tensor(config.initial_alpha, dtype=torch.float64))
        self.register_buffer("noise_accuracy_history", torch.zeros(config.curriculum_window, dtype=torch.float64))
        self.register_buffer("blur_accuracy_history", torch.zeros(config.curriculum_window, dtype=torch.float64))
        self._patch_source: torch.utils.data.Dataset | None = None
        self._val: dict[str, Tensor] | None = None

    def _load_nmd(self, source: str) -> None:
        from perceptsr.convert.natsr import load_nmd_state

        try:
            self.discriminators["nmd"].load_state_dict(load_nmd_state(source), strict=True)
        except RuntimeError as error:
            reason = str(error).splitlines()[-1].strip()
            raise CheckpointError(f"model.nmd_init {source} does not fit model.nmd: {reason}") from None

    def check_phases(self) -> None:
        """Networks a phase with no iterations would train need not exist (they are not built)."""
        for name, phase in self.phases.items():
            missing = [net for net in phase.trains if net not in self.networks()] if phase.iterations else []
            if missing:
                raise ConfigError(f"phase {name!r} trains {missing[0]!r}, which natsr did not build")

    def train_dataset(self, data: object, *, scale: int, progress: bool) -> torch.utils.data.Dataset:
        dataset = super().train_dataset(data, scale=scale, progress=progress)
        cfg = self.config
        if cfg.texture_filter:
            dataset = TexturedDataset(dataset, min_gradient=cfg.min_gradient, min_variance=cfg.min_variance,
                                      tries=cfg.texture_tries)
        self._patch_source = dataset
        return dataset

    def on_train_start(self, batch: Batch) -> None:
        """Check patch and batch sizes; load `nmd_init` (here, not in __init__, so exporting a run never reads it)."""
        runs = {name: phase.iterations > 0 for name, phase in self.phases.items()}
        if self.config.nmd_init is not None and "nmd" in self.discriminators:
            self._load_nmd(self.config.nmd_init)
        height, width = batch.hr.shape[-2:]
        if (runs["nmd"] or runs["gan"]) and (height % 16 or width % 16):
            raise ConfigError(f"the NMD needs HR patches that are multiples of 16, got data.patch_size {height}")
        if runs["nmd"] and batch.hr.shape[0] % 4:
            raise ConfigError(f"the nmd phase splits batches in quarters; batch size {batch.hr.shape[0]} is not "
                              "a multiple of 4 (per process)")

    def prepare(self, batch: Batch, phase: str, rng: torch.Generator) -> Batch:
        """nmd phase: extras `nmd_input` (¼ noisy, ¼ blurry, ½ clean HR) and `nmd_label` (0, 0, 1), N×1."""
        if phase != "nmd":
            return batch
        hr, quarter = batch.hr, batch.hr.shape[0] // 4
        noisy = inject_dct_noise(hr[:quarter], float(self.noise_sigma), rng)
        ilr = interpolated_lr(batch.lr[quarter : 2 * quarter], self.generator.scale)
        blurry = blur_blend(hr[quarter : 2 * quarter], ilr, float(self.blend_alpha))
        label = torch.ones(hr.shape[0], 1, device=hr.device, dtype=hr.dtype)
        label[: 2 * quarter] = 0
        extras = {**batch.extras, "nmd_input": torch.cat([noisy, blurry, hr[2 * quarter :]]), "nmd_label": label}
        return Batch(batch.lr, batch.hr, extras)

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
        return {"l1": cfg.pixel_weight * l1, "naturalness": cfg.naturalness_weight * naturalness,
                "adversarial": cfg.adversarial_weight * adversarial}

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
        cfg = self.config
        logs = {"nmd_sigma": float(self.noise_sigma), "nmd_alpha": float(self.blend_alpha)}
        if (step + 1) % cfg.curriculum_every:
            return logs
        noise_accuracy, blur_accuracy = self.validate_nmd()
        for history, value in ((self.noise_accuracy_history, noise_accuracy),
                               (self.blur_accuracy_history, blur_accuracy)):
            history.copy_(torch.cat([history[1:], history.new_tensor([value])]))
        if float(self.noise_accuracy_history.mean()) >= cfg.curriculum_threshold:
            self.noise_sigma.mul_(cfg.sigma_decay)
        if float(self.blur_accuracy_history.mean()) >= cfg.curriculum_threshold:
            self.blend_alpha.fill_(min(round(float(self.blend_alpha) + cfg.alpha_step, 10), cfg.max_alpha))
        return {"nmd_val_noise_accuracy": noise_accuracy, "nmd_val_blur_accuracy": blur_accuracy,
                "nmd_sigma": float(self.noise_sigma), "nmd_alpha": float(self.blend_alpha)}

    @torch.no_grad()
    def validate_nmd(self) -> tuple[float, float]:
        """Accuracies (%) on [noisy, clean] and on [blurry, clean] fixed patches at the current σ and α."""
        nmd = self.discriminators["nmd"]
        if self._val is None:
            self._val = self._validation_patches(next(nmd.parameters()).device)
        val, chunk = self._val, 32

        def logits(images: Tensor) -> Tensor:
            return torch.cat([nmd(part) for part in images.split(chunk)])

        clean = (logits(val["clean"]) > 0).double().sum()
        noisy = logits(val["hr"] + float(self.noise_sigma) * val["noise"])
        blurry = logits(blur_blend(val["hr"], val["ilr"], float(self.blend_alpha)))
        total = 2 * val["hr"].shape[0]
        return (float(100 * ((noisy <= 0).double().sum() + clean) / total),
                float(100 * ((blurry <= 0).double().sum() + clean) / total))

    def _validation_patches(self, device: torch.device) -> dict[str, Tensor]:
        """Fixed patches: `count` to corrupt (with fixed unit DCT noise and their ILR) and `count` clean ones."""
        if self._patch_source is None:
            raise ConfigError("the NMD curriculum needs the training data (run natsr through the trainer)")
        count = self.config.curriculum_val_size
        patches = fixed_patches(self._patch_source, 2 * count, seed=CURRICULUM_SEED)
        hr, lr = patches["hr"][:count], patches["lr"][:count]
        noise = dct_noise(tuple(hr.shape), torch.Generator().manual_seed(CURRICULUM_SEED))
        val = {"hr": hr, "ilr": interpolated_lr(lr, self.generator.scale), "noise": noise,
               "clean": patches["hr"][count:]}
        return {key: value.to(device) for key, value in val.items()}
