"""NatSR's networks (Soh et al., CVPR 2019): the FRSR generator, the NMD classifier and the spectral-norm D.

FRSR maps N×3×h×w LR in [0,1] to N×3×(s·h)×(s·w), unclamped. NMD (natural manifold discriminator) and the
discriminator map N×3×H×W images to N×1 logits (the spatial mean of a last 1-channel conv). Module names
mirror the TensorFlow scopes (`GEN/conv1`, `GEN/Block{i}/conv{k}`, `CLASSIFIER/conv1_1`, ...), so the
converter (`convert/natsr.py`) is a list of readable key pairs. Specification: methods.md §5.1-5.3.
Matches: JWSoh/NatSR:model.py (FRACTAL, NMD, Discriminator), ops.py (conv2d initialisers, SNconv).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils.parametrizations import spectral_norm

from perceptsr.errors import ConfigError, InputError

FRSR_SCALES = (2, 3, 4)
GROUPS = 4  # the fractal skip pattern joins the dense blocks in four equal groups


@torch.no_grad()
def _init(conv: nn.Conv2d, *, relu: bool) -> nn.Conv2d:
    """The original's initialisers: He (variance scaling) before a ReLU, Xavier otherwise; zero biases."""
    if relu:
        nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
    else:
        nn.init.xavier_uniform_(conv.weight)
    if conv.bias is not None:
        conv.bias.zero_()
    return conv


@dataclass(frozen=True)
class FRSRConfig:
    """FRSR (methods.md §5.1). Defaults are the released model: 64 channels, 8 dense blocks of 5 convs (4.96M)."""

    scale: int = 4  # 4: two [conv -> 4·C, pixel shuffle 2] stages; 2, 3: one [conv -> s²·C, pixel shuffle s]
    num_feat: int = 64  # channels of the trunk and of every dense-block conv
    num_block: int = 8  # dense blocks; a multiple of 4 (the fractal skips join four equal groups)
    num_layer: int = 5  # 3×3 conv + ReLU layers per dense block, each on the concatenation of all before
    res_scale: float = 0.1  # a block returns x + res_scale · fusion

    def __post_init__(self) -> None:
        if self.scale not in FRSR_SCALES:
            raise ConfigError(f"frsr: scale {self.scale} is not supported (supported: 2, 3, 4)")
        if self.num_feat < 1 or self.num_layer < 1:
            raise ConfigError(f"frsr: num_feat and num_layer must be >= 1, got {self.num_feat}, {self.num_layer}")
        if self.num_block < GROUPS or self.num_block % GROUPS:
            raise ConfigError(f"frsr: num_block must be a positive multiple of 4, got {self.num_block}")


class DenseBlock(nn.Module):
    """x + res_scale · conv_fusion(cat[x, f1, ..., fL]) with f_k = ReLU(conv_{k-1}(cat[x, f1, ..., f_{k-1}]))."""

    def __init__(self, num_feat: int, num_layer: int, res_scale: float) -> None:
        super().__init__()
        self.res_scale = res_scale
        self.convs = nn.ModuleList(
            _init(nn.Conv2d(num_feat * (k + 1), num_feat, 3, 1, 1), relu=True) for k in range(num_layer)
        )
        self.conv_fusion = _init(nn.Conv2d(num_feat * (num_layer + 1), num_feat, 1), relu=False)

    def forward(self, x: Tensor) -> Tensor:
        features = [x]
        for conv in self.convs:
            features.append(F.relu(conv(torch.cat(features, 1))))
        return x + self.res_scale * self.conv_fusion(torch.cat(features, 1))


@fx.wrap
def _check_lr(lr: Tensor) -> Tensor:
    """`lr` if it is N×3×h×w, else an InputError; a leaf for torch.fx, so FRSR traces (perceptsr.inference.fusion)."""
    if lr.ndim != 4 or lr.shape[1] != 3:
        raise InputError(f"frsr expects N×3×h×w images, got shape {tuple(lr.shape)}")
    return lr


class FRSR(nn.Module):
    """The fractal residual SR network, NatSR's generator (also trained alone with L1 as "FRSR").

    With c1 = conv1(lr) and G0..G3 the four groups of dense blocks:
    c2 = G0(c1) + c1; c3 = G1(c2) + c2 + c1; c4 = G2(c3) + c3; c5 = G3(c4) + c4 + c3 + c1;
    out = conv_out(upsample(conv2(c5) + c1)). No activation outside the dense blocks.
    """

    def __init__(self, config: FRSRConfig) -> None:
        super().__init__()
        self.config, self.scale, self.condition_scales = config, config.scale, {}
        nf = config.num_feat
        self.conv1 = _init(nn.Conv2d(3, nf, 3, 1, 1), relu=False)
        self.blocks = nn.ModuleList(
            DenseBlock(nf, config.num_layer, config.res_scale) for _ in range(config.num_block)
        )
        self.conv2 = _init(nn.Conv2d(nf, nf, 3, 1, 1), relu=False)
        factor = 2 if config.scale == 4 else config.scale
        self.conv_up1 = _init(nn.Conv2d(nf, nf * factor**2, 3, 1, 1), relu=False)
        self.conv_up2 = _init(nn.Conv2d(nf, nf * 4, 3, 1, 1), relu=False) if config.scale == 4 else None
        self.factor = factor
        self.conv_out = _init(nn.Conv2d(nf, 3, 3, 1, 1), relu=False)

    def _group(self, index: int, x: Tensor) -> Tensor:
        size = self.config.num_block // GROUPS
        for block in self.blocks[index * size : (index + 1) * size]:
            x = block(x)
        return x

    def forward(self, lr: Tensor) -> Tensor:
        c1 = self.conv1(_check_lr(lr))
        c2 = self._group(0, c1) + c1
        c3 = self._group(1, c2) + c2 + c1
        c4 = self._group(2, c3) + c3
        c5 = self._group(3, c4) + c4 + c3 + c1
        x = F.pixel_shuffle(self.conv_up1(self.conv2(c5) + c1), self.factor)
        if self.conv_up2 is not None:
            x = F.pixel_shuffle(self.conv_up2(x), 2)
        return self.conv_out(x)


