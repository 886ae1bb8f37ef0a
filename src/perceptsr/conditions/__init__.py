"""Condition maps for conditional generators, built from the user's options at inference time.

A generator declares what it takes in `condition_scales` (name -> size factor relative to the LR image):
SFTGAN takes `seg` (8-class probabilities at HR size), FxSR takes `t` (the style map at LR size). Each kind is
made in its own module; this file only dispatches and refuses options a model cannot use.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from perceptsr.errors import InputError


@dataclass(frozen=True)
class ConditionOptions:
    """What the user asked for. None means the model's default (seg: auto-segment; t: 0.8 as FxSR's test)."""

    seg: str | None = None
    seg_model: str | None = None
    t: float | None = None
    t_map: str | None = None


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
