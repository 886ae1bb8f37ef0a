"""OutdoorSceneSeg: SFTGAN's segmentation prior, a dilated ResNet-101 with 8 outdoor classes (methods.md §3.1).

Not a generator (it is in `archs.PRIORS`, not `ARCHS`): release files can hold it so that `--seg-model FILE`
and `perceptsr segment` can load it. `forward` is the original network exactly: it takes the Caffe-style
input (BGR·255 minus (103.939, 116.779, 123.68)), N×3×H×W with H, W multiples of 8, and returns the softmax
over 8 classes, N×8×H×W (output stride 8, then a grouped 16×16 transposed conv back to the input size).
Preprocessing from [0,1] RGB lives in `perceptsr.conditions.seg`. Parameter names are the released ones
(`block.sequential` flattening: feature.{0..47}, deconv). Channel order: 0 background, 1 sky, 2 water,
3 grass, 4 mountain, 5 building, 6 plant, 7 animal.
Matches: xinntao/SFTGAN:pytorch_test/architectures.py (OutdoorSceneSeg, Res131), parity fixture outdoorsceneseg_full.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from perceptsr.errors import ConfigError, InputError

CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
STRIDE = 8  # H and W of the input must be multiples of this


@dataclass(frozen=True)
class OutdoorSceneSegConfig:
    """Defaults are the released network (52.2M parameters); smaller values make test-sized nets."""

    scale: int = 1  # release files record a scale; the network keeps its input size
    num_classes: int = 8
    blocks: tuple[int, int, int, int] = (3, 4, 23, 3)  # bottlenecks of conv2..conv5 (ResNet-101)
    width: int = 64  # stem width; stage k has width·2^k mid and 4·width·2^k output channels

    def __post_init__(self) -> None:
        if self.scale != 1:
            raise ConfigError(f"outdoorsceneseg: scale must be 1 (it is a segmentation network), got {self.scale}")
        if len(self.blocks) != 4 or min(self.blocks) < 1 or self.width < 1 or self.num_classes < 1:
            raise ConfigError("outdoorsceneseg: blocks must be 4 counts >= 1, width and num_classes >= 1")


def _conv_bn(c_in: int, c_out: int, kernel: int, *, stride: int = 1, dilation: int = 1,
             relu: bool = True) -> list[nn.Module]:
    """[conv (no bias, 'same' padding for odd kernels), BN, ReLU?] as a flat list (B.conv_block, mode CNA)."""
    padding = dilation * (kernel - 1) // 2
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, kernel, stride, padding, dilation, bias=False),
                               nn.BatchNorm2d(c_out)]
    return [*layers, nn.ReLU()] if relu else layers


class Res131(nn.Module):
    """Bottleneck relu(proj(x) + [1×1, 3×3 (stride, dilation), 1×1](x)); proj only when the width changes."""

    def __init__(self, c_in: int, mid: int, c_out: int, *, dilation: int = 1, stride: int = 1) -> None:
        super().__init__()
        self.res = nn.Sequential(*_conv_bn(c_in, mid, 1), *_conv_bn(mid, mid, 3, stride=stride, dilation=dilation),
                                 *_conv_bn(mid, c_out, 1, relu=False))
        self.proj = nn.Sequential(*_conv_bn(c_in, c_out, 1, stride=stride, relu=False)) if c_in != c_out else None

    def forward(self, x: Tensor) -> Tensor:
        shortcut = self.proj(x) if self.proj is not None else x
        return (shortcut + self.res(x)).relu()


class OutdoorSceneSeg(nn.Module):
    """forward(caffe_bgr N×3×H×W, H and W multiples of 8) -> class probabilities N×num_classes×H×W."""

    def __init__(self, config: OutdoorSceneSegConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.condition_scales: dict[str, int] = {}
        w = config.width
        layers: list[nn.Module] = [*_conv_bn(3, w, 3, stride=2), *_conv_bn(w, w, 3), *_conv_bn(w, 2 * w, 3),
                                   nn.MaxPool2d(3, stride=2, padding=0, ceil_mode=True)]
        c_in = 2 * w
        # (stage width factor, dilation, stride of its first block): conv3 halves, conv4/conv5 dilate instead
        for count, (factor, dilation, stride) in zip(config.blocks, [(1, 1, 1), (2, 1, 2), (4, 2, 1), (8, 4, 1)],
                                                     strict=True):
            mid = w * factor
            for index in range(count):
                layers.append(Res131(c_in, mid, 4 * mid, dilation=dilation, stride=stride if index == 0 else 1))
                c_in = 4 * mid
        layers += [*_conv_bn(c_in, 8 * w, 3), nn.Dropout(0.1), nn.Conv2d(8 * w, config.num_classes, 1)]
        self.feature = nn.Sequential(*layers)
        nc = config.num_classes
        self.deconv = nn.ConvTranspose2d(nc, nc, 2 * STRIDE, STRIDE, STRIDE // 2, groups=nc, bias=False)

    def logits(self, x: Tensor) -> Tensor:
        """The deconv output before the softmax, N×num_classes×H×W."""
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2] % STRIDE or x.shape[-1] % STRIDE:
            raise InputError(f"OutdoorSceneSeg needs N×3×H×W with H and W multiples of {STRIDE}, "
                             f"got {tuple(x.shape)}")
        return self.deconv(self.feature(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.logits(x).softmax(dim=1)
