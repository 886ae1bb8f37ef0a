"""FxSR's generator (Park et al., "Flexible Style Image Super-Resolution using Conditional Objective"):
RRDBNet with an SFT layer before every conv of every dense block, steered by a t map at LR resolution.

Built from `archs.rrdb` (the dense blocks take the condition; see ResidualDenseBlock). The condition network is
pointwise, so t can vary per pixel: t = 0 is distortion-oriented, t = 1 perception-oriented (FxSR-PD) or another
texture style (FxSR-DS). Keys are RRDBNet's plus `body.{i}.rdb{j}.sft{0..4}.SFT_{scale,shift}_conv{0,1}` and
`cond_net.{0,2}`; `convert/fxsr.py` maps the released files onto them.
Matches: seungho-snu/FxSR:codes/models/modules/RRDBNet_arch.py (parity fixtures fxsr_*), methods.md §4.1-4.2.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, fx, nn

from perceptsr.archs.rrdb import RRDBNet, RRDBNetConfig
from perceptsr.archs.tracing import recording
from perceptsr.errors import ConfigError, InputError

FXSR_SCALES = (4, 8)
DEFAULT_T = 0.8  # the original test script's default (`-t`, result folders `_t080`)


@dataclass(frozen=True)
class FxSRNetConfig:
    """FxSR's generator; defaults are the released models' (23 blocks, 64 features, growth 32, 32-channel
    condition: 18.3M parameters at x4). The original hard-codes 64/32/32; here they may be smaller for tests."""

    scale: int = 4  # 4: two nearest+conv stages, 8: three (`upconv3`)
    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    cond_feat: int = 32  # channels of the condition features every SFT layer reads

    def __post_init__(self) -> None:
        if self.scale not in FXSR_SCALES:
            raise ConfigError(f"fxsr: scale {self.scale} is not supported (supported: 4, 8)")
        if self.cond_feat < 1:
            raise ConfigError(f"fxsr: cond_feat must be >= 1, got {self.cond_feat}")
        self.rrdb()  # checks the remaining fields

    def rrdb(self) -> RRDBNetConfig:
        """The RRDBNet this generator extends."""
        return RRDBNetConfig(scale=self.scale, num_feat=self.num_feat, num_block=self.num_block,
                             num_grow_ch=self.num_grow_ch)


@fx.wrap
def _t_map(lr: Tensor, t: float | Tensor) -> Tensor:
    """FxSRNet.t_map; a leaf for torch.fx, so the generator traces (perceptsr.inference.fusion) with t a float or a map.

    A t that is the same at every pixel of a sample (a float, or a uniform map) comes back N×1×1×1: the condition
    network and every SFT layer's 1x1 convs then run on one pixel and broadcast, the same numbers for a fraction
    of the cost (those convs took ~25% of a bf16 forward at 64x64 in a profile). While a graph is recorded (ONNX
    export, tracing, compiling) a map stays a map: a recorded shortcut would make every later t map uniform.
    """
    batch, _, height, width = lr.shape
    if not isinstance(t, Tensor):
        return lr.new_full((batch, 1, 1, 1), float(t))
    if t.dim() == 0:
        return t.to(lr).expand(batch, 1, 1, 1)
    if t.dim() != 4 or t.shape[1] != 1 or t.shape[2:] != lr.shape[2:] or t.shape[0] not in (1, batch):
        raise InputError(
            f"fxsr: t must be a float or a map ({batch} or 1)×1×{height}×{width}, got shape {tuple(t.shape)}"
        )
    t = t.to(lr).expand(batch, 1, height, width)
    if recording():
        return t
    flat = t.flatten(1)
    if bool((flat.amin(1) == flat.amax(1)).all()):
        return flat[:, :1].reshape(batch, 1, 1, 1)
    return t


class FxSRNet(RRDBNet):
    """`forward(lr, t=0.8)`: lr N×3×h×w in [0,1]; t a float in [0,1] or a map N×1×h×w (or 1×1×h×w) at LR size.

    Returns N×3×(s·h)×(s·w), unclamped. `cond_net` = Conv(1→1, 1×1), LeakyReLU 0.1, Conv(1→cond_feat, 1×1).
    """

    def __init__(self, config: FxSRNetConfig) -> None:
        super().__init__(config.rrdb(), cond_feat=config.cond_feat)
        self.config = config  # type: ignore[assignment]  # the FxSR config is what a release stores
        self.condition_scales = {"t": 1}
        self.cond_net = nn.Sequential(nn.Conv2d(1, 1, 1), nn.LeakyReLU(0.1), nn.Conv2d(1, config.cond_feat, 1))

    def t_map(self, lr: Tensor, t: float | Tensor) -> Tensor:
        """t on lr's device and dtype: an N×1×h×w map, or N×1×1×1 where t is uniform (see _t_map)."""
        return _t_map(lr, t)

    def forward(self, lr: Tensor, t: float | Tensor = DEFAULT_T) -> Tensor:  # type: ignore[override]
        return self.run(lr, self.cond_net(self.t_map(lr, t)))
