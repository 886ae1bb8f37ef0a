"""Inference-only graph rewrites of a generator (a torch.fx trace of a copy; the caller's model is untouched).

- conv + BatchNorm: eval-mode BN is a per-channel affine map, so it folds into the conv's weights (exact up to
  float rounding). Removes one pass over the feature map per BN (SRResNet, SRFeat).
On CPU (oneDNN), each conv becomes a FusedConv that takes in what follows it:
- ReLU / LeakyReLU as a post-op (torch.ops.mkldnn._convolution_pointwise, what inductor emits): the output is
  written once, not written, read and written again by the activation;
- a residual add `x + s * conv(...)` (residual blocks, RRDB's 0.2-scaled branches) as a binary-add post-op, s in
  the weights; other scaled sums `a * s + b` become one torch.add(b, a, alpha=s);
- a pixel shuffle (sub-pixel upsamplers): output channels reordered so the shuffle copies contiguous runs;
- and keeps its weights cast to the autocast dtype once, instead of on every call.
Each SFT layer becomes a FastSFT (two convs and one addcmul instead of four convs and four elementwise passes),
with a condition net's widening last 1x1 conv folded into it (FxSR: the SFT layers read the 1-channel t features).
Measured on FxSR at 48x48 with a random t map (1 thread, 2-core AVX512-BF16 EPYC, three runs each, the CPU shared
with a training run): 1.14x fp32, 1.09x bf16. Nearest x2 upsampling + 3x3 conv (RRDBNet, FxSR,
SFTGAN's torch form) becomes NearestUpsampleConv: the conv's four output phases are 2x2 convs on the LR map, 2.25x fewer
multiply-adds and no upsampled copy of the input (the same as one conv with 3x3 LR kernels and 4x the outputs,
which computes the zero taps too, measured 0.87-1.19x; not kept).
A dense block's conv on the concatenation [x, f1, ..., fk] whose prefix [x, ..., f(k-1)] the conv before it
read becomes a ConcatTailConv: a conv on that prefix plus a conv on fk added as a post-op, so the widest copies
are never made (FRSR's fusion conv and every other conv, RRDB's conv5; `torch.cat([x], 1)` goes too).
A PReLU on a conv's output that nothing else reads overwrites that output (InPlacePReLU; big maps a band of rows
at a time), so no second HR-size map is allocated.
A narrow conv (the last conv of every generator, 64->3 at full resolution) costs as much as a 64->16 one: oneDNN
computes at least 16 output channels per pixel. `RowBlockConv` makes it compute `rows` output rows per position
(stride `rows` down, a kernel `rows - 1` taller, `rows * out` channels), then puts the rows back in place. After a
sub-pixel upsampler and at most a PReLU, `polyphase_conv` runs it on the LR phases instead, and the HR map is
never shuffled out (SRResNet's 9x9 end).
`python benchmarks/fusion.py` (2 threads, 2-core AMX Xeon; inputs 1x64x128x128 and 256x256; three runs, two for the
SRResNet end) times each rewrite against the layers it replaces, fp32 / bf16: conv + LeakyReLU 1.13-1.49x /
1.07-1.08x; conv + scaled residual 1.16-1.67x / 1.03-1.08x; conv 64->256 + shuffle + LeakyReLU 1.08-1.28x /
1.25-1.41x; SRResNet's end (upsampling conv, shuffle, PReLU, 9x9 64->3) 1.14-1.17x / 1.02-1.23x; 9x9 64->3
2.61-3.68x / 1.89-2.10x; 3x3 64->3 1.51-1.57x / 1.10-1.36x. All exact up to float summation order
(tests/test_speed.py).
Last, the chain from the first upsampler to the last conv runs a band of output rows at a time (bands.py), so
no full-size HR feature map is made.
A model that cannot be traced (control flow on tensor values or shapes) keeps its plain copy.
"""

from __future__ import annotations

import copy
import inspect
import logging
import operator
from collections import Counter

import torch
from torch import Tensor, fx, nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils.fusion import fuse_conv_bn_eval

from perceptsr.archs.blocks import SFTLayer

log = logging.getLogger(__name__)

_ACTIVATION_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.leaky_relu: "leaky_relu"}
_FUSED_DTYPES = (torch.float32, torch.bfloat16)
_TIMES_TWO = (2, 2.0, (2, 2), (2.0, 2.0))  # the scale_factor spellings of an x2 upsampling


