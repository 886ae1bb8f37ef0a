"""MATLAB bicubic upscaling as a parameter-free "generator": the baseline every method is compared with."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from perceptsr.data.resize import imresize
from perceptsr.errors import ConfigError

BICUBIC_SCALES = (2, 3, 4, 8)


@dataclass(frozen=True)
class BicubicConfig:
    """MATLAB `imresize(lr, scale, 'bicubic')` (methods.md §0.1)."""

    scale: int = 4

    def __post_init__(self) -> None:
        if self.scale not in BICUBIC_SCALES:
            raise ConfigError(
                f"bicubic: scale {self.scale} is not supported "
                f"(supported: {', '.join(map(str, BICUBIC_SCALES))})"
            )


class Bicubic(nn.Module):
    """N×3×h×w in [0,1] -> N×3×(s·h)×(s·w), MATLAB bicubic (a = -0.5), unclamped (it overshoots slightly)."""

    def __init__(self, config: BicubicConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.condition_scales: dict[str, int] = {}

    def forward(self, lr: Tensor) -> Tensor:
        return imresize(lr, self.scale)
