"""LPIPS v0.1 (Zhang et al. 2018), natively: AlexNet / VGG16 features in torchvision's key layout + linear heads.

Distance of two images x, y (N×3×H×W RGB in [0,1]): map to [-1,1], shift/scale per channel (the "scaling
layer"), take five ReLU outputs of the backbone, unit-normalise each feature vector over channels, square the
difference, weight channels with the 1×1 linear head of that layer, average over space, sum over layers.
Matches: richzhang/PerceptualSimilarity:lpips/lpips.py (LPIPS.forward, ScalingLayer, NetLinLayer,
normalize_tensor eps 1e-10) and lpips/pretrained_networks.py (slice bounds of `features`).

Weights: the ImageNet backbone is torchvision's file (`features.{i}.weight/bias` keys load as is) and the heads
are the lpips package's `weights/v0.1/{alex,vgg}.pth` (`lin{k}.model.1.weight`, shape 1×C×1×1). Both come
from a folder (`--lpips-weights DIR` or `$PERCEPTSR_LPIPS_WEIGHTS`, files under their published names) or are
downloaded once into the torch.hub cache; every file is hash-checked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from perceptsr.archs.vgg import VGG16_CFG, VGGFeatures, load_vgg_features
from perceptsr.errors import CheckpointError, InputError
from perceptsr.zoo.weights import WeightSource, hub_cached, resolve_weights

log = logging.getLogger(__name__)

LpipsNet = Literal["alex", "vgg"]
FOLDER_ENV = "PERCEPTSR_LPIPS_WEIGHTS"
LIN_URL = "https://github.com/richzhang/PerceptualSimilarity/raw/master/lpips/weights/v0.1/{net}.pth"

# (out_channels, kernel, stride, padding) of torchvision's alexnet().features convs; "M" = MaxPool2d(3, 2).
ALEXNET_CFG: tuple[tuple[int, int, int, int] | str, ...] = (
    (64, 11, 4, 2), "M", (192, 5, 1, 2), "M", (384, 3, 1, 1), (256, 3, 1, 1), (256, 3, 1, 1), "M",
)
SHIFT = (-0.030, -0.088, -0.188)
SCALE = (0.458, 0.448, 0.450)


@dataclass(frozen=True)
class LpipsSpec:
    """One backbone: where its five taps end in `features` (exclusive slice ends) and their channel counts."""

    backbone: WeightSource
    linear: WeightSource
    slice_ends: tuple[int, ...]
    channels: tuple[int, ...]


def _lin_source(net: str, sha256: str) -> WeightSource:
    return WeightSource(name=f"LPIPS v0.1 {net} linear layers", url=LIN_URL.format(net=net), sha256=sha256,
                        env=f"PERCEPTSR_LPIPS_{net.upper()}_LIN", option="--lpips-weights")


LPIPS_NETS: dict[str, LpipsSpec] = {
    "alex": LpipsSpec(
        backbone=WeightSource(name="AlexNet ImageNet weights",
                              url="https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
                              sha256="7be5be79", env="PERCEPTSR_ALEXNET_WEIGHTS", option="--lpips-weights"),
        linear=_lin_source("alex", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
        slice_ends=(2, 5, 8, 10, 12),
        channels=(64, 192, 384, 256, 256),
    ),
    "vgg": LpipsSpec(
        backbone=WeightSource(name="VGG16 ImageNet weights",
                              url="https://download.pytorch.org/models/vgg16-397923af.pth",
                              sha256="397923af", env="PERCEPTSR_VGG16_WEIGHTS", option="--lpips-weights"),
        linear=_lin_source("vgg", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
        slice_ends=(4, 9, 16, 23, 30),
        channels=(64, 128, 256, 512, 512),
    ),
}


class AlexNetFeatures(nn.Module):
    """torchvision's `alexnet().features` (keys `features.{0,3,6,8,10}.weight/bias`), ReLUs not in place."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for item in ALEXNET_CFG:
            if item == "M":
                layers.append(nn.MaxPool2d(3, 2))
            else:
                out_ch, kernel, stride, padding = item
                layers += [nn.Conv2d(in_ch, out_ch, kernel, stride, padding), nn.ReLU()]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


