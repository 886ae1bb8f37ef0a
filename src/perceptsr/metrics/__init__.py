"""Image quality metrics and the table the CLI and evaluator iterate over.

A new metric is one function plus one line in `METRICS` (no registry).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from perceptsr.metrics.niqe import niqe
from perceptsr.metrics.psnr_ssim import psnr, ssim

__all__ = ["METRICS", "MetricSpec", "niqe", "psnr", "ssim"]


@dataclass(frozen=True)
class MetricSpec:
    """How to call a metric: full-reference ones take (sr, hr, ...), no-reference ones take (sr, ...)."""

    name: str
    function: Callable[..., float]
    needs_reference: bool
    higher_is_better: bool


METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec("psnr", psnr, needs_reference=True, higher_is_better=True),
    "ssim": MetricSpec("ssim", ssim, needs_reference=True, higher_is_better=True),
    "niqe": MetricSpec("niqe", niqe, needs_reference=False, higher_is_better=False),
}
