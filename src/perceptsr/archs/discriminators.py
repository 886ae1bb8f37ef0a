"""Image discriminators. Not in ARCHS (releases hold generators only): methods build these directly.

Input: N×3×H×W images in [0,1] (or, with `in_channels`, feature maps: SRFeat's feature discriminator);
output: N×1 logits (the losses apply the sigmoid where they need one).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from perceptsr.archs.blocks import VirtualBatchNorm2d
from perceptsr.errors import ConfigError, InputError


def _check_images(name: str, x: Tensor, size: int | None, channels: int = 3) -> None:
    if x.ndim != 4 or x.shape[1] != channels:
        raise InputError(f"{name} expects N×{channels}×H×W images, got shape {tuple(x.shape)}")
    if size is not None and (x.shape[2] != size or x.shape[3] != size):
        raise InputError(f"{name} expects {size}×{size} patches, got {x.shape[2]}×{x.shape[3]}")


@dataclass(frozen=True)
class VGGStyleDiscriminatorConfig:
    """BasicSR's VGG-style discriminator (methods.md §1.2), used by MSRGAN/ESRGAN training."""

    num_feat: int = 64  # channels of the first stage; stages have ×1, ×2, ×4, ×8, ×8 (, ×8)
    input_size: Literal[128, 256] = 128  # patch size; the flatten before linear1 assumes 4×4 at the end


class VGGStyleDiscriminator(nn.Module):
    """Pairs [conv3 s1, conv4 s2] with BN (not after conv0_0), LeakyReLU 0.2, then Linear(·→100) → Linear(1).

    Parameter names equal BasicSR's (conv0_0, conv0_1, bn0_1, ..., linear1, linear2).
    Matches: XPixelGroup/BasicSR:basicsr/archs/discriminator_arch.py (parity fixtures vggdisc_*).
    """

    def __init__(self, config: VGGStyleDiscriminatorConfig) -> None:
        super().__init__()
        if config.input_size not in (128, 256):
            raise ConfigError(
                f"VGG-style discriminator: input_size must be 128 or 256, got {config.input_size}"
            )
        self.config = config
        nf = config.num_feat
        widths = [nf, nf * 2, nf * 4, nf * 8, nf * 8] + ([nf * 8] if config.input_size == 256 else [])
        self.num_stages = len(widths)
        in_ch = 3
        for stage, width in enumerate(widths):
            first = stage == 0
            self.add_module(f"conv{stage}_0", nn.Conv2d(in_ch, width, 3, 1, 1, bias=first))
            if not first:
                self.add_module(f"bn{stage}_0", nn.BatchNorm2d(width))
            self.add_module(f"conv{stage}_1", nn.Conv2d(width, width, 4, 2, 1, bias=False))
            self.add_module(f"bn{stage}_1", nn.BatchNorm2d(width))
            in_ch = width
        self.linear1 = nn.Linear(nf * 8 * 4 * 4, 100)
        self.linear2 = nn.Linear(100, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor) -> Tensor:
        _check_images("VGG-style discriminator", x, self.config.input_size)
        feat = x
        for stage in range(self.num_stages):
            feat = self.get_submodule(f"conv{stage}_0")(feat)
            if stage > 0:
                feat = self.get_submodule(f"bn{stage}_0")(feat)
            feat = self.lrelu(feat)
            feat = self.lrelu(self.get_submodule(f"bn{stage}_1")(self.get_submodule(f"conv{stage}_1")(feat)))
        return self.linear2(self.lrelu(self.linear1(feat.flatten(1))))


@dataclass(frozen=True)
class SRGANDiscriminatorConfig:
    """The SRGAN paper's discriminator (methods.md §1.1)."""

    num_feat: int = 64  # conv widths are num_feat × 1, 1, 2, 2, 4, 4, 8, 8 with strides 1, 2, 1, 2, ...
    input_size: int = 96  # HR patch size; only the dense head needs it
    norm: Literal["batch", "virtual", "none"] = "batch"  # "none" for WGAN-GP (methods.md §1.3)
    head: Literal["dense", "conv"] = "dense"  # "conv": global average pool, so any patch size works
    dense_features: int = 1024
    in_channels: int = 3  # 512 for SRFeat's feature discriminator on VGG19 relu5_4 maps

    def __post_init__(self) -> None:
        if min(self.num_feat, self.input_size, self.dense_features, self.in_channels) < 1:
            raise ConfigError(
                "SRGAN discriminator: num_feat, input_size, dense_features and in_channels must be >= 1"
            )