class LinearHead(nn.Module):
    """NetLinLayer: `model.1` is a bias-free 1×1 conv C→1 (`model.0` was the train-time Dropout)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Identity(), nn.Conv2d(channels, 1, 1, bias=False))

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x)


class LPIPS(nn.Module):
    """Frozen LPIPS v0.1 distance; `forward(x, y)` on N×3×H×W RGB in [0,1] returns N distances (≥ 0).

    Built with untrained weights: load real ones with `load_lpips` / `load_lpips_state`.
    """

    def __init__(self, net: LpipsNet = "alex") -> None:
        super().__init__()
        if net not in LPIPS_NETS:
            raise InputError(f"unknown LPIPS network {net!r} (known: {', '.join(LPIPS_NETS)})")
        self.net = net
        spec = LPIPS_NETS[net]
        self.slice_ends = spec.slice_ends
        self.backbone = AlexNetFeatures() if net == "alex" else VGGFeatures(VGG16_CFG, spec.slice_ends[-1] - 1)
        for k, channels in enumerate(spec.channels):
            self.add_module(f"lin{k}", LinearHead(channels))
        self.register_buffer("shift", torch.tensor(SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        """Stay in eval mode: a measuring instrument."""
        return super().train(False)

    def taps(self, x: Tensor) -> list[Tensor]:
        """The five unit-normalised feature maps of images x in [0,1]."""
        feat = (x * 2 - 1 - self.shift) / self.scale
        out, start = [], 0
        for end in self.slice_ends:
            for layer in self.backbone.features[start:end]:
                feat = layer(feat)
            norm = feat.pow(2).sum(dim=1, keepdim=True).sqrt()
            out.append(feat / (norm + 1e-10))
            start = end
        return out

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape != y.shape:
            raise InputError(f"LPIPS needs two N×3×H×W images of one shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        if min(x.shape[-2:]) < 16:
            raise InputError(f"LPIPS needs images of at least 16×16 pixels, got {x.shape[-1]}×{x.shape[-2]}")
        total = x.new_zeros(x.shape[0])
        for k, (fx, fy) in enumerate(zip(self.taps(x), self.taps(y), strict=True)):
            total = total + getattr(self, f"lin{k}")((fx - fy) ** 2).mean(dim=(1, 2, 3))
        return total


def load_lpips_state(
    module: LPIPS, backbone: Mapping[str, Tensor], linear: Mapping[str, Tensor], *, where: str = "LPIPS weights"
) -> LPIPS:
    """Load a torchvision backbone state_dict and an lpips v0.1 `lin*` state_dict into `module`, strictly."""
    load_vgg_features(module.backbone, backbone, f"{where} (backbone)")  # same features.* contract for AlexNet
    expected = {f"lin{k}.model.1.weight" for k in range(len(module.slice_ends))}
    unknown = sorted(set(linear) - expected)
    if unknown:
        raise CheckpointError(f"{where}: unexpected LPIPS key {unknown[0]!r} (expected lin0..lin4.model.1.weight)")
    for k in range(len(module.slice_ends)):
        head: LinearHead = getattr(module, f"lin{k}")
        key, ref = f"lin{k}.model.1.weight", head.model[1].weight
        if key not in linear:
            raise CheckpointError(f"{where}: missing LPIPS key {key!r}")
        if tuple(linear[key].shape) != tuple(ref.shape):
            raise CheckpointError(f"{where}: {key} has shape {tuple(linear[key].shape)}, expected {tuple(ref.shape)}")
        head.load_state_dict({"model.1.weight": linear[key].to(torch.float32)}, strict=True)
    return module


def load_lpips(net: LpipsNet = "alex", *, folder: str | Path | None = None) -> LPIPS:
    """LPIPS with real weights: from `folder` (else `$PERCEPTSR_LPIPS_WEIGHTS`) or the hub cache / a download.

    A folder holds the files under their published names (`alexnet-owt-7be5be79.pth` + `alex.pth`, or
    `vgg16-397923af.pth` + `vgg.pth`). Anything missing, corrupt or offline raises a one-line CheckpointError.
    """
    module = LPIPS(net)
    spec = LPIPS_NETS[net]
    folder = folder or os.environ.get(FOLDER_ENV) or None
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise CheckpointError(f"LPIPS weights folder {folder} does not exist")
        backbone = resolve_weights(spec.backbone, folder / spec.backbone.filename)
        linear = resolve_weights(spec.linear, folder / spec.linear.filename)
    else:
        backbone_env = os.environ.get(spec.backbone.env)
        backbone = resolve_weights(spec.backbone, backbone_env or _download(spec.backbone))
        linear_env = os.environ.get(spec.linear.env)
        cache_name = f"lpips_v0.1_{spec.linear.filename}"
        linear = resolve_weights(spec.linear, linear_env or _download(spec.linear, cache_name))
    return load_lpips_state(module, backbone, linear, where=f"LPIPS {net}")


def _download(source: WeightSource, name: str | None = None) -> Path:
    """The torch.hub-cache copy of `source` (file `name`): downloaded once, sha256-checked (and again when read)."""
    return hub_cached(source, name=name, hint=f"pass --lpips-weights DIR or set {FOLDER_ENV}", progress=False)


def lpips_distance(sr: Tensor, hr: Tensor, model: LPIPS, *, crop_border: int = 0) -> float:
    """LPIPS of one (1,3,H,W) pair in [0,1] after cropping `crop_border` pixels per side (lower is better)."""
    if crop_border:
        sr = sr[..., crop_border:-crop_border, crop_border:-crop_border]
        hr = hr[..., crop_border:-crop_border, crop_border:-crop_border]
    param = next(model.parameters())
    with torch.inference_mode():
        return float(model(sr.to(param), hr.to(param))[0])


def lpips_or_note(*, enabled: bool, net: LpipsNet = "alex",
                  weights: str | Path | None = None) -> tuple[LPIPS | None, str]:
    """The LPIPS network for a measuring command, or (None, why it is left out).

    Weights asked for explicitly (`weights` or $PERCEPTSR_LPIPS_WEIGHTS) must load: a failure is an error. Otherwise
    LPIPS is optional: weights missing from the hub cache offline only leave the column out, with the reason.
    """
    if not enabled:
        return None, "LPIPS disabled with --no-lpips"
    try:
        return load_lpips(net, folder=weights), ""
    except CheckpointError as error:
        if weights is not None or os.environ.get(FOLDER_ENV):
            raise
        return None, f"LPIPS left out: {error}"
