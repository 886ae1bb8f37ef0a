"""Everything a run needs before its first step: the run config, the method, the device and precision."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from perceptsr.config import apply_overrides, dump_yaml, from_dict, read_yaml, to_dict
from perceptsr.data.datasets import DataConfig
from perceptsr.errors import ConfigError, InputError
from perceptsr.methods.base import Method

Precision = Literal["fp32", "bf16", "fp16"]


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
    init: str | None = None
    log_every: int = 50
    val_every: int = 1000
    save_every: int = 1000
    keep_checkpoints: int = 2


def _merge(base: dict, update: dict) -> dict:
    """Overlay `update` on `base` recursively (mappings merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_train_config(data: dict, overrides: Sequence[str] = ()) -> TrainConfig:
    """Defaults of the named method, overlaid with `data`, then with `--set` overrides; strictly checked."""
    from perceptsr.methods import METHODS

    data = apply_overrides(copy.deepcopy(data), overrides)
    method = data.get("method", TrainConfig.method)
    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; known: {', '.join(sorted(METHODS))}")
    spec = METHODS[method]
    defaults = to_dict(TrainConfig(method=method, model=spec.config()))
    merged = _merge(defaults, data)
    model = from_dict(spec.config, merged.pop("model"), "model")
    config = from_dict(TrainConfig, merged, "config")
    return dataclasses.replace(config, model=model)


def load_train_config(path: str | Path, overrides: Sequence[str] = ()) -> TrainConfig:
    return parse_train_config(read_yaml(path), overrides)


def config_yaml(config: TrainConfig) -> str:
    return dump_yaml(config)


def build_method(config: TrainConfig) -> Method:
    from perceptsr.methods import METHODS

    method = METHODS[config.method].module(config.model)
    method.check_phases()
    return method


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