class _ConvBlock(nn.Module):
    """3×3 conv (stride 1 or 2) → optional BN / virtual BN → LeakyReLU 0.2."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, norm: str) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_ch, out_ch, 3, stride, 1, bias=norm == "none")
        if norm == "batch":
            self.norm: nn.Module = nn.BatchNorm2d(out_ch)
        elif norm == "virtual":
            self.norm = VirtualBatchNorm2d(out_ch)
        else:
            self.norm = nn.Identity()
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x: Tensor, num_ref: int) -> Tensor:
        x = self.conv(x)
        x = self.norm(x, num_ref) if isinstance(self.norm, VirtualBatchNorm2d) else self.norm(x)
        return self.act(x)


class SRGANDiscriminator(nn.Module):
    """Eight 3×3 convs (BN except the first, LeakyReLU 0.2), Dense 1024 → LeakyReLU → Dense 1 (a logit).

    With `norm="virtual"` the net holds a fixed reference batch (`set_reference`, called once by the
    method/engine at the start of training). Every forward runs the reference through the convs together with
    the input, each VirtualBatchNorm2d normalises with the reference statistics, and only the input's rows are
    returned. The reference is a buffer, so it is saved and restored with the state_dict.
    """

    def __init__(self, config: SRGANDiscriminatorConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.num_feat
        widths = [nf, nf, nf * 2, nf * 2, nf * 4, nf * 4, nf * 8, nf * 8]
        blocks, in_ch = [], config.in_channels
        for index, width in enumerate(widths):
            blocks.append(_ConvBlock(in_ch, width, 1 + index % 2, "none" if index == 0 else config.norm))
            in_ch = width
        self.body = nn.ModuleList(blocks)
        side = config.input_size
        for _ in range(4):
            side = (side + 1) // 2  # a 3×3 stride-2 conv with padding 1 gives ceil(side / 2)
        flat = in_ch * side * side if config.head == "dense" else in_ch
        self.linear1 = nn.Linear(flat, config.dense_features)
        self.linear2 = nn.Linear(config.dense_features, 1)
        self.act = nn.LeakyReLU(0.2)
        if config.norm == "virtual":
            self.register_buffer("reference", None)

    def set_reference(self, hr: Tensor) -> None:
        """Fix the virtual-BN reference batch (N×3×H×W in [0,1]); stored detached, on this module's device."""
        if self.config.norm != "virtual":
            raise ConfigError("set_reference needs an SRGAN discriminator with norm='virtual'")
        _check_images("SRGAN discriminator reference", hr, self._size(), self.config.in_channels)
        if hr.shape[0] < 1:
            raise InputError("the virtual-BN reference batch is empty")
        self.reference = hr.detach().clone().to(self.linear1.weight)

    def forward(self, x: Tensor) -> Tensor:
        _check_images("SRGAN discriminator", x, self._size(), self.config.in_channels)
        num_ref = 0
        if self.config.norm == "virtual":
            if self.reference is None:
                raise RuntimeError(
                    "SRGAN discriminator with norm='virtual' has no reference batch: "
                    "call set_reference(hr_batch) once before training"
                )
            if self.reference.shape[2:] != x.shape[2:]:
                raise InputError(
                    f"SRGAN discriminator: patches of {x.shape[2]}×{x.shape[3]} differ from the "
                    f"reference batch's {self.reference.shape[2]}×{self.reference.shape[3]}"
                )
            num_ref = self.reference.shape[0]
            x = torch.cat([self.reference.to(x), x])
        feat = x
        for block in self.body:
            feat = block(feat, num_ref)
        feat = feat.flatten(1) if self.config.head == "dense" else feat.mean(dim=(2, 3))
        return self.linear2(self.act(self.linear1(feat)))[num_ref:]

    def _size(self) -> int | None:
        return self.config.input_size if self.config.head == "dense" else None

    def _load_from_state_dict(self, state_dict: Mapping[str, Any], prefix: str, *args: Any) -> None:
        # The reference buffer starts as None, which load_state_dict would skip: allocate it first.
        key = prefix + "reference"
        if self.config.norm == "virtual" and key in state_dict and self.reference is None:
            self.reference = torch.empty_like(state_dict[key], device=self.linear1.weight.device)
        super()._load_from_state_dict(state_dict, prefix, *args)


# Image discriminators a method may pick by name (SRGAN's `discriminator_arch`): name -> (module, config).
IMAGE_DISCRIMINATORS: dict[str, tuple[type[nn.Module], type]] = {
    "srgan": (SRGANDiscriminator, SRGANDiscriminatorConfig),
    "vggstyle": (VGGStyleDiscriminator, VGGStyleDiscriminatorConfig),
}
