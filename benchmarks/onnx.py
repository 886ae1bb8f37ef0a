"""onnxruntime against the project's fast path and eager PyTorch: same model, same input, same run.

python benchmarks/onnx.py [--model ARCH ...] [--side 64] [--rounds 3] [--tiny]

Each architecture is built at its released (default) size with random weights (`--tiny`: the tests' tiny configs),
exported with `perceptsr.inference.onnx.export_onnx` (fp32, and fp16 with half=True) and timed on one 1x3xside x side
input (FxSR with a random t map, SFTGAN with random class probabilities), best of `rounds` after a warm-up:
- eager: the generator as built, NCHW, torch.inference_mode, fp32;
- fast fp32 / fast bf16: `perceptsr.inference.fast.prepare` (fused, channels-last; bf16 only where torch runs it
  natively on this CPU, as `--precision auto` decides);
- onnxruntime fp32 / fp16: the exported file through `OnnxModel` (CPUExecutionProvider unless CUDA's is installed),
  with as many intra-op threads as torch uses.
Prints milliseconds, the speed-up over eager fp32 (x), and max |output - eager fp32|. Ratios within one run are
what count on a shared machine.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# this file is onnx.py: its folder must not shadow the onnx package (python puts the script's folder first)
sys.path[:] = [str(ROOT / "src"), *(p for p in sys.path if Path(p or ".").resolve() != ROOT / "benchmarks")]

import torch  # noqa: E402

from perceptsr.archs import ARCHS  # noqa: E402
from perceptsr.inference import allocator  # noqa: E402
from perceptsr.inference.fast import native_reduced_precision, prepare  # noqa: E402
from perceptsr.inference.onnx import export_onnx, load_onnx  # noqa: E402

DEFAULT_MODELS = ("msrresnet", "rrdb", "fxsr", "sftgan", "srfeat", "frsr")
CHANNELS = {"seg": 8, "t": 1}


def best_ms(function: Callable[..., torch.Tensor], lr: torch.Tensor, conditions: dict[str, torch.Tensor],
            rounds: int) -> tuple[float, torch.Tensor]:
    out = function(lr, **conditions)  # warm-up: oneDNN primitives, onnxruntime's first-run allocations
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        out = function(lr, **conditions)
        best = min(best, time.perf_counter() - start)
    return best * 1e3, out


def build(name: str, tiny: bool) -> torch.nn.Module:
    torch.manual_seed(0)
    spec = ARCHS[name]
    scale = 4 if 4 in spec.scales else spec.scales[0]
    config = spec.tiny(scale) if tiny else spec.config(scale=scale)
    return spec.module(config).eval()


def inputs(model: torch.nn.Module, side: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(1)
    lr = torch.rand(1, 3, side, side, generator=generator)
    conditions = {}
    for name, factor in model.condition_scales.items():
        value = torch.rand(1, CHANNELS[name], side * factor, side * factor, generator=generator)
        conditions[name] = value / value.sum(1, keepdim=True) if name == "seg" else value
    return lr, conditions


def paths(model: torch.nn.Module, name: str, folder: Path) -> dict[str, Callable[..., torch.Tensor]]:
    """label -> a callable(lr, **conditions) for every path this machine runs."""
    def eager(lr: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(lr, **cond)

    out: dict[str, Callable[..., torch.Tensor]] = {"eager fp32": eager,
                                                   "fast fp32": prepare(model, precision="fp32")}
    if native_reduced_precision(torch.device("cpu")) == "bf16":
        out["fast bf16"] = prepare(model, precision="bf16")
    for half in (False, True):
        file = folder / f"{name}{'_fp16' if half else ''}.onnx"
        export_onnx(model, file, arch=name, half=half, overwrite=True)
        out[f"onnxruntime {'fp16' if half else 'fp32'}"] = load_onnx(file)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", action="append", choices=[n for n in ARCHS if n != "bicubic"],
                        help="architecture, repeatable (default: " + ", ".join(DEFAULT_MODELS) + ")")
    parser.add_argument("--side", type=int, default=64, help="LR input side (default 64)")
    parser.add_argument("--rounds", type=int, default=3, help="timed runs per path, best kept (default 3)")
    parser.add_argument("--tiny", action="store_true", help="the tests' tiny configs: a smoke run")
    args = parser.parse_args()
    allocator.configure()
    threads = torch.get_num_threads()
    print(f"{threads} threads, input 1x3x{args.side}x{args.side}, best of {args.rounds}; "  # noqa: T201
          f"native bf16: {native_reduced_precision(torch.device('cpu')) == 'bf16'}")
    with tempfile.TemporaryDirectory() as folder:
        for name in args.model or DEFAULT_MODELS:
            model = build(name, args.tiny)
            lr, conditions = inputs(model, args.side)
            reference = None
            for label, run in paths(model, name, Path(folder)).items():
                ms, out = best_ms(run, lr, conditions, args.rounds)
                if reference is None:
                    reference, base = out.float(), ms
                error = float((out.float() - reference).abs().max())
                print(f"{name:10s} {label:17s} {ms:9.1f} ms  {base / ms:5.2f}x  max|diff| {error:.1e}")  # noqa: T201


if __name__ == "__main__":
    main()
