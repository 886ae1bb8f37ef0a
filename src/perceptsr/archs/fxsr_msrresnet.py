"""FxSR's t-conditioning on a small body: BasicSR's MSRResNet with an SFT layer in every residual block.

FxSR (archs/fxsr.py) steers a 23-block RRDBNet (18M parameters) with a per-pixel map t; this puts the same
condition network and SFT layers on MSRResNet (1.5M), small enough to train on a CPU. This arch is the project's
own, not a published one: the bundled `fxsr-nat-x4` (configs/bundled/fxsr_nat_x4_cpu.yaml) is its one release.

Every MSRResNet key keeps its name (`conv_first`, `body.{i}.conv{1,2}`, `upconv{1,2}`, `conv_hr`, `conv_last`), so
an MSRResNet loads into it unchanged; the new keys are `body.{i}.sft.SFT_{scale,shift}_conv{0,1}` and
`cond_net.{0,2}`. Started from an MSRResNet (methods/fxsr_nat.py), the SFT layers' last convs are zeroed
(`start_as_identity`), so before training the network *is* that MSRResNet for every t: fine-tuning begins at the
PSNR model and learns only what t should change. Built fresh, the SFT layers have small random weights like
every other layer, so t already changes the output.

`texture_gate` (not in FxSR; 0 turns it off) changes what a t between 0 and 1 asks for: not every pixel part of
the way to the perceptual end, but the textured regions all of the way, more of them as t grows. The t map
entering the condition network becomes conditions.texture.texture_gated_t(t, lr, texture_gate): 1 where the LR's
texture strength (`texture_strength`: its structure tensor's smaller eigenvalue, small on flat regions and along
straight edges) is above texture_gate·(1 − t)/t, 0 half that threshold below, ramped between; t = 0 and t = 1
stay themselves, and a pixel's gate reads only its own t (a painted map still acts locally). Why: a network
trained for t from 0 to 1 interpolates between its two ends, and a faint layer of the perceptual end's grain
over the smooth one looks less natural to NIQE than either (the fxsr-nat-x4 card: NIQE rose from t = 0 to 0.25,
also in the fine-tunes that tried to teach it otherwise); by region, each pixel gets one end or the other.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, fx, nn
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.blocks import SFTLayer, default_init_weights
from perceptsr.archs.fxsr import DEFAULT_T, _t_map
from perceptsr.archs.srresnet import MSRResNet, MSRResNetConfig
from perceptsr.conditions.texture import texture_gated_t
from perceptsr.errors import ConfigError

fx.wrap("_t_map")  # a leaf for torch.fx here too (fx wraps a name per module), so the fast path can trace this net
fx.wrap("texture_gated_t")


@dataclass(frozen=True)
class FxMSRResNetConfig:
    """MSRResNet's fields plus the width of the condition features every SFT layer reads."""

    scale: int = 4
    num_feat: int = 64
    num_block: int = 16
    cond_feat: int = 32
    texture_gate: float = 0.0  # > 0: t lets textured regions in first, whole (module docstring); 0: FxSR's t

    def __post_init__(self) -> None:
        if self.cond_feat < 1:
            raise ConfigError(f"fxsr_msrresnet: cond_feat must be >= 1, got {self.cond_feat}")
        if not self.texture_gate >= 0:
            raise ConfigError(f"fxsr_msrresnet: texture_gate must be >= 0, got {self.texture_gate}")
        self.msrresnet()  # checks scale, num_feat, num_block

    def msrresnet(self) -> MSRResNetConfig:
        return MSRResNetConfig(scale=self.scale, num_feat=self.num_feat, num_block=self.num_block)


class SFTResidualBlock(nn.Module):
    """x + conv2(ReLU(conv1(SFT(x, cond)))): MSRResNet's block with its input modulated by the condition."""

    def __init__(self, num_feat: int, cond_feat: int) -> None:
        super().__init__()
        self.sft = SFTLayer(num_feat, cond_feat)
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1)
        default_init_weights([self.conv1, self.conv2], 0.1)

    @torch.no_grad()
    def start_as_identity(self) -> None:
        """Zero the SFT layer's last convs: x·(0 + 1) + 0 = x for every condition (see the module docstring)."""
        for conv in (self.sft.SFT_scale_conv1, self.sft.SFT_shift_conv1):
            conv.weight.zero_()
            conv.bias.zero_()

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(self.sft(x, cond))))


class FxMSRResNet(MSRResNet):
    """`forward(lr, t=0.8)`: lr N×3×h×w in [0,1]; t a float in [0,1] or a map N×1×h×w (or 1×1×h×w) at LR size.

    Returns N×3×(s·h)×(s·w), unclamped. The condition network is FxSR's (pointwise, so a painted t map changes
    the output only within the receptive field of the painted pixels).
    """

    def __init__(self, config: FxMSRResNetConfig) -> None:
        super().__init__(config.msrresnet())
        self.config = config  # type: ignore[assignment]  # the release stores this config
        self.condition_scales = {"t": 1}
        self.body = nn.ModuleList(SFTResidualBlock(config.num_feat, config.cond_feat) for _ in range(config.num_block))
        self.cond_net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(1, config.cond_feat, 1))

    def t_map(self, lr: Tensor, t: float | Tensor) -> Tensor:
        """t on lr's device and dtype: an N×1×h×w map, or N×1×1×1 where t is uniform (archs.fxsr._t_map)."""
        return _t_map(lr, t)

    def forward(self, lr: Tensor, t: float | Tensor = DEFAULT_T) -> Tensor:  # type: ignore[override]
        t = self.t_map(lr, t)
        if self.config.texture_gate > 0:
            t = texture_gated_t(t, lr, self.config.texture_gate)
        cond = self.cond_net(t)
        out = self.lrelu(self.conv_first(lr))
        for block in self.body:
            out = block(out, cond)
        return self.reconstruct(out, lr)
