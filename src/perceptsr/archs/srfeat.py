"""SRFeat (Park et al., "SRFeat: Single Image Super-Resolution with Feature Discrimination", ECCV 2018).

The generator is the released TensorFlow `SRGAN_g`; the image and feature discriminators are the SRGAN stack
(`SRGANDiscriminator`), on images and on VGG19 relu5_4 maps. Specification: methods.md §2.
Matches: HyeongseokSon1/SRFeat:model.py (`SRGAN_g`, `SRGAN_d`, `SRGAN_vgg_d`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from perceptsr.archs.blocks import PixelShuffleUpsampler, ResidualBlock, default_init_weights
from perceptsr.archs.discriminators import SRGANDiscriminator, SRGANDiscriminatorConfig
from perceptsr.errors import ConfigError

SRFEAT_SCALES = (2, 3, 4, 8)  # the release is x4 (two x2 stages); the others change only the upsampler

# The feature discriminator's input: VGG19 relu5_4 has 512 channels at 1/16 of the image side (four 2x2 pools).
FEATURE_LAYER = "relu5_4"
FEATURE_CHANNELS = 512
FEATURE_STRIDE = 16


@dataclass(frozen=True)
class SRFeatGeneratorConfig:
    """The SRFeat generator; defaults are the release (128 channels, 16 blocks, x4, about 6.2M parameters)."""

    scale: int = 4  # 2^k: k stages of [conv C -> 4C, depth-to-space 2, LeakyReLU 0.2]; 3: one x3 stage
    num_feat: int = 128
    num_block: int = 16  # residual blocks; blocks 0 .. num_block-2 each feed a 1x1 long-range skip

    def __post_init__(self) -> None:
        if self.scale not in SRFEAT_SCALES:
            raise ConfigError(
                f"srfeat: scale {self.scale} is not supported (supported: {', '.join(map(str, SRFEAT_SCALES))})"
            )
        if self.num_feat < 1 or self.num_block < 1:
            raise ConfigError(
                f"srfeat: num_feat and num_block must be >= 1, got {self.num_feat} and {self.num_block}"
            )


def _lrelu(channels: int) -> nn.Module:
    return nn.LeakyReLU(0.2)


class SRFeatGenerator(nn.Module):
    """9x9 head -> residual blocks with 1x1 long-range skips -> sub-pixel upsampling -> 3x3 tail.

    Each block is conv-BN-LeakyReLU(0.2)-conv-BN plus its input (convs without bias). The fuse follows the
    release exactly: the last block's output plus the 1x1 skips of all *other* blocks. The release builds a
    1x1 conv after the last block too but never uses it (it is not in `SRFeat_full.npz`), so it is not built
    here, and the head's output is not added back. Upsampling uses PyTorch's pixel shuffle; converted TF weights
    have their channels reordered for it (methods.md §0.4).

    The network works in [-1,1] as the release: forward maps the [0,1] input to 2x-1 and returns (y+1)/2, so
    callers see the project's [0,1] convention. N×3×h×w -> N×3×(s·h)×(s·w), unclamped.
    Keys: conv_first, body.{i}.{conv1,bn1,conv2,bn2}, skips.{i}, upsampler.{0,3,...}, conv_last.
    """

    def __init__(self, config: SRFeatGeneratorConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.condition_scales: dict[str, int] = {}
        nf = config.num_feat
        self.conv_first = nn.Conv2d(3, nf, 9, 1, 4)
        self.body = nn.ModuleList(
            [ResidualBlock(nf, batch_norm=True, act=_lrelu) for _ in range(config.num_block)]
        )
        self.skips = nn.ModuleList([nn.Conv2d(nf, nf, 1, bias=False) for _ in range(config.num_block - 1)])
        self.upsampler = PixelShuffleUpsampler(nf, config.scale, _lrelu)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        self._init_weights()

    @torch.no_grad()
    def _init_weights(self) -> None:
        """The release's initialisation: conv weights N(0, 0.01), zero biases, BN weight 1 and bias 0."""
        for layer in self.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.normal_(layer.weight, std=0.01)
                if layer.bias is not None:
                    layer.bias.zero_()
            elif isinstance(layer, nn.BatchNorm2d):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)

    def forward(self, lr: Tensor) -> Tensor:
        feat = self.conv_first(lr * 2 - 1)
        fused = None
        for index, block in enumerate(self.body):
            feat = block(feat)
            if index < len(self.skips):
                skip = self.skips[index](feat)
                fused = skip if fused is None else fused + skip
        if fused is not None:
            feat = feat + fused
        return (self.conv_last(self.upsampler(feat)) + 1) / 2


@dataclass(frozen=True)
class SRFeatDiscriminatorConfig:
    """One SRFeat discriminator: the SRGAN conv stack, then a head (methods.md §2.2).

    head "dense" is the release's Flatten -> Dense(dense_features) -> LeakyReLU -> Dense(1); it fixes the patch
    size. "conv" pools globally before the same two layers, so any patch size works (the release's unused
    `SRGAN_vgg_d2` is likewise fully convolutional).
    """

    num_feat: int = 64  # conv widths num_feat × 1, 1, 2, 2, 4, 4, 8, 8 with strides 1, 2, 1, 2, ...
    head: Literal["dense", "conv"] = "dense"
    dense_features: int = 1024


def _discriminator(config: SRFeatDiscriminatorConfig, in_channels: int, input_size: int) -> SRGANDiscriminator:
    net = SRGANDiscriminator(
        SRGANDiscriminatorConfig(
            num_feat=config.num_feat, input_size=input_size, norm="batch", head=config.head,
            dense_features=config.dense_features, in_channels=in_channels,
        )
    )
    default_init_weights(net)  # He initialisation, as the release's variance_scaling_initializer
    return net


def image_discriminator(config: SRFeatDiscriminatorConfig, patch_size: int) -> SRGANDiscriminator:
    """`SRGAN_d` on HR patches of side `patch_size` (296 in the paper; the flatten is then 19·19·512)."""
    return _discriminator(config, 3, patch_size)


def feature_discriminator(config: SRFeatDiscriminatorConfig, patch_size: int) -> SRGANDiscriminator:
    """`SRGAN_vgg_d` on relu5_4 maps of HR patches of side `patch_size`, which are patch_size // 16 wide.

    The release's TF max-pools pad (ceil) and see 19×19 maps for 296 patches where ours see 18×18; both end
    at 2×2×512 after the stride-2 convs, so the dense head has the release's shape.
    """
    return _discriminator(config, FEATURE_CHANNELS, max(patch_size // FEATURE_STRIDE, 1))
