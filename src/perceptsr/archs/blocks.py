"""Building blocks shared by at least two architectures.

Only what two or more archs use lives here; a block used by one arch stays in that arch's file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812

# A factory for an activation layer given its channel count (PReLU needs it, LeakyReLU ignores it).
Activation = Callable[[int], nn.Module]


@torch.no_grad()
def default_init_weights(modules: nn.Module | Iterable[nn.Module], scale: float = 1.0) -> None:
    """Kaiming-normal conv/linear weights times `scale`, zero biases, BN weight 1 / bias 0.

    A small `scale` (0.1) makes residual branches start near identity, which stabilises training of deep
    residual generators. Matches: XPixelGroup/BasicSR:basicsr/archs/arch_util.py `default_init_weights`.
    """
    if isinstance(modules, nn.Module):
        modules = [modules]
    for module in modules:
        for layer in module.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(layer.weight)
                layer.weight.mul_(scale)
                if layer.bias is not None:
                    layer.bias.zero_()
            elif isinstance(layer, (nn.BatchNorm2d, VirtualBatchNorm2d)):
                nn.init.ones_(layer.weight)
                nn.init.zeros_(layer.bias)


class ResidualBlock(nn.Module):
    """x + conv2(act(conv1(x))), optionally with BN after each conv (the SRResNet paper block).

    Without BN and with ReLU this is BasicSR's `ResidualBlockNoBN` and has its parameter names
    (`conv1`, `conv2`), so BasicSR weights load unchanged. Shape: N×C×H×W -> N×C×H×W.
    """

    def __init__(self, num_feat: int, *, batch_norm: bool, act: Activation, init_scale: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=not batch_norm)
        self.bn1 = nn.BatchNorm2d(num_feat) if batch_norm else nn.Identity()
        self.act = act(num_feat)
        self.conv2 = nn.Conv2d(num_feat, num_feat, 3, 1, 1, bias=not batch_norm)
        self.bn2 = nn.BatchNorm2d(num_feat) if batch_norm else nn.Identity()
        default_init_weights([self.conv1, self.conv2], init_scale)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.bn2(self.conv2(self.act(self.bn1(self.conv1(x)))))


class PixelShuffleUpsampler(nn.Sequential):
    """Sub-pixel upsampling: per stage [3×3 conv C -> C·r², PixelShuffle r, act].

    Scale 2^k uses k stages of r = 2; scale 3 one stage of r = 3. As a flat Sequential its parameter keys are
    `0.*` (conv), `2.*` (act), `3.*`, ... — the same positions as BasicSR-old's flattened `B.sequential`.
    Shape: N×C×h×w -> N×C×(s·h)×(s·w).
    """

    def __init__(self, num_feat: int, scale: int, act: Activation) -> None:
        if scale == 3:
            factors = [3]
        elif scale >= 2 and scale & (scale - 1) == 0:
            factors = [2] * (scale.bit_length() - 1)
        else:
            raise ValueError(f"pixel-shuffle upsampling supports scales 2^k and 3, not {scale}")
        layers: list[nn.Module] = []
        for factor in factors:
            layers += [
                nn.Conv2d(num_feat, num_feat * factor * factor, 3, 1, 1),
                nn.PixelShuffle(factor),
                act(num_feat),
            ]
        super().__init__(*layers)


class VirtualBatchNorm2d(nn.Module):
    """Virtual batch norm (Salimans et al. 2016, "Improved techniques for training GANs", §3.4).

    The input carries the fixed reference batch in its first `num_ref` rows. Reference rows are normalised
    with the reference batch's own statistics. Every other example is normalised with statistics of the set
    {example} ∪ reference, i.e. per-channel moments mixed 1/(B_ref+1) from the example and B_ref/(B_ref+1)
    from the reference (Salimans' form). So an example's output never depends on the other examples of its
    batch, only on itself and the reference. Gradients flow through the reference statistics (no detach).
    Moments are over (N, H, W) per channel, biased variance, then a learned affine (weight, bias).
    """

    def __init__(self, num_features: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))

    def forward(self, x: Tensor, num_ref: int) -> Tensor:
        if not 0 < num_ref <= x.shape[0]:
            raise ValueError(f"VirtualBatchNorm2d needs 1..{x.shape[0]} reference rows, got {num_ref}")
        ref, rest = x[:num_ref], x[num_ref:]
        ref_mean = ref.mean(dim=(0, 2, 3), keepdim=True)
        ref_sq = ref.square().mean(dim=(0, 2, 3), keepdim=True)
        new_weight = 1.0 / (num_ref + 1.0)
        mean = (1 - new_weight) * ref_mean + new_weight * rest.mean(dim=(2, 3), keepdim=True)
        sq = (1 - new_weight) * ref_sq + new_weight * rest.square().mean(dim=(2, 3), keepdim=True)
        ref_out = (ref - ref_mean) * torch.rsqrt((ref_sq - ref_mean.square()).clamp_min(0) + self.eps)
        rest_out = (rest - mean) * torch.rsqrt((sq - mean.square()).clamp_min(0) + self.eps)
        out = torch.cat([ref_out, rest_out])
        return out * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


class SFTLayer(nn.Module):
    """Spatial Feature Transform (Wang et al., CVPR 2018): a per-pixel affine modulation of features by a condition.

    scale and shift are each two 1x1 convs on the condition features (shared condition net, methods.md §3.2).
    `plus_one=True` is SFTGAN's PyTorch release and FxSR (x·(scale+1)+shift, LeakyReLU 0.1); `False` with slope
    0.01 is the paper's Torch model (x·scale+shift). Parameter names follow the released checkpoints.
    Matches: xinntao/SFTGAN:pytorch_test/architectures.py (SFTLayer, SFTLayer_torch).
    """

    def __init__(self, num_feat: int = 64, cond_feat: int = 32, *, plus_one: bool = True,
                 negative_slope: float = 0.1) -> None:
        super().__init__()
        self.plus_one, self.negative_slope = plus_one, negative_slope
        self.SFT_scale_conv0 = nn.Conv2d(cond_feat, cond_feat, 1)
        self.SFT_scale_conv1 = nn.Conv2d(cond_feat, num_feat, 1)
        self.SFT_shift_conv0 = nn.Conv2d(cond_feat, cond_feat, 1)
        self.SFT_shift_conv1 = nn.Conv2d(cond_feat, num_feat, 1)

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        slope = self.negative_slope
        scale = self.SFT_scale_conv1(F.leaky_relu(self.SFT_scale_conv0(cond), slope))
        shift = self.SFT_shift_conv1(F.leaky_relu(self.SFT_shift_conv0(cond), slope))
        return x * (scale + 1) + shift if self.plus_one else x * scale + shift
