"""What the fusion rewrites buy, timed in one run: each rewritten layer against the layers it replaces.

python benchmarks/fusion.py [--side 256] [--rounds 5]

Channels-last CPU tensors, inference mode, best of `rounds`, fp32 and bf16 (bf16 only where torch reports native
support). Rows, each as the model has it vs the rewrite: conv 3x3 64->64 + LeakyReLU, conv + 0.2-scaled residual
add (RRDB, residual blocks), conv 64->256 + pixel shuffle 2 + LeakyReLU (sub-pixel upsamplers) vs FusedConv; conv
3x3 and 9x9 64->3 (the final conv of every generator) vs RowBlockConv; SRResNet's end (conv 64->256, shuffle 2,
PReLU, RowBlockConv 9x9 64->3) vs the shuffle skipped and the 9x9 run on the LR phases (polyphase_conv);
nearest x2 + conv 3x3 64->64 + LeakyReLU (RRDBNet's upsampling stages) as FusedConv after F.interpolate vs
NearestUpsampleConv; FRSR's dense block (5 convs + 1x1 fusion, each on the concatenation of all before) as
FusedConvs on torch.cat vs the fused block, whose convs read the concatenation made for the conv before
(ConcatTailConv).
Prints milliseconds and the ratio; the ratios are what count.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import torch  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402, N812

from perceptsr.archs.natsr import DenseBlock  # noqa: E402
from perceptsr.inference.fast import native_reduced_precision  # noqa: E402
from perceptsr.inference.fusion import (  # noqa: E402
    FusedConv,
    NearestUpsampleConv,
    RowBlockConv,
    fuse_for_inference,
    polyphase_conv,
)


def best_ms(function: Callable[[], object], rounds: int) -> float:
    function()  # warm-up: oneDNN primitive creation, weight packing
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


Layer = Callable[[torch.Tensor], torch.Tensor]


def cases(side: int) -> dict[str, tuple[Layer, Layer]]:
    """name -> (layers as the model has them, the rewrite), both called on a 1x64xside x side input."""
    torch.manual_seed(0)
    conv, up = nn.Conv2d(64, 64, 3, padding=1), nn.Conv2d(64, 256, 3, padding=1)
    narrow3, narrow9 = nn.Conv2d(64, 3, 3, padding=1), nn.Conv2d(64, 3, 9, padding=4)
    residual = torch.rand(1, 64, side, side).contiguous(memory_format=torch.channels_last)
    with_activation = FusedConv(conv, activation=("leaky_relu", 0.1))
    with_residual = FusedConv(conv, scale=0.2)
    shuffled = FusedConv(up, activation=("leaky_relu", 0.1), shuffle=2)
    blocked3, blocked9 = RowBlockConv(narrow3, 4), RowBlockConv(narrow9, 4)
    prelu, phases_prelu = nn.PReLU(64), nn.PReLU(256)
    phases_prelu.weight.data = prelu.weight.detach().repeat(4)
    phases, polyphase = FusedConv(up, shuffle=2, unshuffle=False), FusedConv(polyphase_conv(narrow9, 2), shuffle=2)
    upsampling = NearestUpsampleConv(conv, ("leaky_relu", 0.1))
    block = DenseBlock(64, 5, 0.1).eval()
    block_convs = [FusedConv(c, activation=("relu", 0.0)) for c in block.convs]
    block_fusion = FusedConv(block.conv_fusion, scale=block.res_scale)
    fused_block = fuse_for_inference(block, activations=True)

    def computed(x: torch.Tensor) -> torch.Tensor:  # a block's input comes in the dtype the convs compute in
        return x.to(torch.get_autocast_dtype("cpu")) if torch.is_autocast_enabled("cpu") else x

    def concatenating(x: torch.Tensor) -> torch.Tensor:  # the block with FusedConvs only
        features = [computed(x)]
        for layer in block_convs:
            features.append(layer(torch.cat(features, 1)))
        return block_fusion(torch.cat(features, 1), features[0])

    def like() -> torch.Tensor:  # the residual in the dtype the conv output has
        return residual.to(torch.get_autocast_dtype("cpu")) if torch.is_autocast_enabled("cpu") else residual

    return {"conv3x3 64->64 + LeakyReLU": (lambda x: F.leaky_relu(conv(x), 0.1), with_activation),
            "conv3x3 64->64 * 0.2 + x": (lambda x: conv(x) * 0.2 + like(), lambda x: with_residual(x, like())),
            "conv 64->256 + shuffle + LReLU": (lambda x: F.leaky_relu(F.pixel_shuffle(up(x), 2), 0.1), shuffled),
            "up + PReLU + 9x9 64->3": (lambda x: blocked9(prelu(F.pixel_shuffle(up(x), 2))),
                                       lambda x: polyphase(phases_prelu(phases(x)))),
            "nearest x2 + conv3x3 + LReLU": (
                lambda x: with_activation(F.interpolate(x, scale_factor=2, mode="nearest")), upsampling),
            "FRSR dense block": (concatenating, lambda x: fused_block(computed(x))),
            "conv3x3 64->3": (narrow3, blocked3),
            "conv9x9 64->3": (narrow9, blocked9)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=256)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    x = torch.rand(1, 64, args.side, args.side).contiguous(memory_format=torch.channels_last)
    precisions = ["fp32"] + (["bf16"] if native_reduced_precision(torch.device("cpu")) == "bf16" else [])
    print(f"{torch.get_num_threads()} threads, input 1x64x{args.side}x{args.side}")  # noqa: T201
    with torch.inference_mode():
        for name, (before, after) in cases(args.side).items():
            for precision in precisions:
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                    old, new = (best_ms(lambda f=f: f(x), args.rounds) for f in (before, after))
                print(f"{name:32s} {precision}: {old:7.2f} ms -> {new:7.2f} ms  ({old / new:.2f}x)")  # noqa: T201


if __name__ == "__main__":
    main()
