"""What every method shares: its phase schedule, its batch, and the interface the engine drives.

A method is its networks plus loss math. It never calls `backward`, `step` or `requires_grad_`, never moves
devices and never applies n_critic, weight clipping, the gradient penalty or the EMA: the engine
(`engine/train.py`) owns those mechanics for every discriminator of every method, so a new method cannot get them
subtly wrong. Hooks the engine calls: `make_generator` (the only network export and inference build),
`build_losses` (loss networks, training only), `critic_inputs` (what a discriminator compares, for the gradient
penalty), `prepare`, `make_sr`, `generator_losses`, `discriminator_losses`, `after_step`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from perceptsr.archs import ARCHS
from perceptsr.config import positive_finite, require
from perceptsr.errors import CheckpointError, ConfigError, describe_mismatch

GENERATOR = "generator"


@dataclass(frozen=True)
class OptimizerConfig:
    """One optimiser. Adam for most methods; RMSProp for the weight-clipped WGAN (Arjovsky et al. 2017)."""

    kind: Literal["adam", "rmsprop"] = "adam"
    learning_rate: float = 1e-4
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        require(positive_finite(self.learning_rate), "learning_rate",
                f"must be finite and > 0, got {self.learning_rate}")
        require(all(0.0 <= b < 1.0 for b in self.betas), "betas", f"must be in [0, 1), got {list(self.betas)}")
        require(positive_finite(self.eps), "eps", f"must be finite and > 0, got {self.eps}")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0, "weight_decay",
                f"must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True)
class ScheduleConfig:
    """Learning-rate schedule within a phase; iterations count from the phase's start."""

    kind: Literal["constant", "multistep", "cosine"] = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.5
    eta_min: float = 1e-7

    def __post_init__(self) -> None:
        require(all(m >= 0 for m in self.milestones) and list(self.milestones) == sorted(self.milestones),
                "milestones", f"must be increasing iterations >= 0, got {list(self.milestones)}")
        require(positive_finite(self.gamma), "gamma", f"must be finite and > 0, got {self.gamma}")
        require(math.isfinite(self.eta_min) and self.eta_min >= 0, "eta_min", f"must be >= 0, got {self.eta_min}")


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
        require(self.iterations >= 0, "iterations", f"must be >= 0, got {self.iterations}")
        require(self.n_critic >= 1, "n_critic", f"must be >= 1, got {self.n_critic}")
        require(self.clip_discriminator is None or positive_finite(self.clip_discriminator), "clip_discriminator",
                f"must be finite and > 0 (or null), got {self.clip_discriminator}")
        require(math.isfinite(self.gradient_penalty) and self.gradient_penalty >= 0, "gradient_penalty",
                f"must be >= 0, got {self.gradient_penalty}")
        require(0.0 <= self.ema_decay < 1.0, "ema_decay", f"must be in [0, 1), got {self.ema_decay}")
        require(len(set(self.trains)) == len(self.trains), "trains", f"names a network twice: {list(self.trains)}")


def basicsr_gan_phase(*, ema_decay: float) -> Phase:
    """BasicSR's ESRGAN adversarial phase (SROT's, hence FxSR's, too): 400k iterations, Adam 1e-4 β (0.9, 0.99),
    halved at 50k, 100k, 200k and 300k."""
    adam = OptimizerConfig(learning_rate=1e-4, betas=(0.9, 0.99))
    return Phase(
        iterations=400_000, trains=(GENERATOR, "image"), generator_optimizer=adam, discriminator_optimizer=adam,
        schedule=ScheduleConfig(kind="multistep", milestones=(50_000, 100_000, 200_000, 300_000), gamma=0.5),
        ema_decay=ema_decay,
    )


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


@dataclass
class CriticInputs:
    """What one discriminator compares: real and fake inputs (as it sees them) and its real-vs-fake logit.

    The engine's gradient penalty interpolates between `real` and `fake` and differentiates `score`.
    """

    real: Tensor
    fake: Tensor
    score: Callable[[Tensor], Tensor]


def arch_of(config: Any) -> str:
    """The ARCHS name of a generator config dataclass."""
    return next(name for name, spec in ARCHS.items() if type(config) is spec.config)


def check_patch_size(batch: Batch, size: int | None, network: str, fix: str) -> None:
    """A discriminator with a dense head takes one HR patch size; anything else is a ConfigError saying `fix`."""
    height, width = batch.hr.shape[-2:]
    if size is not None and (height, width) != (size, size):
        raise ConfigError(f"the {network} discriminator takes {size}x{size} HR patches but data.patch_size gives "
                          f"{height}x{width}; {fix}")


