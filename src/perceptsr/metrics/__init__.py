"""Image quality metrics and the one table every measuring path iterates over (`METRICS`).

Each metric is defined once, as a function in this package, and described once here: what it needs besides the SR
image (the HR, the LR, a loaded LPIPS network), which way is better, its column header and the convention it follows
under a protocol (channel and border crop). `MetricSpec.compute` calls any of them the same way, so the evaluator,
`metrics` and the report never special-case one. A new metric is one function plus one line in `METRICS`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor, nn

from perceptsr.errors import InputError
from perceptsr.metrics.consistency import lr_psnr
from perceptsr.metrics.niqe import niqe
from perceptsr.metrics.periodic import lattice_artifacts, lattice_score
from perceptsr.metrics.psnr_ssim import psnr, ssim

__all__ = ["METRICS", "MetricInputs", "MetricSpec", "check_metrics", "lattice_artifacts", "lattice_score", "lr_psnr",
           "niqe", "psnr", "ssim"]


@dataclass(frozen=True)
class MetricInputs:
    """Everything a metric may look at for one image: SR, HR, LR (all (1,3,H,W) in [0,1]) and the protocol's values."""

    sr: Tensor
    hr: Tensor | None = None
    lr: Tensor | None = None
    scale: int = 1
    crop_border: int = 0
    y_channel: bool = True
    lpips: nn.Module | None = None


@dataclass(frozen=True)
class MetricSpec:
    """One metric: `call` computes it from MetricInputs; `needs` names the inputs besides SR ("hr", "lr", "lpips");
    `convention` says how it was measured ({channel}, {crop}, {scale}, {net} are filled in)."""

    name: str
    header: str
    call: Callable[[MetricInputs], float]
    needs: tuple[str, ...]
    higher_is_better: bool
    convention: str
    per_channel: bool = False  # follows the protocol's Y/RGB choice (its header gets -Y or -RGB)

    @property
    def needs_reference(self) -> bool:
        return "hr" in self.needs

    def compute(self, inputs: MetricInputs) -> float:
        """The value for one image (InputError when it cannot be computed, e.g. an image too small)."""
        missing = [need for need in self.needs if getattr(inputs, need) is None]
        if missing:
            raise InputError(f"{self.name} needs the {missing[0]}")
        return float(self.call(inputs))

    def column(self, y_channel: bool) -> str:
        return f"{self.header}-{'Y' if y_channel else 'RGB'}" if self.per_channel else self.header

    def describe(self, *, scale: int, crop_border: int, y_channel: bool, lpips_net: str | None = None) -> str:
        channel = "the MATLAB Y channel (BT.601)" if y_channel else "RGB"
        return self.convention.format(channel=channel, crop=crop_border, scale=scale, net=lpips_net or "?")


def _lpips(inputs: MetricInputs) -> float:
    from perceptsr.metrics.lpips import lpips_distance

    return lpips_distance(inputs.sr, inputs.hr, inputs.lpips, crop_border=inputs.crop_border)


METRICS: dict[str, MetricSpec] = {
    "psnr": MetricSpec(
        "psnr", "PSNR",
        lambda i: psnr(i.sr, i.hr, crop_border=i.crop_border, y_channel=i.y_channel), ("hr",), True,
        "dB on {channel}, crop {crop}", per_channel=True),
    "ssim": MetricSpec(
        "ssim", "SSIM",
        lambda i: ssim(i.sr, i.hr, crop_border=i.crop_border, y_channel=i.y_channel), ("hr",), True,
        "MATLAB-style SSIM on {channel} (mean over channels), crop {crop}", per_channel=True),
    "lr_psnr": MetricSpec(
        "lr_psnr", "LR-PSNR", lambda i: lr_psnr(i.sr, i.lr, scale=i.scale), ("lr",), True,
        "dB, PSNR(MATLAB bicubic x1/{scale} of SR rounded to 8 bit, LR) on RGB, no crop (NTIRE21)"),
    "niqe": MetricSpec(
        "niqe", "NIQE", lambda i: niqe(i.sr, crop_border=i.crop_border), (), False,
        "MATLAB-parity NIQE on Y, crop {crop}"),
    "lpips": MetricSpec(
        "lpips", "LPIPS", _lpips, ("hr", "lpips"), False, "LPIPS v0.1 {net}, RGB, crop {crop}"),
    "lattice": MetricSpec(
        "lattice", "Lattice",
        lambda i: lattice_artifacts(i.sr, i.hr, scale=i.scale, crop_border=i.crop_border), ("hr",), False,
        "dB, how much more SR's spectrum peaks than HR's at the x{scale} sampling lattice (k/{scale} cycles/pixel; "
        "0 = as HR), Y, crop {crop}"),
}


def check_metrics(names: list[str] | tuple[str, ...]) -> list[str]:
    """The names, checked against the table (a one-line InputError for an unknown one)."""
    unknown = [name for name in names if name not in METRICS]
    if unknown:
        raise InputError(f"unknown metric {unknown[0]!r} (known: {', '.join(METRICS)})")
    if not names:
        raise InputError("no metric given")
    return list(dict.fromkeys(names))
