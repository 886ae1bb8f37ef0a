"""VGG feature extraction for perceptual losses, with our own layers in torchvision's key layout.

Layer names follow the paper convention: "conv3_4" is the 4th conv of block 3 (pre-ReLU), "relu3_4" its ReLU
output, "pool3" the max-pool closing block 3. Indices into `features` are torchvision's (methods.md §0.3:
conv1_2 = 2, conv2_2 = 7, conv3_4 = 16, conv4_4 = 25, conv5_4 = 34), so torchvision's `vgg19-dcbb9e9d.pth`
loads as is. The cfg lists are torchvision's "E" (VGG19) and "D" (VGG16), so VGG16 reuses the same code.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from perceptsr.errors import CheckpointError, ConfigError, InputError
from perceptsr.zoo.weights import VGG19_IMAGENET, resolve_weights

# torchvision's configurations "E" (VGG19) and "D" (VGG16): conv widths, "M" = 2x2 max-pool.
VGG19_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                                    512, 512, 512, 512, "M", 512, 512, 512, 512, "M")  # fmt: skip
VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                                    512, 512, 512, "M", 512, 512, 512, "M")  # fmt: skip

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # on the 0..255 scale, BGR order (TF SRGAN/SRFeat)


def layer_indices(cfg: Sequence[int | str]) -> dict[str, int]:
    """Layer name -> index into `features` for a torchvision VGG cfg (each conv is followed by its ReLU)."""
    names: dict[str, int] = {}
    index, block, conv = 0, 1, 1
    for item in cfg:
        if item == "M":
            names[f"pool{block}"] = index
            index, block, conv = index + 1, block + 1, 1
        else:
            names[f"conv{block}_{conv}"] = index
            names[f"relu{block}_{conv}"] = index + 1
            index, conv = index + 2, conv + 1
    return names


class VGGFeatures(nn.Module):
    """torchvision's `vgg*().features`, cut after index `last`: keys `features.{i}.weight/bias` at the convs.

    ReLUs are not in-place, so a pre-ReLU output can be tapped without being overwritten.
    """

    def __init__(self, cfg: Sequence[int | str], last: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in cfg:
            if item == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(in_ch, int(item), 3, 1, 1), nn.ReLU()]
                in_ch = int(item)
        self.features = nn.Sequential(*layers[: last + 1])

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


def load_vgg_features(module: VGGFeatures, state: Mapping[str, Tensor], where: str) -> None:
    """Load a torchvision-layout VGG state_dict strictly into the layers `module` has.

    `features.*` keys beyond the built depth and all `classifier.*` keys are ignored on purpose (the loss
    needs neither); any other key, a missing feature key or a wrong shape is a CheckpointError.
    """
    for key in state:
        if not key.startswith(("features.", "classifier.")):
            raise CheckpointError(f"{where}: unexpected key {key!r} (expected torchvision VGG features.*)")
    wanted = {}
    for key, ref in module.state_dict().items():
        if key not in state:
            raise CheckpointError(f"{where}: missing VGG key {key!r}")
        if tuple(state[key].shape) != tuple(ref.shape):
            raise CheckpointError(
                f"{where}: {key} has shape {tuple(state[key].shape)}, expected {tuple(ref.shape)}"
            )
        wanted[key] = state[key].to(torch.float32)
    module.load_state_dict(wanted, strict=True)


class VGGFeatureExtractor(nn.Module):
    """Frozen VGG19 returning `{layer_name: feature}` for x N×3×H×W RGB in [0,1].

    normalize: "imagenet" = (x − mean) / std (torchvision, BasicSR); "caffe" = RGB→BGR, ×255, minus
    (103.939, 116.779, 123.68) (TF SRGAN/SRFeat). Only layers up to the deepest requested one are built.
    Weights: `weights` path > `$PERCEPTSR_VGG19_WEIGHTS` > torch.hub cache > download. With
    `allow_random=True` and no `weights` path, the net keeps random weights (with a warning) and never looks
    anywhere: an explicit opt-in for tests, so a perceptual loss never runs silently on random weights.
    """

    def __init__(
        self,
        layers: Sequence[str],
        *,
        normalize: Literal["imagenet", "caffe"] = "imagenet",
        weights: str | Path | None = None,
        allow_random: bool = False,
    ) -> None:
        super().__init__()
        indices = layer_indices(VGG19_CFG)
        if not layers:
            raise ConfigError("VGG feature extractor: no layers requested")
        for name in layers:
            if name not in indices:
                raise ConfigError(
                    f"unknown VGG19 layer {name!r}; known: conv1_1 ... conv5_4, relu1_1 ... relu5_4, "
                    "pool1 ... pool5"
                )
        if normalize not in ("imagenet", "caffe"):
            raise ConfigError(f"VGG normalize must be 'imagenet' or 'caffe', got {normalize!r}")
        self.layers = tuple(layers)
        self.normalize = normalize
        self._taps: dict[int, list[str]] = {}
        for name in self.layers:
            self._taps.setdefault(indices[name], []).append(name)
        self.vgg = VGGFeatures(VGG19_CFG, max(self._taps))
        if weights is None and allow_random:
            warnings.warn(
                "RANDOM VGG weights in use (allow_random=True): perceptual features are meaningless",
                stacklevel=2,
            )
        else:
            load_vgg_features(self.vgg, resolve_weights(VGG19_IMAGENET, weights), VGG19_IMAGENET.name)
        if normalize == "imagenet":
            mean, std = torch.tensor(IMAGENET_MEAN), torch.tensor(IMAGENET_STD)
        else:
            mean, std = torch.tensor(CAFFE_MEAN_BGR), torch.ones(3)
        self.register_buffer("mean", mean.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", std.view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> VGGFeatureExtractor:
        """Stay in eval mode whatever the caller asks: the extractor is a fixed measuring instrument."""
        return super().train(False)

    def prepare(self, x: Tensor) -> Tensor:
        """The network input for images x in [0,1] RGB, after the chosen normalisation."""
        if self.normalize == "caffe":
            x = x.flip(1) * 255.0
        return (x - self.mean) / self.std

    def store_in(self, dtype: torch.dtype) -> VGGFeatureExtractor:
        """Keep the convs' weights in `dtype` (bf16 for training under bf16 autocast).

        Autocast casts a conv's fp32 weights to its dtype at every call, and caches that cast only for weights
        that require grad, which a frozen VGG's do not: its weights were converted at every call, twice per SRGAN
        step (the bench's small SRGAN step on a 2-core AMX Xeon: 0.226 s against 0.238). Stored already cast, the
        convs compute the same numbers under autocast (the same rounding, once); outside autocast the input is
        cast to `dtype` here too. The normalisation stays fp32.
        """
        self.vgg.to(dtype)
        return self

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"VGG features expect N×3×H×W RGB images, got shape {tuple(x.shape)}")
        feat = self.prepare(x)
        stored = self.vgg.features[0].weight.dtype
        if feat.dtype != stored and not torch.is_autocast_enabled(feat.device.type):
            feat = feat.to(stored)
        found: dict[str, Tensor] = {}
        for index, layer in enumerate(self.vgg.features):
            feat = layer(feat)
            for name in self._taps.get(index, ()):
                found[name] = feat
        return {name: found[name] for name in self.layers}
