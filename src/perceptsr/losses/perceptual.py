"""The one VGG19 perceptual loss (SRGAN's VGG54, ESRGAN's and FxSR's pre-ReLU layers, SRFeat's φ54, SFTGAN's).

A loss network: methods build it in `build_losses`, only for training, never for export or inference.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from perceptsr.archs.vgg import VGGFeatureExtractor
from perceptsr.errors import ConfigError
from perceptsr.losses.weighted import Weight, weighted_mean


class PerceptualLoss(nn.Module):
    """Σ_l w_l · crit(φ_l(sr)·k, φ_l(hr)·k) over VGG19 layers l, with φ(hr) computed without gradients.

    crit is the mean L1 or mean squared error; k = `feature_scale` (1/12.75 for the TF VGG54 convention,
    methods.md §0.3). Layer names as in `archs.vgg` ("conv5_4" pre-ReLU for BasicSR, "relu5_4" for the paper).
    `clamp` clips the VGG input to [0,1] (SRFeat's release does). A call may pass its own layer weights: floats,
    N×1×1×1 per-sample or N×1×h×w per-pixel tensors (FxSR's t), each term then a weighted mean (`losses.weighted`).
    """

    def __init__(
        self,
        layer_weights: Mapping[str, float],
        *,
        criterion: Literal["l1", "mse"] = "l1",
        normalize: Literal["imagenet", "caffe"] = "imagenet",
        feature_scale: float = 1.0,
        clamp: bool = False,
        weights: str | Path | None = None,
        allow_random: bool = False,
    ) -> None:
        super().__init__()
        if criterion not in ("l1", "mse"):
            raise ConfigError(f"perceptual criterion must be 'l1' or 'mse', got {criterion!r}")
        self.layer_weights = dict(layer_weights)
        self.criterion = criterion
        self.feature_scale = feature_scale
        self.clamp = clamp
        self.extractor = VGGFeatureExtractor(
            list(self.layer_weights), normalize=normalize, weights=weights, allow_random=allow_random
        )

    def features(self, images: Tensor) -> dict[str, Tensor]:
        """φ_l(images)·k for every layer (SRFeat's feature discriminator reads these too)."""
        features = self.extractor(images.clamp(0, 1) if self.clamp else images)
        return {name: features[name] * self.feature_scale for name in self.layer_weights}

    def compare(self, sr_features: Mapping[str, Tensor], hr_features: Mapping[str, Tensor],
                layer_weights: Mapping[str, Weight] | None = None, *, start: Tensor | None = None) -> Tensor:
        """Σ_l w_l · crit(sr_l, hr_l) on features from `features`, added to `start` (zero by default)."""
        total = start if start is not None else next(iter(sr_features.values())).new_zeros(())
        for name, weight in (self.layer_weights if layer_weights is None else layer_weights).items():
            diff = sr_features[name] - hr_features[name]
            total = total + weighted_mean(diff.abs() if self.criterion == "l1" else diff.square(), weight)
        return total

    def forward(self, sr: Tensor, hr: Tensor, layer_weights: Mapping[str, Weight] | None = None) -> Tensor:
        sr_features = self.features(sr)
        with torch.no_grad():
            hr_features = self.features(hr)
        return self.compare(sr_features, hr_features, layer_weights, start=sr.new_zeros(()))
