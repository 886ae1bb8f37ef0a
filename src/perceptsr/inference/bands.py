"""The upsampling tail of a generator run a band of output rows at a time (CPU inference).

After its upsamplers a generator's maps are s² times the LR size: at x4, 64 channels of a 512x512 output are
33 MB in bf16, of a 2096x2096 tile 562 MB. Every such map is a fresh allocation on every forward, and glibc maps
each block over 32 MiB anew, so the kernel hands out (faults in and zero-fills) fresh pages for it; then the next
layer reads it back from memory. `BandedTail` runs the chain from the first upsampling layer to the last conv
for one band of output rows at a time: each band's maps are a few MB, reused from the heap band after band, and
the full-size output is the only large tensor. Each layer's band is computed from its input rows plus the rows
its kernel reaches (`halo`); those overlap rows are computed twice, which the band height keeps to a few percent.
Exact up to float summation order: every output row is the same sum over the same inputs as unbanded (the rows
at an image edge see the layer's own zero padding, as unbanded).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, fx, nn

from perceptsr.inference.fusion import FusedConv, InPlacePReLU, NearestUpsampleConv, RowBlockConv, _Graph

_ELEMENTWISE = (InPlacePReLU, nn.PReLU, nn.ReLU, nn.LeakyReLU)


def _same_rows(kernel: int, padding: int, stride: int, dilation: int) -> int | None:
    """The rows a stride-1, 'same'-padded conv reaches on each side of an output row, else None."""
    if stride != 1 or dilation != 1 or kernel % 2 == 0 or padding != kernel // 2:
        return None
    return padding


def row_geometry(module: nn.Module) -> tuple[int, int] | None:
    """(factor, halo) of a layer that maps rows to rows: output row R reads input rows within `halo` of R // factor.
    None for a layer that cannot run on a band of rows."""
    if isinstance(module, _ELEMENTWISE):
        return 1, 0
    if isinstance(module, NearestUpsampleConv):  # HR row R reads LR rows R // 2 - 1 .. R // 2 + 1
        return 2, 1
    if isinstance(module, FusedConv):
        halo = _same_rows(module.kernel_size[0], module.padding[0], module.stride[0], module.dilation[0])
        factor = module.shuffle if module.shuffle > 1 and module.unshuffle else 1
        return None if halo is None else (factor, halo)
    conv = module.conv if isinstance(module, RowBlockConv) else module
    if type(conv) is nn.Conv2d and isinstance(conv.padding, tuple):
        halo = _same_rows(conv.kernel_size[0], conv.padding[0], conv.stride[0], conv.dilation[0])
        return None if halo is None else (1, halo)
    return None


def _out_channels(module: nn.Module, previous: int) -> int:
    """Channels of a layer's output (elementwise layers keep their input's)."""
    if isinstance(module, FusedConv):
        return module.weight.shape[0] // (module.shuffle**2 if module.shuffle > 1 and module.unshuffle else 1)
    if isinstance(module, NearestUpsampleConv):
        return module.channels
    conv = module.conv if isinstance(module, RowBlockConv) else module
    return conv.out_channels if isinstance(conv, nn.Conv2d) else previous


class BandedTail(nn.Module):
    """`layers` (a chain whose row_geometry is known and whose factors multiply to > 1) run band by band.

    Bands are `band_rows(...)` output rows high: as many as keep the largest map of a band near BAND_BYTES, but
    at least MIN_ROWS input rows' worth, so the recomputed halo rows stay a small share. Each sample of a batch
    is banded on its own (a band of one sample is contiguous in channels-last memory).
    """

    BAND_BYTES = 8 << 20
    MIN_ROWS = 16  # input rows per band, at least: the halo rows of each layer are recomputed per band

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        super().__init__()
        self.layers = nn.ModuleDict(layers)  # the layers' own names ('.' -> '_'), in order
        self.geometry = [row_geometry(layer) for layer in self.layers.values()]
        if any(g is None for g in self.geometry):
            raise ValueError("every layer of a BandedTail needs a row geometry")
        self.factor = math.prod(f for f, _ in self.geometry)

    def band_rows(self, x: Tensor) -> int:
        """Output rows per band for the input x (a multiple of the total factor)."""
        _, channels, height, width = x.shape
        factor, widest = 1, channels
        for layer, (f, _) in zip(self.layers.values(), self.geometry, strict=True):
            channels, factor = _out_channels(layer, channels), factor * f
            widest = max(widest, channels * factor * factor)  # elements per input row and column
        per_input_row = widest * width * x.element_size()
        rows = max(self.MIN_ROWS, self.BAND_BYTES // max(1, per_input_row))
        return min(height, rows) * self.factor

    def _rows(self, x: Tensor, depth: int, start: int, stop: int) -> Tensor:
        """Rows [start, stop) of the output of the first `depth` layers on x (one sample)."""
        if depth == 0:
            return x[:, :, start:stop]
        factor, halo = self.geometry[depth - 1]
        height = x.shape[2] * math.prod(f for f, _ in self.geometry[:depth - 1])
        first, last = max(0, start // factor - halo), min(height, -(-stop // factor) + halo)
        y = list(self.layers.values())[depth - 1](self._rows(x, depth - 1, first, last))
        return y[:, :, start - factor * first:stop - factor * first]

    def _whole(self, x: Tensor) -> Tensor:
        for layer in self.layers.values():
            x = layer(x)
        return x

    def forward(self, x: Tensor) -> Tensor:
        n, _, height, _ = x.shape
        rows = self.band_rows(x)
        out_height = height * self.factor
        if x.device.type != "cpu" or rows >= out_height or torch.is_grad_enabled():
            return self._whole(x)
        out: Tensor | None = None
        for sample in range(n):
            item = x[sample:sample + 1]
            for start in range(0, out_height, rows):
                stop = min(out_height, start + rows)
                band = self._rows(item, len(self.layers), start, stop)
                if out is None:
                    out = torch.empty((n, band.shape[1], out_height, band.shape[3]), dtype=band.dtype,
                                      device=band.device, memory_format=torch.channels_last)
                out[sample:sample + 1, :, start:stop] = band
        return out

    def extra_repr(self) -> str:
        return f"factor={self.factor}, band_bytes={self.BAND_BYTES}"


def band_tails(g: _Graph) -> None:
    """Each chain of row layers (row_geometry) that upsamples -> one BandedTail call.

    A chain starts at a conv (an elementwise layer may work in place on its input, which others may read), each
    later layer reads only the one before, which nothing else reads, and each layer is called once."""
    chain: list[fx.Node] = []
    for node in [*g.nodes(), None]:
        module = g.modules.get(node.target) if node is not None and node.op == "call_module" else None
        fits = module is not None and row_geometry(module) is not None and len(node.args) == 1 and \
            not node.kwargs and g.calls(node.target) == 1
        if fits and chain and node.args[0] is chain[-1] and len(chain[-1].users) == 1:
            chain.append(node)
            continue
        if math.prod(row_geometry(g.modules[n.target])[0] for n in chain) > 1:
            tail = BandedTail({n.target.replace(".", "_"): g.modules[n.target] for n in chain})
            name = next(f"tail{i or ''}" for i in range(len(g.modules) + 1) if f"tail{i or ''}" not in g.modules)
            g.collapse(chain, tail, (chain[0].args[0],), target=name)
        chain = [node] if fits and not isinstance(module, _ELEMENTWISE) else []
