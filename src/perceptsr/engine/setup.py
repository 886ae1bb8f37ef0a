"""Everything a run needs before its first step: the run config, the method, the device and precision.

Every value is checked when the config is read, before a run folder exists: ranges (`config.require`), and the
mechanics the engine applies per phase (gradient penalty, weight clipping, n_critic, EMA) against what the
phase trains and what the method's discriminators can take.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

from perceptsr.config import apply_overrides, dump_yaml, from_dict, read_yaml, require, to_dict
from perceptsr.data.datasets import DataConfig
from perceptsr.errors import ConfigError, InputError
from perceptsr.methods.base import GENERATOR, Method

MAX_SEED = 2**63 - 1

Precision = Literal["auto", "fp32", "bf16", "fp16"]  # auto: inference.fast.resolve_precision


@dataclass(frozen=True)
class TrainConfig:
    """A run: which method with which settings, on which data, and the engine's knobs.

    `model` is the method's own config dataclass (see `perceptsr.methods.METHODS`). `init` starts the generator
    from a release file or a run directory (SRGAN from a pre-trained SRResNet, as the paper does).
    """

    method: str = "srgan"
    model: Any = None
    data: DataConfig = field(default_factory=DataConfig)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Precision = "fp32"
    channels_last: bool = False
    fused_optimizer: bool = True  # Adam's one-pass kernel; false: torch's per-parameter loop (same update)
    init: str | None = None
    log_every: int = 50
    val_every: int = 1000
    save_every: int = 1000
    keep_checkpoints: int = 2

    def __post_init__(self) -> None:
        for key in ("log_every", "val_every", "save_every", "keep_checkpoints"):
            require(getattr(self, key) >= 1, key, f"must be >= 1, got {getattr(self, key)}")
        require(0 <= self.seed <= MAX_SEED, "seed", f"must be in 0..2**63-1, got {self.seed}")

    def check_device(self) -> None:
        """What only this machine can answer: fp16 needs CUDA (a run trained so still exports on a CPU)."""
        cpu_only = self.device == "cpu" or (self.device == "auto" and not torch.cuda.is_available())
        if self.precision == "fp16" and cpu_only:  # (auto resolves to bf16 or fp32 there)
            raise ConfigError("precision: fp16 needs a CUDA device (this run would be on the CPU); use bf16 or fp32")


def _merge(base: dict, update: dict) -> dict:
    """Overlay `update` on `base` recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _unmerge(cls: type, default: Any, merged: dict, given: dict) -> None:
    """Undo the defaults overlay where it would mix two values: a free mapping the user wrote (layer weights:
    `{conv1_1: 1}` means that layer alone, not the default's plus it) and a nested config whose type another key
    picks (SRGAN's generator by `arch`: the other type's defaults do not fit)."""
    hints = typing.get_type_hints(cls)
    for key, value in given.items():
        hint = hints.get(key)
        if typing.get_origin(hint) is dict and not dataclasses.is_dataclass(typing.get_args(hint)[1]):
            merged[key] = copy.deepcopy(value)
    chooser = getattr(cls, "field_types", None)
    for key, chosen in (chooser(merged) if chooser is not None else {}).items():
        if not isinstance(getattr(default, key), chosen):
            merged[key] = copy.deepcopy(given.get(key) or {})


def parse_train_config(data: dict, overrides: Sequence[str] = (), *, for_training: bool = True) -> TrainConfig:
    """Defaults of the named method, overlaid with `data`, then with `--set` overrides; strictly checked.

    `for_training=False` (export) skips the check that needs this machine to be the training one.
    """
    from perceptsr.methods import METHODS

    data = apply_overrides(copy.deepcopy(data), overrides)
    method = data.get("method", TrainConfig.method)
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    spec = METHODS[method]
    default_model = spec.config()
    defaults = to_dict(TrainConfig(method=method, model=default_model))
    merged = _merge(defaults, data)
    if isinstance(merged.get("model"), dict) and isinstance(data.get("model"), dict):
        _unmerge(spec.config, default_model, merged["model"], data["model"])
    model = from_dict(spec.config, merged.pop("model"), "model")
    config = from_dict(TrainConfig, merged, "config")
    check_mechanics(spec.module, model)
    if for_training:
        config.check_device()
    return dataclasses.replace(config, model=model)


def check_mechanics(method: type[Method], model: Any) -> None:
    """Refuse a phase setting the engine cannot honour for this method, naming its key.

    Phases with no iterations never run and are not checked. A gradient penalty, weight clipping or n_critic > 1
    needs a discriminator in the phase; an EMA needs the generator; the gradient penalty needs discriminators that
    are real-vs-fake critics (a method lists those that are not in `no_gradient_penalty`).
    """
    for name, phase in model.phases.items():
        if not phase.iterations:
            continue
        key = f"model.phases.{name}"
        critics = [net for net in phase.trains if net != GENERATOR]
        if not critics:
            for setting, used in (("gradient_penalty", phase.gradient_penalty > 0), ("n_critic", phase.n_critic > 1),
                                  ("clip_discriminator", phase.clip_discriminator is not None)):
                if used:
                    raise ConfigError(f"{key}.{setting}: phase {name} trains no discriminator")
        if phase.ema_decay > 0 and GENERATOR not in phase.trains:
            raise ConfigError(f"{key}.ema_decay: phase {name} does not train the generator")
        refused = [net for net in critics if net in method.no_gradient_penalty]
        if phase.gradient_penalty > 0 and refused:
            raise ConfigError(f"{key}.gradient_penalty: discriminator {refused[0]!r} cannot take a gradient penalty "
                              f"({method.no_gradient_penalty[refused[0]]}); set it to 0")


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    return parse_train_config(read_yaml(path), overrides)


def config_yaml(config: TrainConfig) -> str:
    return dump_yaml(config)


def build_method(config: TrainConfig) -> Method:
    """The method for training: its networks, then its loss networks (VGG weights, a frozen NMD) at once, so the
    random stream and hence a run stay as they were."""
    from perceptsr.methods import METHODS

    method = METHODS[config.method].module(config.model)
    method.check_phases()
    method.build_losses()
    return method


def build_generator(config: TrainConfig) -> nn.Module:
    """The run's generator alone (export, inference): no discriminator, no loss network, no weights read."""
    from perceptsr.methods import METHODS

    return METHODS[config.method].module.make_generator(config.model)


def pick_device(name: str, local_rank: int = 0) -> torch.device:
    """`auto` -> CUDA when present (the local rank's GPU under torchrun), else CPU."""
    if name == "cuda" or (name == "auto" and torch.cuda.is_available()):
        if not torch.cuda.is_available():
            raise InputError("--device cuda was requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def autocast(device: torch.device, precision: Precision) -> contextlib.AbstractContextManager:
    """Mixed precision: bf16 on CPUs/GPUs that have it, fp16 only on CUDA (with a grad scaler)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs CUDA; use bf16 on CPU")
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device.type, dtype=dtype)