@dataclass(frozen=True)
class NMDConfig:
    """The natural manifold discriminator (methods.md §5.2): four VGG stages, widths num_feat × 1, 2, 4, 8."""

    num_feat: int = 64


class NMD(nn.Module):
    """[conv-ReLU ×2, maxpool 2] × 4 -> conv5_1 (→ 1) -> spatial mean: the logit of "natural" (clean HR = 1).

    No batch norm, no spectral norm, fully convolutional: H and W must be multiples of 16.
    """

    def __init__(self, config: NMDConfig) -> None:
        super().__init__()
        if config.num_feat < 1:
            raise ConfigError(f"nmd: num_feat must be >= 1, got {config.num_feat}")
        self.config = config
        in_ch = 3
        for stage in range(1, 5):
            width = config.num_feat * 2 ** (stage - 1)
            self.add_module(f"conv{stage}_1", _init(nn.Conv2d(in_ch, width, 3, 1, 1), relu=True))
            self.add_module(f"conv{stage}_2", _init(nn.Conv2d(width, width, 3, 1, 1), relu=True))
            in_ch = width
        self.conv5_1 = _init(nn.Conv2d(in_ch, 1, 3, 1, 1), relu=False)

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3 or x.shape[2] % 16 or x.shape[3] % 16:
            raise InputError(f"nmd expects N×3×H×W images with H, W multiples of 16, got {tuple(x.shape)}")
        for stage in range(1, 5):
            x = F.relu(self.get_submodule(f"conv{stage}_1")(x))
            x = F.relu(self.get_submodule(f"conv{stage}_2")(x))
            x = F.max_pool2d(x, 2)
        return self.conv5_1(x).mean(dim=(2, 3))


@dataclass(frozen=True)
class NatSRDiscriminatorConfig:
    """NatSR's adversarial D (methods.md §5.3): 10 spectral-norm convs, widths num_feat × 1, 1, 2, 2, ..., 16, 16."""

    num_feat: int = 64
    antialias: bool = False  # not the paper's: blur before subsampling (see NatSRDiscriminator)


def blur_downsample(x: Tensor) -> Tensor:
    """Halve H and W after a [1,2,1]⊗[1,2,1]/16 blur per channel (BlurPool, Zhang 2019).

    The binomial kernel is zero at the Nyquist frequency, so a period-2 pattern (a checkerboard) cannot alias into
    the lower resolution, and the gradient sent back has no component at the sampling lattice."""
    kernel = torch.tensor([1.0, 2.0, 1.0], dtype=x.dtype, device=x.device)
    kernel = (kernel[:, None] * kernel[None, :] / 16).expand(x.shape[1], 1, 3, 3)
    return F.conv2d(x, kernel, stride=2, padding=1, groups=x.shape[1])


class NatSRDiscriminator(nn.Module):
    """Pairs [3×3 conv stride 1, 3×3 conv stride 2] × 5, LeakyReLU 0.2, then conv6_1 (→ 1) and a spatial mean.

    Every conv (conv6_1 too) is spectrally normalised with one power iteration per training forward, as
    `SNconv`. Padding is PyTorch's symmetric 1 (TF's stride-2 SAME pads bottom/right only; no D weights are
    released, so nothing needs TF's exact grid). Output: N×1 logits.

    `antialias=True` (the project's option) makes each stride-2 conv a stride-1 conv followed, after its
    activation, by `blur_downsample`: the strided D's gradient carries 40-60% of its power on the x4 sampling
    lattice and grows a grid in a pixel-shuffle generator (the bundled natsr-x4's card); keys stay the same.
    """

    def __init__(self, config: NatSRDiscriminatorConfig) -> None:
        super().__init__()
        if config.num_feat < 1:
            raise ConfigError(f"natsr discriminator: num_feat must be >= 1, got {config.num_feat}")
        self.config = config
        in_ch = 3
        for stage in range(1, 6):
            width = config.num_feat * 2 ** (stage - 1)
            for index, stride in ((1, 1), (2, 1 if config.antialias else 2)):
                conv = _init(nn.Conv2d(in_ch, width, 3, stride, 1), relu=True)
                self.add_module(f"conv{stage}_{index}", spectral_norm(conv))
                in_ch = width
        self.conv6_1 = spectral_norm(_init(nn.Conv2d(in_ch, 1, 3, 1, 1), relu=True))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise InputError(f"natsr discriminator expects N×3×H×W images, got shape {tuple(x.shape)}")
        for stage in range(1, 6):
            for index in (1, 2):
                x = F.leaky_relu(self.get_submodule(f"conv{stage}_{index}")(x), 0.2)
            if self.config.antialias:
                x = blur_downsample(x)
        return self.conv6_1(x).mean(dim=(2, 3))
