"""Inference-only graph rewrites of a generator (a torch.fx trace of a copy; the caller's model is untouched).

- conv + BatchNorm: eval-mode BN is a per-channel affine map, so it folds into the conv's weights (exact up to
  float rounding). Removes one pass over the feature map per BN (SRResNet, SRFeat).
- conv + ReLU / LeakyReLU on CPU: one oneDNN call with the activation as a post-op
  (torch.ops.mkldnn._convolution_pointwise, what inductor emits), so the output is written once, not read and
  written again by the activation. A small, noisy gain: 1.09-1.48x (fp32) / 1.04-1.07x (bf16) for a 3x3 conv
  64->64 + LeakyReLU at 256x256 over two runs of `python benchmarks/fusion.py` (2 threads, idle 2-core AMX Xeon).
- a conv with few output channels (the last conv of every generator, 64->3 at full resolution) on CPU: oneDNN
  computes at least 16 output channels per pixel, so a 64->3 conv costs as much as a 64->16 one. `RowBlockConv`
  makes the conv compute `rows` output rows per position (stride `rows` down, a kernel `rows - 1` taller,
  `rows * out` channels), then puts the rows back in place. `python benchmarks/fusion.py` at 256x256: 9x9 64->3
  2.80x faster (fp32) / 1.89-1.96x (bf16), 3x3 64->3 1.45-1.56x / 1.10-1.25x (two runs). Exact up to float
  summation order.
A model that cannot be traced (data-dependent control flow, e.g. FxSR's float-or-map `t`) keeps its plain copy.
"""

from __future__ import annotations

import copy
import logging

import torch
from torch import Tensor, fx, nn
from torch.nn import functional as F  # noqa: N812
from torch.nn.utils.fusion import fuse_conv_bn_eval

log = logging.getLogger(__name__)

_ACTIVATION_FUNCTIONS = {F.relu: "relu", torch.relu: "relu", F.leaky_relu: "leaky_relu"}
_FUSED_DTYPES = (torch.float32, torch.bfloat16)


class ConvActivation(nn.Module):
    """conv2d followed by relu / leaky_relu, as one oneDNN convolution with a post-op (CPU).

    Under CPU autocast the inputs are cast to the autocast dtype first, as autocast does for conv2d (the custom
    op is not on autocast's lists). Other dtypes (fp16) run the two ops separately.
    """

    def __init__(self, conv: nn.Conv2d, attr: str, slope: float) -> None:
        super().__init__()
        self.weight, self.bias = conv.weight, conv.bias
        self.padding, self.stride = list(conv.padding), list(conv.stride)
        self.dilation, self.groups = list(conv.dilation), conv.groups
        self.attr, self.slope = attr, slope

    def forward(self, x: Tensor) -> Tensor:
        weight, bias = self.weight, self.bias
        if torch.is_autocast_enabled("cpu"):
            dtype = torch.get_autocast_dtype("cpu")
            x, weight = x.to(dtype), weight.to(dtype)
            bias = bias.to(dtype) if bias is not None else None
        if x.dtype not in _FUSED_DTYPES or weight.dtype != x.dtype or x.device.type != "cpu":
            out = F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
            return F.leaky_relu(out, self.slope) if self.attr == "leaky_relu" else F.relu(out)
        scalars = [self.slope] if self.attr == "leaky_relu" else []
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, self.padding, self.stride, self.dilation,
                                                       self.groups, self.attr, scalars, "")

    def extra_repr(self) -> str:
        return f"{tuple(self.weight.shape)}, {self.attr}" + (f"({self.slope})" if self.attr == "leaky_relu" else "")


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


def _conv_of(node: fx.Node, modules: dict[str, nn.Module], kind: type) -> nn.Module | None:
    """The module of the call_module node feeding `node`, if it is a `kind` whose output only `node` uses."""
    source = node.args[0] if node.args else None
    if not isinstance(source, fx.Node) or source.op != "call_module" or len(source.users) != 1:
        return None
    module = modules.get(source.target)
    return module if type(module) is kind else None


def _replace(traced: fx.GraphModule, node: fx.Node, module: nn.Module) -> None:
    """Put `module` in place of the module that node's input calls, and drop `node` from the graph."""
    source = node.args[0]
    parent, _, name = source.target.rpartition(".")
    setattr(traced.get_submodule(parent) if parent else traced, name, module)
    node.replace_all_uses_with(source)
    traced.graph.erase_node(node)


def fuse_for_inference(model: nn.Module, *, activations: bool) -> nn.Module:
    """An eval-mode copy of `model` with conv+BN folded and (when `activations`, i.e. on CPU) conv+ReLU/LeakyReLU
    fused and narrow convs row-blocked."""
    model = copy.deepcopy(model).eval()
    activations = activations and torch.backends.mkldnn.is_available()
    if not activations and not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    try:
        traced = fx.symbolic_trace(model)
    except Exception as error:  # a trace failure only costs the fusion
        log.info("graph fusion skipped (%s: %s)", type(error).__name__, str(error).splitlines()[0][:120])
        return model
    modules = dict(traced.named_modules())
    for node in list(traced.graph.nodes):  # Identity placeholders (e.g. BN switched off) hide conv -> act pairs
        if node.op == "call_module" and type(modules.get(node.target)) is nn.Identity:
            node.replace_all_uses_with(node.args[0])
            traced.graph.erase_node(node)
    for node in list(traced.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        conv = _conv_of(node, modules, nn.Conv2d)
        if isinstance(bn, nn.BatchNorm2d) and conv is not None and bn.track_running_stats:
            fused, target = fuse_conv_bn_eval(conv, bn), node.args[0].target
            _replace(traced, node, fused)
            modules[target] = fused
    for node in list(traced.graph.nodes) if activations else []:
        found, conv = _activation(node, modules), _conv_of(node, modules, nn.Conv2d)
        if found and conv is not None and conv.padding_mode == "zeros" and not isinstance(conv.padding, str):
            _replace(traced, node, ConvActivation(conv, *found))
    for node in list(traced.graph.nodes) if activations else []:
        conv = modules.get(node.target) if node.op == "call_module" else None
        if type(conv) is nn.Conv2d and (rows := _row_block_size(conv)):
            parent, _, name = node.target.rpartition(".")
            setattr(traced.get_submodule(parent) if parent else traced, name, RowBlockConv(conv, rows))
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced
