"""SFTGAN (Wang et al., CVPR 2018): an SRResNet-like generator modulated by a semantic prior, and its ACD.

The generator takes LR RGB (N×3×h×w, [0,1]) and the 8-class segmentation probabilities at HR size
(N×8×4h×4w, methods.md §3.2): a shared condition net (`CondNet`, its first conv 4×4 stride 4 brings the map
back to LR size) feeds every SFT layer. One class covers both released forms (`form`):
- "pytorch" (`SFTGAN_noBN_OST_bg.pth`): SFT x·(scale+1)+shift with LeakyReLU 0.1, blocks
  sft0 → conv0 → ReLU → sft1 → conv1, sub-pixel upsampler;
- "torch" (`SFTGAN_torch.pth`, the paper's model): SFT x·scale+shift with LeakyReLU 0.01, blocks
  sft0 → ReLU → conv0 → sft1 → ReLU → conv1, nearest-neighbour upsampler.
Parameter names are the released ones, so released state dicts load unchanged.
Matches: xinntao/SFTGAN:pytorch_test/architectures.py (SFT_Net, SFT_Net_torch), parity fixtures sftnet_*.
The discriminator is BSR-old's ACD_VGG_BN_96 (`codes/models/modules/sft_arch.py`, methods.md §3.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, fx, nn
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.blocks import SFTLayer
from perceptsr.errors import ConfigError, InputError

SFTGAN_SCALES = (4,)  # the CondNet's stride-4 conv ties the generator to x4 (methods.md §6)
SEG_CLASSES = ("background", "sky", "water", "grass", "mountain", "building", "plant", "animal")


@dataclass(frozen=True)
class SFTNetConfig:
    """SFTGAN generator; defaults are the released models (64 features, 16 SFT residual blocks)."""

    scale: int = 4
    form: Literal["pytorch", "torch"] = "pytorch"
    num_feat: int = 64
    num_block: int = 16
    num_classes: int = 8  # channels of the segmentation probability map
    cond_feat: int = 32  # condition features shared by all SFT layers
    cond_hidden: int = 128  # width of the condition net

    def __post_init__(self) -> None:
        if self.scale not in SFTGAN_SCALES:
            raise ConfigError(f"sftgan: scale {self.scale} is not supported (x4 only: the condition net is stride 4)")
        if self.form not in ("pytorch", "torch"):
            raise ConfigError(f"sftgan: form must be 'pytorch' or 'torch', got {self.form!r}")
        if min(self.num_feat, self.num_classes, self.cond_feat, self.cond_hidden) < 1 or self.num_block < 0:
            raise ConfigError("sftgan: num_feat, num_classes, cond_feat, cond_hidden must be >= 1, num_block >= 0")


class SFTResBlock(nn.Module):
    """x + conv1(sft1(conv0(sft0(x)))) with ReLU placed as the chosen form does (keys sft0, conv0, sft1, conv1)."""

    def __init__(self, num_feat: int, cond_feat: int, *, torch_form: bool) -> None:
        super().__init__()
        slope = 0.01 if torch_form else 0.1
        self.torch_form = torch_form
        self.sft0 = SFTLayer(num_feat, cond_feat, plus_one=not torch_form, negative_slope=slope)
        self.conv0 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.sft1 = SFTLayer(num_feat, cond_feat, plus_one=not torch_form, negative_slope=slope)
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        if self.torch_form:
            fea = self.conv0(F.relu(self.sft0(x, cond)))
            fea = self.conv1(F.relu(self.sft1(fea, cond)))
        else:
            fea = F.relu(self.conv0(self.sft0(x, cond)))
            fea = self.conv1(self.sft1(fea, cond))
        return x + fea


def _hr_branch(num_feat: int, torch_form: bool) -> nn.Sequential:
    """Two x2 stages, an HR conv and the RGB conv; layer positions give the released keys (§3.5)."""

    def stage() -> list[nn.Module]:
        if torch_form:
            return [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.ReLU()]
        return [nn.Conv2d(num_feat, 4 * num_feat, 3, 1, 1), nn.PixelShuffle(2), nn.ReLU()]

    return nn.Sequential(*stage(), *stage(), nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.ReLU(),
                         nn.Conv2d(num_feat, 3, 3, 1, 1))


@fx.wrap
def _check_seg(lr: Tensor, seg: Tensor, num_classes: int, scale: int) -> Tensor:
    """`seg` if it is N x num_classes x (scale*h) x (scale*w) for lr N x 3 x h x w, else an InputError.
    A leaf for torch.fx (perceptsr.inference.fusion traces the generator; the check stays in the traced graph)."""
    expected = (lr.shape[0], num_classes, scale * lr.shape[-2], scale * lr.shape[-1])
    if seg.dim() != 4 or tuple(seg.shape) != expected:
        raise InputError(f"the segmentation map has shape {tuple(seg.shape)}; SFTGAN needs {expected} "
                         f"(class probabilities at {scale}x the LR size)")
    return seg


class SFTNet(nn.Module):
    """The SFTGAN generator: forward(lr N×3×h×w, seg=N×C×4h×4w probabilities) -> N×3×4h×4w, unclamped."""

    def __init__(self, config: SFTNetConfig) -> None:
        super().__init__()
        self.config = config
        self.scale = config.scale
        self.condition_scales: dict[str, int] = {"seg": config.scale}
        self.condition_channels: dict[str, int] = {"seg": config.num_classes}
        nf, cf, hidden = config.num_feat, config.cond_feat, config.cond_hidden
        torch_form = config.form == "torch"
        self.conv0 = nn.Conv2d(3, nf, 3, 1, 1)
        blocks: list[nn.Module] = [SFTResBlock(nf, cf, torch_form=torch_form) for _ in range(config.num_block)]
        blocks.append(SFTLayer(nf, cf, plus_one=not torch_form, negative_slope=0.01 if torch_form else 0.1))
        blocks.append(nn.Conv2d(nf, nf, 3, 1, 1))
        self.sft_branch = nn.ModuleList(blocks)  # keys sft_branch.{i}: a Sequential in the original
        self.HR_branch = _hr_branch(nf, torch_form)
        layers: list[nn.Module] = [nn.Conv2d(config.num_classes, hidden, 4, 4)]
        for _ in range(3):
            layers += [nn.LeakyReLU(0.1), nn.Conv2d(hidden, hidden, 1)]
        layers += [nn.LeakyReLU(0.1), nn.Conv2d(hidden, cf, 1)]
        self.CondNet = nn.Sequential(*layers)

    def forward(self, lr: Tensor, seg: Tensor) -> Tensor:
        seg = _check_seg(lr, seg, self.config.num_classes, self.scale)
        cond = self.CondNet(seg)
        fea = self.conv0(lr)
        res = fea
        for block in self.sft_branch[:-2]:
            res = block(res, cond)
        res = self.sft_branch[-1](self.sft_branch[-2](res, cond))
        return self.HR_branch(fea + res)


@dataclass(frozen=True)
class ACDConfig:
    """ACD_VGG_BN_96: VGG-style BN discriminator with a GAN head and an auxiliary class head (§3.3)."""

    num_feat: int = 64
    input_size: int = 96  # four stride-2 convs: the dense heads see (input_size/16)² · 8·num_feat features
    hidden: int = 100
    num_classes: int = 8

    def __post_init__(self) -> None:
        if self.input_size < 16 or self.input_size % 16:
            raise ConfigError(f"ACD discriminator: input_size must be a multiple of 16, got {self.input_size}")
        if min(self.num_feat, self.hidden, self.num_classes) < 1:
            raise ConfigError("ACD discriminator: num_feat, hidden and num_classes must be >= 1")


class ACDDiscriminator(nn.Module):
    """forward(x N×3×S×S in [0,1]) -> (gan logits N×1, class logits N×num_classes). Keys as in BSR-old."""

    def __init__(self, config: ACDConfig) -> None:
        super().__init__()
        self.config = config
        nf = config.num_feat
        layers: list[nn.Module] = [nn.Conv2d(3, nf, 3, 1, 1), nn.LeakyReLU(0.1)]
        widths = [(nf, nf, 4, 2), (nf, 2 * nf, 3, 1), (2 * nf, 2 * nf, 4, 2), (2 * nf, 4 * nf, 3, 1),
                  (4 * nf, 4 * nf, 4, 2), (4 * nf, 8 * nf, 3, 1), (8 * nf, 8 * nf, 4, 2)]
        for c_in, c_out, kernel, stride in widths:
            layers += [nn.Conv2d(c_in, c_out, kernel, stride, 1), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.1)]
        self.feature = nn.Sequential(*layers)
        flat = 8 * nf * (config.input_size // 16) ** 2
        self.gan = nn.Sequential(nn.Linear(flat, config.hidden), nn.LeakyReLU(0.1), nn.Linear(config.hidden, 1))
        self.cls = nn.Sequential(nn.Linear(flat, config.hidden), nn.LeakyReLU(0.1),
                                 nn.Linear(config.hidden, config.num_classes))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        size = self.config.input_size
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[-2:] != (size, size):
            raise InputError(f"the ACD discriminator takes N×3×{size}×{size} patches, got {tuple(x.shape)}")
        fea = self.feature(x).flatten(1)
        return self.gan(fea), self.cls(fea)