class Method(nn.Module):
    """Base of every method: `generator`, `discriminators` (may be empty) and the loss terms.

    `config` is the method's frozen config dataclass (with `phases: dict[str, Phase]`); subclasses implement
    `generator_losses` and, if any phase trains a discriminator, `discriminator_losses`. `__init__` builds
    networks only; loss networks (VGG, a frozen NMD) come in `build_losses`, which only training calls.
    `no_gradient_penalty` names the discriminators that are no real-vs-fake critic (with the reason): a phase
    with `gradient_penalty > 0` that trains one is refused when the config is read.
    """

    config: Any
    no_gradient_penalty: ClassVar[dict[str, str]] = {}

    def __init__(self, config: Any, generator: nn.Module, **discriminators: nn.Module) -> None:
        """`generator` comes from `make_generator`; callers build the networks in their historical order (it
        fixes the random initialisation, hence the numbers of a run)."""
        super().__init__()
        self.config = config
        self.generator = generator
        self.discriminators = nn.ModuleDict(discriminators)

    @classmethod
    def make_generator(cls, config: Any) -> nn.Module:
        """The generator alone, from `config.generator` (an ARCHS config): all export and inference build."""
        return ARCHS[arch_of(config.generator)].module(config.generator)

    def build_losses(self) -> None:
        """Build the loss networks (VGG, LPIPS, a frozen NMD); the trainer calls this once, right after __init__."""

    @property
    def phases(self) -> dict[str, Phase]:
        return self.config.phases

    def runs(self, phase: str) -> bool:
        """Whether `phase` has iterations (networks and losses of phases that never run are not built)."""
        return self.phases[phase].iterations > 0

    def trains(self, network: str) -> bool:
        """Whether any phase that runs trains `network` (a PSNR-only run needs no discriminator's patch size)."""
        return any(phase.iterations > 0 and network in phase.trains for phase in self.phases.values())

    def networks(self) -> dict[str, nn.Module]:
        """Every trainable network by the name phases use."""
        nets = dict(self.discriminators.items())
        if self.generator is not None:
            nets[GENERATOR] = self.generator
        return nets

    def check_phases(self) -> None:
        """Phases that run may only train networks the method has."""
        known = set(self.networks())
        for name, phase in self.phases.items():
            missing = [net for net in phase.trains if net not in known] if phase.iterations else []
            if missing:
                raise ConfigError(f"phase {name!r} trains {missing[0]!r}, but the method has only {sorted(known)}")

    def train_dataset(self, data: Any, *, scale: int, progress: bool) -> torch.utils.data.Dataset:
        """The training dataset; methods with extra inputs (segmentation maps) override this."""
        from perceptsr.data.datasets import TrainDataset

        return TrainDataset(
            data.train, scale=scale, patch_size=data.patch_size, hflip=data.hflip, rotate=data.rotate,
            cache_dir=data.cache_dir, progress=progress, downscales=data.scale_augment,
        )

    def on_train_start(self, batch: Batch, dataset: torch.utils.data.Dataset) -> None:
        """Called once before training with step 0's batch and the training data (resume calls it too).

        For checks of the data against the networks and fixed references (a virtual-batch-norm batch, NatSR's
        curriculum patches).
        """

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

    def critic_inputs(self, name: str, batch: Batch, sr: Tensor) -> CriticInputs:
        """What discriminator `name` compares (default: HR vs SR images, its output the logit)."""
        return CriticInputs(batch.hr, sr, self.discriminators[name])

    def parameter_groups(self, network: str, phase: str) -> list[ParamGroup]:
        """How a network's parameters are grouped for its optimiser. Default: one group, full rate, from step 0."""
        return [ParamGroup(list(self.networks()[network].parameters()))]

    def init_generator(self, state_dict: dict[str, Tensor]) -> None:
        """Start the generator from other weights (config `init`). Default: strict, every key must match."""
        try:
            self.generator.load_state_dict(state_dict, strict=True)
        except RuntimeError as error:
            reason = describe_mismatch(self.generator, state_dict, error)
            raise CheckpointError(f"init weights do not fit the generator: {reason}") from None

    def after_step(self, step: int, phase: str, batch: Batch) -> dict[str, float]:
        """Hook after each iteration (e.g. NatSR's curriculum); returns values to log."""
        return {}