class FusedConv(nn.Module):
    """A conv2d with the op that follows it folded in; on CPU in fp32/bf16, one oneDNN call.

    - `activation` relu / leaky_relu: applied as a post-op, so the output is written once, not written, read
      and written again.
    - residual: `forward(x, other)` is scale * conv(x) + other, with oneDNN's binary-add post-op (the scale is
      folded into the weights). Saves the pass over both maps that the separate add makes.
    - `shuffle` r: the conv feeds pixel_shuffle(r). Its output channels are stored in (i, j, c) order instead of
      (c, i, j), so in channels-last memory each LR pixel holds r runs of r*C values that are contiguous in the
      HR map too: the shuffle is a copy of runs, not a gather of single values (and an activation after the
      shuffle is applied before it, as a post-op: elementwise ops commute with it).
    Weights are kept cast to the compute dtype (under autocast, conv2d casts every weight on every call).
    Elsewhere (CUDA, fp16, an `other` whose shape or dtype does not match) the same ops run one by one.
    """

    def __init__(self, conv: nn.Conv2d, *, activation: tuple[str, float] | None = None, scale: float = 1.0,
                 shuffle: int = 1, unshuffle: bool = True) -> None:
        super().__init__()
        weight = conv.weight.detach() * scale
        bias = conv.bias.detach() * scale if conv.bias is not None else None
        if shuffle > 1:  # (c, i, j) -> (i, j, c)
            out = weight.shape[0] // shuffle**2
            weight = weight.unflatten(0, (out, shuffle**2)).transpose(0, 1).flatten(0, 1)
            bias = bias.view(out, shuffle**2).t().flatten() if bias is not None else None
        self.weight = nn.Parameter(weight.contiguous(), requires_grad=False)
        self.bias = nn.Parameter(bias.contiguous(), requires_grad=False) if bias is not None else None
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.kernel_size = conv.kernel_size
        self.activation, self.shuffle = activation, shuffle
        self.unshuffle = unshuffle  # False: return the LR map with (i, j, c) channels (for a polyphase_conv)
        self._cast: dict[torch.dtype, tuple[tuple[int, int], Tensor, Tensor | None]] = {}

    def _weights(self, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        """Weight and bias in `dtype` (cast once; recast if the parameters were replaced or changed in place)."""
        if dtype == self.weight.dtype:
            return self.weight, self.bias
        stamp = (self.weight.data_ptr(), 0 if self.weight.is_inference() else self.weight._version)
        if self._cast.get(dtype, (None,))[0] != stamp:
            weight = self.weight.to(dtype, memory_format=torch.preserve_format)
            self._cast[dtype] = (stamp, weight, self.bias.to(dtype) if self.bias is not None else None)
        return self._cast[dtype][1:]

    def _out_size(self, x: Tensor) -> tuple[int, int]:
        return tuple((size + 2 * p - d * (k - 1) - 1) // s + 1 for size, p, d, k, s in  # type: ignore[return-value]
                     zip(x.shape[-2:], self.padding, self.dilation, self.kernel_size, self.stride, strict=True))

    def _separate(self, x: Tensor, other: Tensor | None) -> Tensor:
        """The reference: the same computation as separate ops (autocast applies as usual)."""
        y = F.conv2d(x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups)
        y = y + other if other is not None else y
        if self.activation is not None:
            attr, slope = self.activation
            y = F.leaky_relu(y, slope) if attr == "leaky_relu" else F.relu(y)
        return y

    def _unshuffle_channels(self, y: Tensor) -> Tensor:
        """pixel_shuffle of a map whose channels are in (i, j, c) order; the result is channels-last."""
        r = self.shuffle
        n, _, h, w = y.shape
        y = y.permute(0, 2, 3, 1).reshape(n, h, w, r, r, -1).transpose(2, 3).reshape(n, h * r, w * r, -1)
        return y.permute(0, 3, 1, 2)

    def forward(self, x: Tensor, other: Tensor | None = None) -> Tensor:
        on_cpu = x.device.type == "cpu" and torch.backends.mkldnn.is_available()
        dtype = torch.get_autocast_dtype("cpu") if on_cpu and torch.is_autocast_enabled("cpu") else x.dtype
        fits = other is None or (other.dtype == dtype and other.shape[0] == x.shape[0]
                                 and other.shape[1:] == (self.weight.shape[0], *self._out_size(x)))
        if not (on_cpu and dtype in _FUSED_DTYPES and fits):
            y = self._separate(x, other)
        else:
            weight, bias = self._weights(dtype)
            attr, scalars = ("none", []) if self.activation is None else (
                self.activation[0], [self.activation[1]] if self.activation[0] == "leaky_relu" else [])
            args = (self.padding, self.stride, self.dilation, self.groups)
            if other is None and self.activation is None and self.kernel_size != (1, 1):
                # nothing to fuse: aten's conv, as eager runs it (but aten sends fp32 1x1 convs to its slow
                # non-oneDNN kernel: 3x slower on 64 channels at 48x48, so those take the oneDNN op below)
                y = F.conv2d(x.to(dtype), weight, bias, self.stride, self.padding, self.dilation, self.groups)
            elif other is None:
                y = torch.ops.mkldnn._convolution_pointwise(x.to(dtype), weight, bias, *args, attr, scalars, "")
            else:
                other = other.contiguous(memory_format=torch.channels_last)
                y = torch.ops.mkldnn._convolution_pointwise.binary(
                    x.to(dtype), other, weight, bias, *args, "add", None, None if attr == "none" else attr, scalars, "")
        if y.dim() == 4 and not y.is_contiguous(memory_format=torch.channels_last):
            # a conv on a 1-channel map (FxSR's t, through cond_net) returns NCHW; every conv reading this map
            # would reorder it again (FxSR: 690 SFT convs per forward)
            y = y.contiguous(memory_format=torch.channels_last)
        return self._unshuffle_channels(y) if self.shuffle > 1 and self.unshuffle else y

    def extra_repr(self) -> str:
        parts = [str(tuple(self.weight.shape))]
        if self.activation is not None:
            parts.append(f"{self.activation[0]}({self.activation[1]})")
        if self.shuffle > 1:
            parts.append(f"shuffle={self.shuffle}" + ("" if self.unshuffle else ", phases kept"))
        return ", ".join(parts)


def polyphase_conv(conv: nn.Conv2d, r: int) -> nn.Conv2d:
    """The conv on an LR map z of r*r*C channels in (i, j, c) order that equals `conv` on pixel_shuffle(z, r),
    up to a pixel_shuffle of its output (its output channels are in pixel_shuffle's (o, i, j) order).

    For a narrow conv after a sub-pixel upsampler (SRResNet's 9x9 64->3): the C-channel HR map is never written
    and shuffled, and the conv computes r*r*out channels (12 for 3 outputs at x2), which fills oneDNN's
    16-channel blocks better than 3 do. HR output phase (i, j) at offset (dy, dx) reads LR phase
    ((i+dy) mod r, (j+dx) mod r) at LR offset (floor((i+dy)/r), floor((j+dx)/r)). A 9x9 kernel becomes 5x5 over
    4x the channels: 1.23x the multiply-adds, measured faster (benchmarks/fusion.py). Needs stride 1, an odd
    square kernel and 'same' zero padding.
    """
    weight = conv.weight.detach()
    out, cin, k, _ = weight.shape
    pad = k // 2
    reach = (pad + r - 1) // r  # LR pixels the kernel reaches on each side
    lr_weight = weight.new_zeros(out, r, r, r, r, cin, 2 * reach + 1, 2 * reach + 1)  # o, i, j, i', j', c, y, x
    for i in range(r):
        for j in range(r):
            for dy in range(-pad, pad + 1):
                for dx in range(-pad, pad + 1):
                    (sy, py), (sx, px) = divmod(i + dy, r), divmod(j + dx, r)
                    lr_weight[:, i, j, py, px, :, sy + reach, sx + reach] += weight[:, :, dy + pad, dx + pad]
    lr_conv = nn.Conv2d(r * r * cin, out * r * r, 2 * reach + 1, padding=reach, bias=conv.bias is not None)
    lr_conv.weight.data = lr_weight.reshape(out * r * r, r * r * cin, 2 * reach + 1, 2 * reach + 1)
    if conv.bias is not None:
        lr_conv.bias.data = conv.bias.detach().repeat_interleave(r * r)
    return lr_conv


def _phase_taps(w: Tensor, dim: int) -> tuple[Tensor, Tensor]:
    """A 3-tap kernel axis seen from the LR map by nearest x2 upsampling: even output positions read LR pixels
    (k-1, k) with taps (w0, w1 + w2), odd ones read (k, k+1) with (w0 + w1, w2)."""
    w0, w1, w2 = w.unbind(dim)
    return torch.stack([w0, w1 + w2], dim), torch.stack([w0 + w1, w2], dim)


class NearestUpsampleConv(nn.Module):
    """conv3x3(nearest_upsample_x2(x)) [+ ReLU/LeakyReLU], computed on the LR map x.

    Each HR pixel's 3x3 window covers only 2x2 LR pixels, so its conv is a 2x2 conv on x with summed taps; the
    phase (p, q) of an HR pixel (row parity, column parity) decides which taps sum. One FusedConv computes all
    four phases (4x the output channels, 2x2 kernel, zero padding 1: the zero row and column outside x are what the
    upsampled map's zero padding reads), and four strided copies interleave them, phase (p, q) of LR window
    (a, b) going to HR pixel (2a - 1 + p, 2b - 1 + q). 4 x 4 instead of 4 x 9 multiply-adds per LR pixel and
    output channel; the upsampled map is never made. Exact up to float summation order. `python
    benchmarks/fusion.py --side 128 / 256` (64->64 + LeakyReLU, 2 threads, AVX512-BF16 EPYC): 1.61x / 1.15x
    fp32, 1.76x / 1.78x bf16; whole RRDBNet x4 forwards at 128x128, old and new fused copies alternated in one
    process (a throwaway script, two runs): 1.06-1.09x fp32, 1.05x bf16.
    Needs a 3x3, stride 1, padding 1 conv without groups or dilation.
    """

    def __init__(self, conv: nn.Conv2d, activation: tuple[str, float] | None = None) -> None:
        super().__init__()
        rows = _phase_taps(conv.weight.detach(), 2)
        phases = [tap for row in rows for tap in _phase_taps(row, 3)]  # (p, q) = (0, 0), (0, 1), (1, 0), (1, 1)
        phase_conv = nn.Conv2d(conv.in_channels, 4 * conv.out_channels, 2, 1, 1, bias=conv.bias is not None)
        phase_conv.weight.data = torch.cat(phases).contiguous()
        if conv.bias is not None:
            phase_conv.bias.data = conv.bias.detach().repeat(4)
        self.phases = FusedConv(phase_conv, activation=activation)
        self.channels = conv.out_channels

    def forward(self, x: Tensor) -> Tensor:
        n, _, h, w = x.shape
        c = self.channels
        y = self.phases(x).permute(0, 2, 3, 1)  # N x (h+1) x (w+1) x 4C
        out = torch.empty((n, c, 2 * h, 2 * w), dtype=y.dtype, device=y.device, memory_format=torch.channels_last)
        hr = out.permute(0, 2, 3, 1)
        for index, (p, q) in enumerate(((0, 0), (0, 1), (1, 0), (1, 1))):
            hr[:, p::2, q::2] = y[:, p:p + h, q:q + w, index * c:(index + 1) * c]
        return out


class FastSFT(nn.Module):
    """An SFTLayer (x * (scale + 1) + shift, or x * scale + shift) as two convs and one addcmul.

    The scale and shift branches' first 1x1 convs become one conv with the LeakyReLU as its post-op, their second
    convs one conv of two groups (the +1 in its bias; a dense block-diagonal conv computed the zero blocks too, and
    took 1.3-1.7x as long at 64-128 px, fp32 and bf16), and the modulation one torch.addcmul: 3 passes over
    the feature map instead of ~9 (4 convs, 2 activations, the +1, the product and the sum). With `fold`, the
    1x1 conv that made the condition features (FxSR's cond_net ends in Conv 1->32) is folded into the first
    conv, which then reads that conv's narrow input (1 channel for FxSR) instead of the 32 condition channels.
    Exact up to float rounding.
    """

    def __init__(self, sft: nn.Module, fold: nn.Conv2d | None = None) -> None:
        super().__init__()
        convs = (sft.SFT_scale_conv0, sft.SFT_shift_conv0, sft.SFT_scale_conv1, sft.SFT_shift_conv1)
        scale0, shift0, scale1, shift1 = (c.weight.detach().flatten(1) for c in convs)
        w0 = torch.cat([scale0, shift0])
        b0 = torch.cat([sft.SFT_scale_conv0.bias.detach(), sft.SFT_shift_conv0.bias.detach()])
        if fold is not None:  # w0 (a x + c) + b0 = (w0 a) x + (w0 c + b0)
            b0 = b0 + w0 @ fold.bias.detach() if fold.bias is not None else b0
            w0 = w0 @ fold.weight.detach().flatten(1)
        self.channels = scale1.shape[0]
        w1 = torch.cat([scale1, shift1])  # group 0: scale from the first half of the hidden map, group 1: shift
        b1 = torch.cat([sft.SFT_scale_conv1.bias.detach() + (1.0 if sft.plus_one else 0.0),
                        sft.SFT_shift_conv1.bias.detach()])
        self.hidden = FusedConv(_pointwise(w0, b0), activation=("leaky_relu", float(sft.negative_slope)))
        self.modulation = FusedConv(_pointwise(w1, b1, groups=2))

    def _hidden(self, cond: Tensor) -> Tensor:
        """LeakyReLU(w0 cond + b0), channels-last. From a 1-channel condition (FxSR's, folded) as two elementwise
        passes: a conv on a 1-channel map returns NCHW, and reordering that took longer than the conv."""
        hidden = self.hidden
        if cond.shape[1] != 1 or cond.device.type != "cpu":
            return hidden(cond)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else cond.dtype
        weight, bias = hidden._weights(dtype)
        shape = (cond.shape[0], weight.shape[0], *cond.shape[2:])
        out = torch.empty(shape, dtype=dtype, device=cond.device, memory_format=torch.channels_last)
        torch.addcmul(bias.view(1, -1, 1, 1), cond.to(dtype), weight.view(1, -1, 1, 1), out=out)
        return F.leaky_relu_(out, hidden.activation[1])

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        both = self.modulation(self._hidden(cond))
        scale, shift = both[:, :self.channels], both[:, self.channels:]
        if x.dtype != both.dtype:  # under autocast the convs ran in bf16; eager's x * scale promotes, so here too
            dtype = torch.promote_types(x.dtype, both.dtype)
            x, scale, shift = x.to(dtype), scale.to(dtype), shift.to(dtype)
        return torch.addcmul(shift, x, scale)


class ConcatTailConv(nn.Module):
    """conv(cat([*prefix, last])) [+ other] as conv_b(last) + (conv_a(cat(prefix)) [+ other]), for a
    concatenation whose prefix is made anyway: the last conv of a dense block reads x and every feature, and the
    conv before it read all but the newest (RRDB's conv5, FRSR's 1x1 conv_fusion).

    The widest copy of the block (384 channels in FRSR, 192 in RRDB) is never made; conv_b adds into conv_a's
    output with oneDNN's binary-add post-op, one extra pass over the 64-channel output instead. Whole forwards at
    128x128 (FxSR 96x96), old and new fused copies alternated in one process (a throwaway script, best of 3, 2-core
    AMX Xeon): FRSR 1.02-1.05x fp32, 1.05-1.09x bf16 (three runs), RRDBNet 1.03x / 1.04-1.06x, FxSR 1.00-1.01x /
    1.01-1.02x (two runs). `python benchmarks/fusion.py` (one FRSR block, one run each): fp32 / bf16 1.10x / 1.21x
    at 128x128, 1.23x / 1.42x at 256x256 with glibc's defaults (every concatenation a fresh, faulted-in map); with the
    allocator settings the CLI makes (inference/allocator.py) 1.03x / 1.05x and 1.09x / 1.09x.
    Every conv split into one conv per piece, no concatenation at all, was slower in bf16 on
    an RRDB block (5.44 against 4.68 ms at 128x128): convs reading 32 channels fill AMX poorly. (PyTorch's oneDNN
    conv takes only contiguous inputs, so a channel slice of one growing buffer would be copied all the same.)
    Exact up to float summation order.
    """

    def __init__(self, conv: FusedConv, split: int) -> None:
        super().__init__()
        self.head = FusedConv(_conv_like(conv, conv.weight[:, :split], conv.bias))
        self.tail = FusedConv(_conv_like(conv, conv.weight[:, split:], None), activation=conv.activation)

    def forward(self, prefix: Tensor, last: Tensor, other: Tensor | None = None) -> Tensor:
        return self.tail(last, self.head(prefix, other))


def _conv_like(conv: FusedConv, weight: Tensor, bias: Tensor | None) -> nn.Conv2d:
    """An nn.Conv2d with `conv`'s geometry and this weight and bias."""
    out = nn.Conv2d(weight.shape[1] * conv.groups, weight.shape[0], conv.kernel_size, tuple(conv.stride),
                    tuple(conv.padding), tuple(conv.dilation), conv.groups, bias=bias is not None)
    out.weight.data = weight.detach().clone()
    if bias is not None:
        out.bias.data = bias.detach().clone()
    return out


def _pointwise(weight: Tensor, bias: Tensor, *, groups: int = 1) -> nn.Conv2d:
    """A 1x1 conv with this (out, in per group) weight and bias."""
    conv = nn.Conv2d(weight.shape[1] * groups, weight.shape[0], 1, groups=groups)
    conv.weight.data, conv.bias.data = weight.reshape(*weight.shape, 1, 1).contiguous(), bias.clone()
    return conv


class RowBlockConv(nn.Module):
    """A stride-1 conv with few output channels, run as a conv computing `rows` output rows at a time (CPU).

    Weight (rows*out, in, kh+rows-1+extra, kw): output channel c*rows+j holds the original kernel shifted down by
    j (+ extra). The strided conv's output (N, out*rows, R, W') is interleaved back to (N, out, R*rows, W') and
    cropped. `extra` pads the kernel so that R*rows covers the output height when rows does not divide it.
    """

    def __init__(self, conv: nn.Conv2d, rows: int) -> None:
        super().__init__()
        self.conv, self.rows = conv, rows
        self._packed: dict[tuple, tuple[Tensor, Tensor | None]] = {}

    def _weights(self, extra: int, dtype: torch.dtype) -> tuple[Tensor, Tensor | None]:
        """The row-block weight and bias for `extra` leading kernel rows in `dtype` (the last one built is kept)."""
        key = (extra, dtype, self.conv.weight.data_ptr())
        if key not in self._packed:
            weight, bias, rows = self.conv.weight.detach(), self.conv.bias, self.rows
            out, cin, kh, kw = weight.shape
            block = weight.new_zeros(out, rows, cin, kh + rows - 1 + extra, kw)
            for j in range(rows):
                block[:, j, :, extra + j:extra + j + kh] = weight
            block = block.reshape(out * rows, cin, -1, kw).to(dtype).contiguous(memory_format=torch.channels_last)
            bias = bias.detach().repeat_interleave(rows).to(dtype) if bias is not None else None
            self._packed = {key: (block, bias)}  # one entry: tiles share a height, so this rarely churns
        return self._packed[key]

    def forward(self, x: Tensor) -> Tensor:
        conv, rows = self.conv, self.rows
        if x.device.type != "cpu":
            return conv(x)
        dtype = torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else x.dtype
        (ph, pw), kh = conv.padding, conv.kernel_size[0]
        out_h = x.shape[-2] + 2 * ph - kh + 1
        extra = -out_h % rows
        weight, bias = self._weights(extra, dtype)
        y = F.conv2d(x.to(dtype), weight, bias, stride=(rows, 1), padding=(ph + extra, pw))
        n, _, blocks, width = y.shape
        y = y.reshape(n, -1, rows, blocks, width).transpose(2, 3).reshape(n, -1, blocks * rows, width)
        return y[:, :, :out_h]


class InPlacePReLU(nn.Module):
    """A PReLU that overwrites its input: for a map nothing else reads (a conv's fresh output).

    A map over BAND_BYTES (an HR map after an upsampler, where the tail is not run in bands: bands.py) is done a
    band of rows at a time, each band's result copied back, so no second map is allocated: a fresh allocation of
    tens of MB gets fresh pages from the kernel unless the allocator keeps freed blocks (allocator.py), and
    faulting them in cost more than the PReLU itself (in a profile of the paper SRResNet x4's fp32 forward on
    128x128, the PReLU on its 64 MB phase map took ~44 ms per forward, ~2 ms in bands). The bands of a BandedTail
    (8-9 MB in SRResNet's x4 end) are done whole: sub-bands and their copies took 5.0 ms of its bf16 forward
    at 128x128, whole bands 3.9 (2-core AMX Xeon). Any map while autograd records takes the plain prelu.
    """

    BAND_BYTES = 16 << 20

    def __init__(self, prelu: nn.PReLU) -> None:
        super().__init__()
        self.weight = prelu.weight

    def forward(self, x: Tensor) -> Tensor:
        size = x.numel() * x.element_size()
        if size <= self.BAND_BYTES or x.dim() != 4 or (torch.is_grad_enabled() and x.requires_grad):
            return F.prelu(x, self.weight)
        rows = max(1, self.BAND_BYTES * x.shape[2] // size)
        for start in range(0, x.shape[2], rows):
            band = x[:, :, start:start + rows]
            band.copy_(F.prelu(band, self.weight))
        return x


def _row_block_size(conv: nn.Conv2d) -> int:
    """Rows per position for a conv worth rewriting as RowBlockConv (0: leave it).

    4 rows of at most 4 channels fill oneDNN's 16-channel block; output heights (x4 models, tiles) are mostly
    multiples of 4, so no kernel padding is needed. 5 rows measured slower where they need padding.
    """
    simple = (conv.stride == (1, 1) and conv.dilation == (1, 1) and conv.groups == 1 and conv.padding_mode == "zeros"
              and not isinstance(conv.padding, str))
    return 4 if simple and conv.out_channels <= 4 and conv.in_channels >= 16 else 0


def _activation(node: fx.Node, modules: dict[str, nn.Module]) -> tuple[str, float] | None:
    """(oneDNN post-op name, negative slope) when `node` is a ReLU / LeakyReLU applied to its first argument."""
    if node.op == "call_module":
        module = modules.get(node.target)
        if type(module) is nn.ReLU:
            return "relu", 0.0
        if type(module) is nn.LeakyReLU:
            return "leaky_relu", float(module.negative_slope)
    if node.op == "call_function" and node.target in _ACTIVATION_FUNCTIONS and not node.kwargs.get("inplace"):
        attr = _ACTIVATION_FUNCTIONS[node.target]
        slope = node.args[1] if len(node.args) > 1 else node.kwargs.get("negative_slope", 0.01)
        return (attr, float(slope)) if attr == "relu" or isinstance(slope, (int, float)) else None
    return None


def _only_user(node: fx.Node) -> fx.Node | None:
    return next(iter(node.users)) if len(node.users) == 1 else None


def _shuffle_factor(node: fx.Node, modules: dict[str, nn.Module]) -> int:
    """r when `node` is pixel_shuffle(r) of its first argument, else 0."""
    if node.op == "call_module" and type(modules.get(node.target)) is nn.PixelShuffle:
        return modules[node.target].upscale_factor
    if node.op == "call_function" and node.target in (F.pixel_shuffle, torch.pixel_shuffle):
        factor = node.args[1] if len(node.args) > 1 else node.kwargs.get("upscale_factor")
        return factor if isinstance(factor, int) else 0
    return 0


def _scaled_term(node: fx.Node) -> tuple[fx.Node, float] | None:
    """(a, s) when `node` is a * s or s * a for a python number s; (node, 1.0) for any other node."""
    if node.op == "call_function" and node.target in (operator.mul, torch.mul) and len(node.args) == 2:
        a, b = node.args
        if isinstance(a, fx.Node) and isinstance(b, (int, float)):
            return a, float(b)
        if isinstance(b, fx.Node) and isinstance(a, (int, float)):
            return b, float(a)
    return (node, 1.0) if isinstance(node, fx.Node) else None


class _Graph:
    """The traced model being rewritten, with its modules and how often each module is called."""

    def __init__(self, traced: fx.GraphModule) -> None:
        self.traced, self.graph = traced, traced.graph
        self.modules = dict(traced.named_modules())
        # call counts per module; the rewrites keep them (a collapsed chain calls its conv's target once again)
        self._calls = Counter(n.target for n in traced.graph.nodes if n.op == "call_module")

    def nodes(self) -> list[fx.Node]:
        return list(self.graph.nodes)

    def conv(self, node: object, *, single_user: bool = True, any_padding: bool = False) -> nn.Conv2d | None:
        """The nn.Conv2d that `node` calls, if only this node calls it, (when `single_user`) its output has one
        user and (unless `any_padding`) its padding is explicit zeros, as oneDNN's fused ops take it."""
        if not isinstance(node, fx.Node) or node.op != "call_module" or (single_user and len(node.users) != 1):
            return None
        module = self.modules.get(node.target)
        if type(module) is not nn.Conv2d or self.calls(node.target) != 1:
            return None
        return module if any_padding or (module.padding_mode == "zeros" and not isinstance(module.padding, str)) \
            else None

    def calls(self, target: str) -> int:
        """How many nodes call the module at `target`."""
        return self._calls[target]

    def set_module(self, target: str, module: nn.Module) -> None:
        parent, _, name = target.rpartition(".")
        setattr(self.traced.get_submodule(parent) if parent else self.traced, name, module)
        self.modules[target] = module

    def collapse(self, chain: list[fx.Node], module: nn.Module, args: tuple, target: str | None = None) -> None:
        """Replace the chain conv -> ... -> last (each the only user of the one before) by one call of `module`,
        placed where the last node was and stored under `target` (default: the conv's name)."""
        conv_node, last = chain[0], chain[-1]
        target = target or conv_node.target
        self.set_module(target, module)
        with self.graph.inserting_before(last):
            fused = self.graph.call_module(target, args)
        last.replace_all_uses_with(fused)
        for node in reversed(chain):
            self.graph.erase_node(node)


def _fold_batch_norms(g: _Graph) -> None:
    for node in g.nodes():
        bn = g.modules.get(node.target) if node.op == "call_module" else None
        conv = g.conv(node.args[0], any_padding=True) if node.args else None
        if isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats and conv is not None:
            g.set_module(node.args[0].target, fuse_conv_bn_eval(conv, bn))
            node.replace_all_uses_with(node.args[0])
            g.graph.erase_node(node)


def _fuse_residual_adds(g: _Graph) -> None:
    """conv(x) [* s] + other -> FusedConv(scale=s)(x, other); other scaled sums a * s + b -> torch.add(b, a, s)."""
    for node in g.nodes():
        if node.op != "call_function" or node.target not in (operator.add, torch.add) or node.kwargs \
                or len(node.args) != 2 or not all(isinstance(a, fx.Node) for a in node.args):
            continue
        for term, other in (node.args, node.args[::-1]):
            found = _scaled_term(term)
            if found is None:
                continue
            source, scale = found
            chain = [source, term, node] if term is not source else [source, node]
            conv = g.conv(source)
            if conv is not None and not _row_block_size(conv) and all(len(n.users) == 1 for n in chain[1:-1]):
                g.collapse(chain, FusedConv(conv, scale=scale), (source.args[0], other))
                break
            if term is not source and len(term.users) == 1:
                with g.graph.inserting_before(node):
                    summed = g.graph.call_function(torch.add, (other, source), {"alpha": scale})
                node.replace_all_uses_with(summed)
                g.graph.erase_node(node)
                g.graph.erase_node(term)
                break


def _pointwise_conv(conv: nn.Conv2d) -> bool:
    """A plain 1x1 conv: stride 1, no padding, dilation or groups (a per-pixel matrix product)."""
    return conv.kernel_size == (1, 1) and conv.stride == (1, 1) and conv.padding == (0, 0) and \
        conv.dilation == (1, 1) and conv.groups == 1


def _fuse_sft_layers(g: _Graph) -> None:
    """SFTLayer calls -> FastSFT; a 1x1 conv that widens the condition and feeds nothing but SFT layers (as
    their condition, each layer called once) is folded into them."""
    calls = [n for n in g.nodes() if n.op == "call_module" and isinstance(g.modules.get(n.target), SFTLayer)
             and len(n.args) == 2 and not n.kwargs]
    sft_calls = set(calls)
    folds: dict[fx.Node, nn.Conv2d] = {}
    for cond in {n.args[1] for n in calls}:
        conv = g.conv(cond, single_user=False)
        if conv is not None and _pointwise_conv(conv) and conv.in_channels < conv.out_channels and \
                all(u in sft_calls and u.args[0] is not cond and g.calls(u.target) == 1 for u in cond.users):
            folds[cond] = conv
    for node in calls:
        cond = node.args[1]
        g.set_module(node.target, FastSFT(g.modules[node.target], folds.get(cond)))
        if cond in folds:
            node.args = (node.args[0], cond.args[0])
    for cond in folds:
        g.graph.erase_node(cond)


def _nearest_x2(node: fx.Node, modules: dict[str, nn.Module]) -> bool:
    """`node` is nearest upsampling x2 of its first argument (F.interpolate or nn.Upsample)."""
    if node.op == "call_module":
        module = modules.get(node.target)
        return type(module) is nn.Upsample and module.size is None and module.mode == "nearest" and \
            module.scale_factor in _TIMES_TWO and not module.recompute_scale_factor
    if node.op != "call_function" or node.target is not F.interpolate:
        return False
    try:
        bound = inspect.signature(F.interpolate).bind(*node.args, **node.kwargs)
    except TypeError:
        return False
    bound.apply_defaults()
    arguments = bound.arguments
    return arguments["size"] is None and arguments["mode"] == "nearest" and \
        arguments["scale_factor"] in _TIMES_TWO and not arguments["recompute_scale_factor"]


def _fuse_nearest_upsampling(g: _Graph) -> None:
    """nearest upsampling x2 -> 3x3 conv [-> ReLU/LeakyReLU] -> NearestUpsampleConv."""
    for node in g.nodes():
        if not _nearest_x2(node, g.modules) or (conv_node := _only_user(node)) is None:
            continue
        conv = g.conv(conv_node, single_user=False)
        if conv is None or conv_node.args[0] is not node or conv.kernel_size != (3, 3) or conv.stride != (1, 1) \
                or conv.padding != (1, 1) or conv.dilation != (1, 1) or conv.groups != 1:
            continue
        chain, activation = [conv_node], None
        follower = _only_user(conv_node)
        if follower is not None and follower.args[0] is conv_node and \
                (activation := _activation(follower, g.modules)) is not None:
            chain.append(follower)
        g.collapse(chain, NearestUpsampleConv(conv, activation), (node.args[0],))
        g.graph.erase_node(node)


def _fuse_shuffles_and_activations(g: _Graph) -> None:
    """conv -> [pixel_shuffle r] -> [ReLU/LeakyReLU] -> one FusedConv."""
    for node in g.nodes():
        conv = g.conv(node)
        if conv is None:
            continue
        chain, shuffle = [node], 1
        follower = _only_user(node)
        if follower is not None and (factor := _shuffle_factor(follower, g.modules)) and \
                conv.out_channels % factor**2 == 0:
            chain, shuffle = [node, follower], factor
        follower = _only_user(chain[-1])
        activation = _activation(follower, g.modules) if follower is not None else None
        if activation is not None and follower.args[0] is chain[-1]:
            chain.append(follower)
        if len(chain) > 1:
            g.collapse(chain, FusedConv(conv, activation=activation, shuffle=shuffle), (node.args[0],))


def _in_channels(module: nn.Module | None) -> int | None:
    """Channels of the map a conv (plain, fused, or the prefix a ConcatTailConv reads) takes first, else None."""
    if isinstance(module, ConcatTailConv):
        module = module.head
    if isinstance(module, (nn.Conv2d, FusedConv)):
        return module.weight.shape[1] * module.groups
    return None


def _concatenation(node: fx.Node) -> list[fx.Node] | None:
    """The nodes of `node` when it is torch.cat(nodes, 1), else None."""
    if node.op != "call_function" or node.target is not torch.cat or len(node.args) != 2 or node.kwargs or \
            node.args[1] != 1 or not isinstance(node.args[0], (list, tuple)):
        return None
    return list(node.args[0]) if all(isinstance(a, fx.Node) for a in node.args[0]) else None


def _split_concat_tails(g: _Graph) -> None:
    """Dense blocks: torch.cat([a], 1) read only by convs -> a (a copy nobody needs), then a FusedConv (no
    activation, or ReLU: oneDNN takes no LeakyReLU after a binary post-op) on cat([*prefix, last], 1) whose
    prefix a conv reads too (as a concatenation or, one node, as it is) -> ConcatTailConv on prefix and last.
    A split concatenation is not made, so the next conv's prefix is not there: every other conv splits."""
    for node in g.nodes():
        parts = _concatenation(node)
        if parts is not None and len(parts) == 1 and all(u.op == "call_module" for u in node.users):
            node.replace_all_uses_with(parts[0])
            g.graph.erase_node(node)
    made = {tuple(parts): node for node in g.nodes() if (parts := _concatenation(node))}
    for whole in g.nodes():
        parts, conv = _concatenation(whole), _only_user(whole)
        fused = g.modules.get(conv.target) if conv is not None and conv.op == "call_module" else None
        if not parts or len(parts) < 2 or not isinstance(fused, FusedConv) or fused.shuffle > 1 or \
                fused.groups != 1 or (fused.activation is not None and fused.activation[0] != "relu") or \
                g.calls(conv.target) != 1 or conv.args[0] is not whole or conv.kwargs:
            continue
        prefix = made.get(tuple(parts[:-1])) if len(parts) > 2 else parts[0]
        widths = {_in_channels(g.modules.get(u.target)) for u in (prefix.users if prefix is not None else ())
                  if u.op == "call_module" and u.args and u.args[0] is prefix}
        if len(widths) != 1 or not 0 < (split := widths.pop() or 0) < _in_channels(fused):
            continue
        g.set_module(conv.target, ConcatTailConv(fused, split))
        conv.args = (prefix, parts[-1], *conv.args[1:])
        g.graph.erase_node(whole)
        made.pop(tuple(parts))


def _fuse_polyphase(g: _Graph) -> None:
    """FusedConv(shuffle r) -> [PReLU] -> narrow conv: the shuffle is skipped and the narrow conv runs on the LR
    phases (polyphase_conv); a per-channel PReLU in between gets its slopes repeated for the r*r phases."""
    for node in g.nodes():
        fused = g.modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(fused, FusedConv) or fused.shuffle < 2 or (nxt := _only_user(node)) is None:
            continue
        act_node, act = None, g.modules.get(nxt.target) if nxt.op == "call_module" else None
        if type(act) is nn.PReLU and nxt.args[0] is node and g.calls(nxt.target) == 1:
            act_node, nxt = nxt, _only_user(nxt)
        conv = g.conv(nxt, single_user=False) if nxt is not None else None
        if conv is None or nxt.args[0] is not (act_node or node) or not _row_block_size(conv):
            continue
        k, r = conv.kernel_size, fused.shuffle
        if k[0] != k[1] or k[0] % 2 == 0 or conv.padding != (k[0] // 2,) * 2 or \
                conv.in_channels * r * r != fused.weight.shape[0]:
            continue
        fused.unshuffle = False
        if act_node is not None and act.num_parameters > 1:
            phases = nn.PReLU(act.num_parameters * r * r)
            phases.weight.data = act.weight.detach().repeat(r * r)
            g.set_module(act_node.target, phases)
        g.set_module(nxt.target, FusedConv(polyphase_conv(conv, r), shuffle=r))


def _prelus_in_place(g: _Graph) -> None:
    """PReLU on a conv's output that nothing else reads -> InPlacePReLU."""
    convs = (nn.Conv2d, FusedConv, RowBlockConv)
    for node in g.nodes():
        prelu = g.modules.get(node.target) if node.op == "call_module" else None
        source = node.args[0] if node.args else None
        if type(prelu) is not nn.PReLU or g.calls(node.target) != 1 or not isinstance(source, fx.Node) or \
                source.op != "call_module" or len(source.users) != 1 or \
                not isinstance(g.modules.get(source.target), convs):
            continue
        g.set_module(node.target, InPlacePReLU(prelu))


def _rewrite_remaining_convs(g: _Graph) -> None:
    """Narrow convs -> RowBlockConv; the other plain convs -> FusedConv, for its once-cast weights."""
    for node in g.nodes():
        conv = g.modules.get(node.target) if node.op == "call_module" else None
        if type(conv) is nn.Conv2d and (rows := _row_block_size(conv)):
            g.set_module(node.target, RowBlockConv(conv, rows))
        elif g.conv(node, single_user=False) is not None:
            g.set_module(node.target, FusedConv(conv))


class _Tracer(fx.Tracer):
    """symbolic_trace's tracer, keeping SFT layers whole (one call each) for _fuse_sft_layers."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, SFTLayer) or super().is_leaf_module(m, module_qualified_name)


def fuse_for_inference(model: nn.Module, *, activations: bool) -> nn.Module:
    """An eval-mode copy of `model` with conv+BN folded and, when `activations` (i.e. on CPU), conv + residual
    add / pixel shuffle / ReLU / LeakyReLU fused (FusedConv) and narrow convs row-blocked."""
    model = copy.deepcopy(model).eval()
    activations = activations and torch.backends.mkldnn.is_available()
    if not activations and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    try:
        tracer = _Tracer()
        traced = fx.GraphModule(model, tracer.trace(model), type(model).__name__)
    except Exception as error:  # a trace failure only costs the fusion
        log.info("graph fusion skipped (%s: %s)", type(error).__name__, str(error).splitlines()[0][:120])
        return model
    g = _Graph(traced)
    for node in g.nodes():  # Identity placeholders (e.g. BN switched off) hide conv -> act pairs
        if node.op == "call_module" and type(g.modules.get(node.target)) is nn.Identity:
            node.replace_all_uses_with(node.args[0])
            g.graph.erase_node(node)
    _fold_batch_norms(g)
    if activations:
        _fuse_sft_layers(g)
        _fuse_nearest_upsampling(g)
        _fuse_residual_adds(g)
        _fuse_shuffles_and_activations(g)
        _split_concat_tails(g)
        _fuse_polyphase(g)
        _rewrite_remaining_convs(g)
        _prelus_in_place(g)
        from perceptsr.inference.bands import band_tails  # bands builds on this module's layers

        band_tails(g)
    g.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced
