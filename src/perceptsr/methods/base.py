"""What every method shares: its phase schedule, its batch, and the interface the engine drives.

A method is its networks plus loss math. It never calls `backward`, `step` or `requires_grad_` and never moves
devices: the engine (`engine/train.py`) owns those mechanics, so a new method cannot get them subtly wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from torch import Tensor, nn

from perceptsr.errors import ConfigError

GENERATOR = "generator"


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimiser. Adam for most methods; RMSProp for the weight-clipped WGAN (Arjovsky et al. 2017)."""

    kind: Literal["adam", "rmsprop"] = "adam"
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule within a phase; iterations count from the phase's start."""

    kind: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    eta_min: float = 1e-7


@dataclass(frozen=True)
class Phase:
    """One training phase: how long, which networks learn, and the adversarial mechanics the engine applies.

    `trains` names "generator" and/or keys of the method's `discriminators`. With n_critic > 1 the discriminators
    step every iteration and the generator every n_critic-th (BasicSR's D_update_ratio, WGAN's n_critic).
    """

    iterations: int = 0
    trains: tuple[str, ...] = (GENERATOR,)
    generator_optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    discriminator_optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    n_critic: int = 1
    clip_discriminator: float | None = None
    gradient_penalty: float = 0.0
    ema_decay: float = 0.0

    def __post_init__(self) -> None:
        if self.iterations < 0:
            raise ConfigError(f"phase iterations must be >= 0, got {self.iterations}")
        if self.n_critic < 1:
            raise ConfigError(f"n_critic must be >= 1, got {self.n_critic}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must be in [0, 1), got {self.ema_decay}")


@dataclass
class Batch:
    """A training batch: LR/HR in [0,1] and named extras (condition maps, labels) from the dataset or the method."""

    lr: Tensor
    hr: Tensor
    extras: dict[str, Tensor] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Tensor]) -> Batch:
        rest = {k: v for k, v in data.items() if k not in ("lr", "hr")}
        return cls(lr=data["lr"], hr=data["hr"], extras=rest)

    def to(self, device: torch.device, *, channels_last: bool = False) -> Batch:
        def move(t: Tensor) -> Tensor:
            t = t.to(device, non_blocking=True)
            if channels_last and t.dim() == 4:
                t = t.contiguous(memory_format=torch.channels_last)
            return t

        return Batch(move(self.lr), move(self.hr), {k: move(v) for k, v in self.extras.items()})


@dataclass
class ParamGroup:
    """Parameters of one network that share a learning-rate multiplier and the phase step they start learning at."""

    params: list[nn.Parameter]
    lr_scale: float = 1.0
    start: int = 0


class Method(nn.Module):
    """Base of every method: `generator`, `discriminators` (may be empty) and the loss terms.

    Subclasses set `self.config` (a frozen dataclass with `phases: dict[str, Phase]`) and implement
    `generator_losses` and, if any phase trains a discriminator, `discriminator_losses`.
    """

    config: Any

    def __init__(self, generator: nn.Module | None, **discriminators: nn.Module) -> None:
        super().__init__()
        self.generator = generator
        self.discriminators = nn.ModuleDict(discriminators)

    @property
    def phases(self) -> dict[str, Phase]:
        return self.config.phases

    def networks(self) -> dict[str, nn.Module]:
        """Every trainable network by the name phases use."""
        nets = dict(self.discriminators.items())
        if self.generator is not None:
            nets[GENERATOR] = self.generator
        return nets

    def check_phases(self) -> None:
        """Phases may only train networks the method has."""
        known = set(self.networks())
        for name, phase in self.phases.items():
            for net in phase.trains:
                if net not in known:
                    raise ConfigError(f"phase {name!r} trains {net!r}, but the method has only {sorted(known)}")

    def train_dataset(self, data: Any, *, scale: int, progress: bool) -> torch.utils.data.Dataset:
        """The training dataset; methods with extra inputs (segmentation maps) override this."""
        from perceptsr.data.datasets import TrainDataset

        return TrainDataset(
            data.train, scale=scale, patch_size=data.patch_size, hflip=data.hflip, rotate=data.rotate,
            cache_dir=data.cache_dir, progress=progress,
        )

    def on_train_start(self, batch: Batch) -> None:
        """Called once with the first batch of a fresh run (e.g. to fix a virtual-batch-norm reference)."""

    def prepare(self, batch: Batch, phase: str, rng: torch.Generator) -> Batch:
        """Add per-iteration inputs drawn from `rng` (seeded by the step, so resume is exact). Default: none."""
        return batch

    def make_sr(self, batch: Batch, phase: str) -> Tensor | None:
        """The super-resolved batch, or None for phases that do not run the generator."""
        return self.generator(batch.lr)

    def generator_losses(self, batch: Batch, sr: Tensor, phase: str) -> dict[str, Tensor]:
        raise NotImplementedError

    def discriminator_losses(self, batch: Batch, sr: Tensor | None, phase: str) -> dict[str, Tensor]:
        raise NotImplementedError

    def parameter_groups(self, network: str, phase: str) -> list[ParamGroup]:
        """How a network's parameters are grouped for its optimiser. Default: one group, full rate, from step 0."""
        return [ParamGroup(list(self.networks()[network].parameters()))]

    def init_generator(self, state_dict: dict[str, Tensor]) -> None:
        """Start the generator from other weights (config `init`). Default: strict, every key must match."""
        from perceptsr.errors import CheckpointError

        try:
            self.generator.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            reason = str(error).splitlines()[-1].strip()
            raise CheckpointError(f"init weights do not fit the generator: {reason}") from None

    def after_step(self, step: int, phase: str, batch: Batch) -> dict[str, float]:
        """Hook after each iteration (e.g. NatSR's curriculum); returns values to log."""
        return {}
