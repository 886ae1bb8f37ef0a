"""RRDBNet, the ESRGAN generator (Wang et al., ECCV-W 2018), and its blocks; FxSR builds on the same blocks.

Parameter names are BasicSR v1's (`conv_first`, `body.{i}.rdb{1,2,3}.conv{1..5}`, `conv_body`, `conv_up1/2(/3)`,
`conv_hr`, `conv_last`), so a BasicSR `params` dict loads by identity. A dense block can carry an SFT layer before
each of its convs (`cond_feat > 0`): that is FxSR's generator (archs/fxsr.py), which feeds the condition through.
Matches: XPixelGroup/BasicSR:basicsr/archs/rrdbnet_arch.py (parity fixtures rrdbnet_*), methods.md §0.6.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

from perceptsr.archs.blocks import SFTLayer, default_init_weights
from perceptsr.archs.tracing import recording
from perceptsr.errors import ConfigError

RRDB_SCALES = (1, 2, 4, 8)
RESIDUAL_SCALE = 0.2  # both the dense-block and the RRDB residual branches (§0.6)


class ResidualDenseBlock(nn.Module):
    """Five 3×3 convs with dense connections; out = x + 0.2·conv5(x, x1..x4). N×C×H×W -> N×C×H×W.

    conv_k sees x and x1..x_{k-1} (growth `num_grow_ch` each); LeakyReLU 0.2 after conv1-4. With `cond_feat > 0`
    SFT layers `sft0` (on x, C channels) and `sft1..4` (on x1..x4) modulate every conv input by the condition
    features; the block input that enters the concatenations stays unmodulated, as in FxSR's
    `ResidualDenseBlock_5C` (seungho-snu/FxSR:codes/models/modules/RRDBNet_arch.py).
    """

    def __init__(self, num_feat: int, num_grow_ch: int, *, cond_feat: int = 0) -> None:
        super().__init__()
        self.cond_feat = cond_feat
        if cond_feat:
            self.sft0 = SFTLayer(num_feat, cond_feat)
            for k in range(1, 5):
                self.add_module(f"sft{k}", SFTLayer(num_grow_ch, cond_feat))
        for k in range(1, 5):
            self.add_module(f"conv{k}", nn.Conv2d(num_feat + (k - 1) * num_grow_ch, num_grow_ch, 3, 1, 1))
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)
        default_init_weights([getattr(self, f"conv{k}") for k in range(1, 6)], 0.1)

    def _modulate(self, index: int, feat: Tensor, cond: Tensor | None) -> Tensor:
        return self.get_submodule(f"sft{index}")(feat, cond) if self.cond_feat else feat

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        grown = [x]
        inputs = self._modulate(0, x, cond)
        for k in range(1, 5):
            out = self.lrelu(self.get_submodule(f"conv{k}")(inputs))
            grown.append(self._modulate(k, out, cond))
            inputs = torch.cat(grown, 1)
        return self.conv5(inputs) * RESIDUAL_SCALE + x


class RRDB(nn.Module):
    """Residual in residual dense block: x + 0.2·rdb3(rdb2(rdb1(x))); `cond` reaches every dense block."""

    def __init__(self, num_feat: int, num_grow_ch: int, *, cond_feat: int = 0) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch, cond_feat=cond_feat)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch, cond_feat=cond_feat)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch, cond_feat=cond_feat)

    def forward(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        out = self.rdb3(self.rdb2(self.rdb1(x, cond), cond), cond)
        return out * RESIDUAL_SCALE + x


@dataclass(frozen=True)
class RRDBNetConfig:
    """ESRGAN's RRDBNet; defaults are the paper's (23 blocks, 64 features, growth 32: 16.7M parameters at x4).

    x4/x8: two/three [nearest x2, conv, LeakyReLU] stages. x1/x2 with `unshuffle` (BasicSR v1, Real-ESRGAN): the
    input is pixel-unshuffled by 4/2 first (conv_first takes 48/12 channels), then two stages as at x4. x1/x2
    without `unshuffle`: the original ESRGAN code's layout, log2(scale) stages on the raw input.
    """

    scale: int = 4
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    unshuffle: bool = True  # only used at x1/x2

    def __post_init__(self) -> None:
        if self.scale not in RRDB_SCALES:
            raise ConfigError(f"rrdb: scale {self.scale} is not supported (supported: 1, 2, 4, 8)")
        if self.num_feat < 1 or self.num_grow_ch < 1 or self.num_block < 0:
            raise ConfigError(
                f"rrdb: num_feat and num_grow_ch must be >= 1 and num_block >= 0, got {self.num_feat}, "
                f"{self.num_grow_ch} and {self.num_block}"
            )

    @property
    def unshuffle_factor(self) -> int:
        """The pixel-unshuffle factor of the input (1: none)."""
        return {1: 4, 2: 2}.get(self.scale, 1) if self.unshuffle else 1

    @property
    def upsample_stages(self) -> int:
        """How many nearest x2 + conv stages the upsampler has."""
        return (self.scale * self.unshuffle_factor).bit_length() - 1


class RRDBNet(nn.Module):
    """conv_first -> RRDBs + conv_body (global skip) -> nearest+conv upsampling -> conv_hr -> conv_last.

    N×3×h×w in [0,1] -> N×3×(s·h)×(s·w), unclamped, no output activation. Inputs whose sides are not multiples
    of the unshuffle factor (x1/x2) are edge-padded and the output cropped, so any size works.
    `cond_feat > 0` puts SFT layers in every dense block (FxSR, which subclasses this); then `forward` needs the
    condition features.
    """

    def __init__(self, config: RRDBNetConfig, *, cond_feat: int = 0) -> None:
        super().__init__()
        self.config = config
        self.rrdb_config = config  # FxSR replaces `config` with its own; the layout stays here
        self.scale = config.scale
        self.condition_scales: dict[str, int] = {}
        nf = config.num_feat
        self.conv_first = nn.Conv2d(3 * config.unshuffle_factor**2, nf, 3, 1, 1)
        self.body = nn.ModuleList(
            [RRDB(nf, config.num_grow_ch, cond_feat=cond_feat) for _ in range(config.num_block)]
        )
        self.conv_body = nn.Conv2d(nf, nf, 3, 1, 1)
        for stage in range(1, config.upsample_stages + 1):
            self.add_module(f"conv_up{stage}", nn.Conv2d(nf, nf, 3, 1, 1))
        self.conv_hr = nn.Conv2d(nf, nf, 3, 1, 1)
        self.conv_last = nn.Conv2d(nf, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2)

    def run(self, lr: Tensor, cond: Tensor | None) -> Tensor:
        """The network on `lr` with condition features `cond` (None for plain RRDBNet)."""
        factor = self.rrdb_config.unshuffle_factor
        height, width = lr.shape[-2:]
        if factor > 1:
            pad_h, pad_w = -height % factor, -width % factor
            if pad_h or pad_w or recording():  # a recorded graph must pad whatever size comes
                lr = F.pad(lr, (0, pad_w, 0, pad_h), mode="replicate")
            lr = F.pixel_unshuffle(lr, factor)
        feat = self.conv_first(lr)
        body = feat
        for block in self.body:
            body = block(body, cond)
        feat = feat + self.conv_body(body)
        for stage in range(1, self.rrdb_config.upsample_stages + 1):
            up = F.interpolate(feat, scale_factor=2, mode="nearest")
            feat = self.lrelu(self.get_submodule(f"conv_up{stage}")(up))
        out = self.conv_last(self.lrelu(self.conv_hr(feat)))
        return out[..., : height * self.scale, : width * self.scale]

    def forward(self, lr: Tensor) -> Tensor:
        return self.run(lr, None)
