"""Condition maps for conditional generators, built from the user's options at inference time.

A generator declares what it takes in `condition_scales` (name -> size factor relative to the LR image):
SFTGAN takes `seg` (8-class probabilities at HR size), FxSR takes `t` (the style map at LR size). Each kind is
made in its own module; this file only dispatches and refuses options a model cannot use.

Every command that runs models takes them as `NAME_OR_FILE[:key=value,...]` (`parse_model_spec`): options `t=0.3`
(FxSR style), `t_map=FILE`, `seg=auto|FILE`, `seg_model=FILE` (SFTGAN) and `label=NAME` (the name in tables); options
not given there come from the command's own `--t`, `--t-map`, `--seg`, `--seg-model` flags, which reach only the
models that take them (`options_for`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path

from torch import Tensor, nn

from perceptsr.errors import InputError


@dataclass(frozen=True)
class ConditionOptions:
    """What the user asked for. None means the model's default (seg: auto-segment; t: 0.8 as FxSR's test)."""

    seg: str | None = None
    seg_model: str | None = None
    t: float | None = None
    t_map: str | None = None


OPTION_KEYS = ("t", "t_map", "seg", "seg_model", "label")


@dataclass(frozen=True)
class ModelSpec:
    """One compared model: where it comes from, its display label and its condition options."""

    source: str
    label: str
    options: ConditionOptions
    defaulted: frozenset[str] = frozenset()  # option keys filled from the command's flags, not given in the spec

    def option_text(self) -> str:
        return ",".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                        for k, v in asdict(self.options).items() if v is not None)


def parse_model_spec(text: str, defaults: ConditionOptions | None = None) -> ModelSpec:
    """`FILE:t=0.3,label=ours` -> ModelSpec; options not given come from `defaults` (the command's --t, --seg, ...).

    A bad option is a one-line InputError.
    """
    source, values = text, {}
    head, sep, tail = text.rpartition(":")
    if sep and head and "=" in tail:
        source = head
        for item in tail.split(","):
            key, eq, value = item.partition("=")
            key = key.strip()
            if not eq or key not in OPTION_KEYS or not value.strip():
                raise InputError(f"model option {item!r} in {text!r}: use key=value with key one of "
                                 f"{', '.join(OPTION_KEYS)}")
            values[key] = value.strip()
    if not source:
        raise InputError(f"model argument {text!r} names no model")
    t = None
    if "t" in values:
        try:
            t = float(values["t"])
        except ValueError:
            raise InputError(f"model option t={values['t']!r} in {text!r} is not a number") from None
    given = {"seg": values.get("seg"), "seg_model": values.get("seg_model"), "t": t, "t_map": values.get("t_map")}
    explicit = {k: v for k, v in given.items() if v is not None}
    flags = {k: v for k, v in asdict(defaults or ConditionOptions()).items() if v is not None and k not in explicit}
    # bicubic takes no condition: the command's flags are for the other models (recorded, so a command can tell)
    options = ConditionOptions(**(explicit if source == "bicubic" else {**flags, **explicit}))
    spec = ModelSpec(source=source, label="", options=options)
    label = values.get("label") or default_label(source, spec.option_text())
    return ModelSpec(source=source, label=label, options=options, defaulted=frozenset(flags))


def options_for(model: nn.Module, spec: ModelSpec) -> ConditionOptions:
    """The options `model` runs with: the spec's own always (so a wrong one is refused by `build_conditions`), the
    command's flags only for conditions the model takes (`report --t 0.3` sets t for FxSR models, not for others)."""
    unused = set(unused_flags(model, spec))
    return replace(spec.options, **{key: None for key in unused})


def unused_flags(model: nn.Module, spec: ModelSpec) -> list[str]:
    """The command's condition flags (option keys) that `model` does not take, e.g. ["t"] for bicubic with --t."""
    wanted = getattr(model, "condition_scales", None) or {}
    return sorted(key for key in spec.defaulted if ("t" if key in ("t", "t_map") else "seg") not in wanted)


def default_label(source: str, option_text: str) -> str:
    """`bicubic`, the bundled name, or the file's stem; options in parentheses."""
    from perceptsr.zoo.models import BUNDLED

    name = source if source == "bicubic" or source in BUNDLED else Path(source).stem
    return f"{name} ({option_text})" if option_text else name


def build_conditions(model: nn.Module, lr: Tensor, options: ConditionOptions, *, stem: str = "") -> dict[str, Tensor]:
    """Condition tensors for `model` on LR image `lr` (1,3,h,w); `stem` names the image in error messages."""
    wanted = getattr(model, "condition_scales", {})
    out: dict[str, Tensor] = {}
    if "seg" in wanted:
        from perceptsr.conditions.seg import seg_condition

        out["seg"] = seg_condition(lr, options.seg or "auto", scale=wanted["seg"], seg_model=options.seg_model,
                                   stem=stem)
    elif options.seg is not None or options.seg_model is not None:
        raise InputError("--seg / --seg-model apply only to SFTGAN models")
    if "t" in wanted:
        from perceptsr.conditions.tmap import t_condition

        out["t"] = t_condition(lr, t=options.t, t_map=options.t_map)
    elif options.t is not None or options.t_map is not None:
        raise InputError("--t / --t-map apply only to FxSR models")
    return out
