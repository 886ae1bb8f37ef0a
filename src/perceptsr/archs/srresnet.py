"""SRResNet generators: the SRGAN paper's (Ledig et al., CVPR 2017) and BasicSR's MSRResNet.

Both take N×3×h×w LR in [0,1] and return N×3×(s·h)×(s·w) in the [0,1] convention, unclamped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.blocks import Activation, PixelShuffleUpsampler, ResidualBlock, default_init_weights
from perceptsr.errors import ConfigError


def _check(name: str, scale: int, scales: tuple[int, ...], num_feat: int, num_block: int) -> None:
    if scale not in scales:
        raise ConfigError(
            f"{name}: scale {scale} is not supported (supported: {', '.join(map(str, scales))})"
        )
    if num_feat < 1 or num_block < 0:
        raise ConfigError(f"{name}: num_feat must be >= 1 and num_block >= 0, got {num_feat} and {num_block}")


SRRESNET_SCALES = (2, 3, 4, 8)
MSRRESNET_SCALES = (2, 3, 4)


@dataclass(frozen=True)
class SRResNetConfig:
    """The paper's SRResNet (methods.md §1.1); defaults are the paper's generator.

    The non-default values of the last six fields describe BasicSR-old's `SRResNet`
    (`batch_norm=False, activation="relu", head_kernel=3, head_activation=False, hr_conv=True, last_kernel=3,
    output_range="unit"`), whose checkpoints `convert/basicsr.py` turns into this arch.
    """

    scale: int = 4  # 2^k: k stages of [conv, PixelShuffle 2, act]; 3: one PixelShuffle 3 stage
    num_feat: int = 64  # channels of the body
    num_block: int = 16  # residual blocks [conv BN act conv BN] + identity
    batch_norm: bool = True  # BN in the residual blocks and after the conv closing the body
    activation: Literal["prelu", "relu"] = "prelu"  # PReLU is per channel, initialised at 0.25
    head_kernel: int = 9  # first conv: 9×9 in the paper
    head_activation: bool = True  # activation after the first conv
    hr_conv: bool = False  # an extra 3×3 conv + act at HR before the last conv (BasicSR-old)
    last_kernel: int = 9  # last conv (to 3 channels): 9×9 in the paper
    output_range: Literal["signed", "unit"] = "signed"  # the net's raw output: [-1,1] (paper) or [0,1]

    def __post_init__(self) -> None:
        _check("srresnet", self.scale, SRRESNET_SCALES, self.num_feat, self.num_block)
        for name in ("head_kernel", "last_kernel"):
            if getattr(self, name) < 1 or getattr(self, name) % 2 == 0:
                raise ConfigError(
                    f"srresnet: {name} must be a positive odd number, got {getattr(self, name)}"
                )


class SRResNet(nn.Module):
    """The paper's generator: head conv + act, residual blocks, conv(+BN) with a long skip, sub-pixel
    upsampling, last conv to RGB.

    The paper's net outputs HR in [-1,1]; with `output_range="signed"` forward maps it to [0,1] as (y+1)/2,
    so every generator here shares one convention. Keys: conv_first, act_first, body.{i}.{conv1,bn1,act,conv2,
    bn2}, conv_body, bn_body, upsampler.{0,2,3,5,...}, conv_hr, act_hr, conv_last.
    """

    def __init__(self, config: SRResNetConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.condition_scales: dict[str, int] = {}
        nf = config.num_feat
        act: Activation = (
            (lambda c: nn.PReLU(c, init=0.25)) if config.activation == "prelu" else (lambda c: nn.ReLU())
        )
        self.conv_first = nn.Conv2d(3, nf, config.head_kernel, 1, config.head_kernel // 2)
        self.act_first = act(nf) if config.head_activation else nn.Identity()
        self.body = nn.Sequential(
            *[ResidualBlock(nf, batch_norm=config.batch_norm, act=act) for _ in range(config.num_block)]
        )
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1, bias=not config.batch_norm)
        self.bn_body = nn.BatchNorm2d(nf) if config.batch_norm else nn.Identity()
        self.upsampler = PixelShuffleUpsampler(nf, config.scale, act)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1) if config.hr_conv else nn.Identity()
        self.act_hr = act(nf) if config.hr_conv else nn.Identity()
        self.conv_last = nn.Conv2d(nf, 3, config.last_kernel, 1, config.last_kernel // 2)
        default_init_weights(
            [self.conv_first, self.conv_body, self.upsampler, self.conv_hr, self.conv_last], 0.1
        )

    def forward(self, lr: Tensor) -> Tensor:
        feat = self.act_first(self.conv_first(lr))
        out = self.bn_body(self.conv_body(self.body(feat))) + feat
        out = self.conv_last(self.act_hr(self.conv_hr(self.upsampler(out))))
        return (out + 1) / 2 if self.config.output_range == "signed" else out


@dataclass(frozen=True)
class MSRResNetConfig:
    """BasicSR's MSRResNet (methods.md §1.2): `MSRResNet(num_in_ch=3, num_out_ch=3, num_feat, num_block,
    upscale=scale)`. Defaults are BasicSR's (about 1.5M parameters at x4)."""

    scale: int = 4  # 4: two [conv, PixelShuffle 2, LeakyReLU]; 2 and 3: one [conv, PixelShuffle s, LeakyReLU]
    num_feat: int = 64
    num_block: int = 16  # residual blocks conv-ReLU-conv, no BN

    def __post_init__(self) -> None:
        _check("msrresnet", self.scale, MSRRESNET_SCALES, self.num_feat, self.num_block)


class MSRResNet(nn.Module):
    """Modified SRResNet without BN, trained on [0,1] images, plus a bilinear-upsampled copy of the input.

    Parameter names equal BasicSR v1's, so a BasicSR `params` dict loads with strict=True and no renaming.
    Matches: XPixelGroup/BasicSR:basicsr/archs/srresnet_arch.py (parity fixtures msrresnet_*).
    """

    def __init__(self, config: MSRResNetConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.condition_scales: dict[str, int] = {}
        nf = config.num_feat
        self.conv_first = nn.Conv2d(3, nf, 3, 1, 1)
        self.body = nn.Sequential(
            *[ResidualBlock(nf, batch_norm=False, act=lambda c: nn.ReLU()) for _ in range(config.num_block)]
        )
        factor = 2 if config.scale == 4 else config.scale
        self.upconv1 = nn.Conv2d(nf, nf * factor * factor, 3, 1, 1)
        self.upconv2 = nn.Conv2d(nf, nf * 4, 3, 1, 1) if config.scale == 4 else None
        self.pixel_shuffle = nn.PixelShuffle(factor)
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.1)
        default_init_weights([self.conv_first, self.upconv1, self.conv_hr, self.conv_last], 0.1)
        if self.upconv2 is not None:
            default_init_weights(self.upconv2, 0.1)

    def forward(self, lr: Tensor) -> Tensor:
        return self.reconstruct(self.body(self.lrelu(self.conv_first(lr))), lr)

    def reconstruct(self, feat: Tensor, lr: Tensor) -> Tensor:
        """The body's features -> HR: sub-pixel upsampling, two convs, plus the bilinear-upsampled input."""
        out = self.lrelu(self.pixel_shuffle(self.upconv1(feat)))
        if self.upconv2 is not None:
            out = self.lrelu(self.pixel_shuffle(self.upconv2(out)))
        out = self.conv_last(self.lrelu(self.conv_hr(out)))
        return out + F.interpolate(lr, scale_factor=self.scale, mode="bilinear", align_corners=False)
