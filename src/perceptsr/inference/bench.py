"""`perceptsr bench`: inference speed against the machine's own limit, and memory, measured in one run.

Everything is timed in one process, in interleaved rounds (best of each), so ratios hold on a busy machine.
Per architecture of `archs.ARCHS` (parameter-free ones like bicubic are skipped), at its default config:
- the roofline, a large channels-last 3x3 conv 64->64 in fp32 and bf16, timed in the same rounds as the
  model (the fraction compares two rates measured under the same load; the reported roofline is the best);
- FLOPs per output megapixel (torch.utils.flop_counter); GFLOP/s of the best fp32 path, its roofline fraction;
- each inference path's speed-up over plain eager fp32 NCHW (no_grad, as the reference toolboxes run), and
  its ceiling for bf16: the speed-up of a bf16 forward that ran all its FLOPs at the bf16 roofline. How high
  that is depends on the CPU (roofline bf16 614-1,550 vs fp32 194-233 GFLOP/s on a 2-core AMX Xeon, 985-1,014 vs
  498-508 on a 2-core AVX512-BF16 EPYC).
Input size: the largest of `sides` whose eager forward is expected within the time budget (an RRDB at
128x128 takes minutes on 2 busy cores), so big models fall back to smaller inputs; the size used is reported.
Peak memory (VmHWM of a fresh interpreter) comes from child processes started after all timing: one per model (one
forward at precision auto), and the tiling case (x4 of a 2000x2000 input with the default model at precision auto
and the tile `perceptsr upscale` picks by default, as a user runs it; `max_tile_diff` compares it with an untiled
run on a central crop, as benchmarks/tiling.py does). End to end (`end_to_end`): `perceptsr upscale` of a folder of
photo-like images with the default model at precision auto, against the forward time of the same output pixels at
one tile's rate, timed in the same run. Training (`training`, perceptsr.inference.bench_training): its/s of SRGAN
and ESRGAN GAN-phase steps on small configs, eager NCHW fp32 against bf16 + channels-last, and the loader's share of
a step. `quick=True` uses tiny configs and small inputs (a smoke test of the same code).
"""

from __future__ import annotations

import copy
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from torch.nn import functional as F  # noqa: N812
from torch.utils.flop_counter import FlopCounterMode

import perceptsr
from perceptsr.errors import InputError
from perceptsr.inference.fast import bf16_supported, native_reduced_precision, prepare


@dataclass(frozen=True)
class Settings:
    roofline_size: int  # spatial side of the roofline conv's input
    sides: tuple[int, ...]  # LR input sides to try, largest first
    budget_s: float  # longest expected eager forward
    rounds: int  # timing rounds (best of)
    tiling_size: int
    tiling_tile: int | None  # LR pixels; None: upscale's own choice (tile_plan: the speed cap within free memory)
    tiling_overlap: int  # LR pixels (the inference default for real models)
    tiny: bool  # tiny arch configs (spec.tiny) instead of the defaults
    e2e_size: int  # side of the end-to-end images (LR)
    e2e_tile: int | None  # None: upscale's own choice
    e2e_overlap: int | None  # None: upscale's default
    train_steps: int  # measured training steps per variant (after TRAIN_WARMUP)


FULL = Settings(roofline_size=256, sides=(128, 96, 64, 48, 32, 24, 16), budget_s=4.0, rounds=3, tiling_size=2000,
                tiling_tile=None, tiling_overlap=32, tiny=False, e2e_size=1000, e2e_tile=None, e2e_overlap=None,
                train_steps=4)
QUICK = Settings(roofline_size=48, sides=(16,), budget_s=1.0, rounds=1, tiling_size=128, tiling_tile=96,
                 tiling_overlap=16, tiny=True, e2e_size=40, e2e_tile=24, e2e_overlap=4, train_steps=2)
E2E_IMAGES = 8
CROP = 400  # LR side of the untiled reference crop in the tiling check
# The roofline conv runs this many times back to back per timing: a lone bf16 call right after a model's forward
# starts cold (AMX state, caches) and times slower than calls in a row.
ROOFLINE_REPEAT = 4


def best_time(functions: dict[str, Callable[[], object]], rounds: int) -> dict[str, float]:
    """Best wall time (s) of each function over `rounds` interleaved rounds, after one warm-up call each."""
    for function in functions.values():
        function()
    best = dict.fromkeys(functions, float("inf"))
    for _ in range(rounds):
        for name, function in functions.items():
            start = time.perf_counter()
            function()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def bench_precisions() -> tuple[str, ...]:
    """The precisions the bench times: bf16 only where this CPU runs bf16 convolutions (not on AVX2-only CPUs)."""
    return ("fp32", "bf16") if bf16_supported(torch.device("cpu")) else ("fp32",)


def roofline_convs(size: int) -> tuple[int, dict[str, Callable[[], None]]]:
    """FLOPs and the calls of the roofline: ROOFLINE_REPEAT channels-last 3x3 convs 64->64 on 1x64xsizexsize,
    in each of bench_precisions()."""
    generator = torch.Generator().manual_seed(0)
    x = torch.rand(1, 64, size, size, generator=generator).contiguous(memory_format=torch.channels_last)
    w = (torch.randn(64, 64, 3, 3, generator=generator) * 0.05).contiguous(memory_format=torch.channels_last)
    b = torch.zeros(64)
    tensors = {"fp32": (x, w, b), "bf16": (x.bfloat16(), w.bfloat16(), b.bfloat16())}

    def convs(x: Tensor, w: Tensor, b: Tensor) -> None:
        with torch.inference_mode():
            for _ in range(ROOFLINE_REPEAT):
                F.conv2d(x, w, b, padding=1)

    return ROOFLINE_REPEAT * 2 * 64 * 64 * 9 * size * size, {f"roofline {p}": (lambda t=tensors[p]: convs(*t))
                                                             for p in bench_precisions()}


def build_arch(name: str, *, tiny: bool) -> nn.Module:
    from perceptsr.archs import ARCHS

    spec = ARCHS[name]
    config = spec.config()
    torch.manual_seed(0)
    return spec.module(spec.tiny(config.scale) if tiny else config).eval()


def example_input(model: nn.Module, side: int) -> tuple[Tensor, dict[str, Tensor]]:
    """A random 1x3xside x side LR and random condition maps (probabilities over channels when C > 1)."""
    generator = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, side, side, generator=generator)
    channels = getattr(model, "condition_channels", {})
    conditions = {}
    for name, factor in getattr(model, "condition_scales", {}).items():
        value = torch.rand(1, channels.get(name, 1), side * factor, side * factor, generator=generator)
        conditions[name] = value / value.sum(1, keepdim=True) if value.shape[1] > 1 else value
    return lr, conditions


def count_flops(model: nn.Module, side: int) -> int:
    lr, conditions = example_input(model, side)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(lr, **conditions)
    return counter.get_total_flops()


def pick_side(model: nn.Module, settings: Settings, eager_gflops: float) -> int:
    """The largest side whose eager forward should take <= budget_s, from FLOPs counted at the smallest side."""
    smallest = settings.sides[-1]
    per_pixel = count_flops(model, smallest) / smallest**2
    return next((s for s in settings.sides if per_pixel * s * s / (eager_gflops * 1e9) <= settings.budget_s),
                smallest)


def bench_model(name: str, settings: Settings, *, compile: bool) -> dict:
    """Times of every inference path of one architecture and of the roofline conv, in interleaved rounds (so the
    fraction of the roofline compares two rates measured under the same load); FLOPs and rates."""
    roof_flops, roof_calls = roofline_convs(settings.roofline_size)
    roof_times = best_time(roof_calls, settings.rounds)
    eager = build_arch(name, tiny=settings.tiny)
    side = pick_side(eager, settings, 0.4 * roof_flops / roof_times["roofline fp32"] / 1e9)  # eager NCHW: ~0.4
    lr, conditions = example_input(eager, side)
    flops = count_flops(eager, side)
    kinds = bench_precisions()
    paths: dict[str, nn.Module] = {p: prepare(copy.deepcopy(eager), precision=p) for p in kinds}
    if compile:
        paths.update({f"{p}+compile": prepare(copy.deepcopy(eager), precision=p, compile=True) for p in kinds})

    def run_eager() -> Tensor:
        with torch.no_grad():
            return eager(lr, **conditions)

    functions = {"eager": run_eager, **{k: (lambda m=m: m(lr, **conditions)) for k, m in paths.items()}}
    times = best_time({**functions, **roof_calls}, settings.rounds)
    roof = {p: roof_flops / times[f"roofline {p}"] / 1e9 for p in kinds}
    best = {p: min(t for k, t in times.items() if k.startswith(p)) for p in kinds}
    bf16 = "bf16" in kinds  # else its figures are null: this CPU has no bf16 convolutions
    out_pixels = side * side * eager.scale**2
    fp32_gflops = flops / best["fp32"] / 1e9
    return {"fp32_gflops": _round(fp32_gflops),
            "fp32_roofline_fraction": _round(fp32_gflops / roof["fp32"]),
            "roofline_gflops": {p: _round(roof[p]) if p in roof else None for p in ("fp32", "bf16")},
            "speedup_vs_eager_fp32": {p: _round(times["eager"] / best[p]) if p in best else None
                                      for p in ("fp32", "bf16")},
            "peak_rss_mb": None,  # filled in from a child process
            "config": "tiny" if settings.tiny else "default", "input": f"{side}x{side}",
            "gflop_per_output_mp": _round(flops / out_pixels * 1e6 / 1e9),
            "bf16_gflops": _round(flops / best["bf16"] / 1e9) if bf16 else None,
            "bf16_roofline_fraction": _round(flops / best["bf16"] / 1e9 / roof["bf16"]) if bf16 else None,
            # the speed-up bf16 would have at the full bf16 roofline: no bf16 path can beat it on this machine
            "bf16_speedup_ceiling": _round(times["eager"] * roof["bf16"] * 1e9 / flops) if bf16 else None,
            "ms": {k: _round(t * 1e3) for k, t in times.items()}}


def peak_rss_mb() -> float:
    """This process's peak RSS in MB: VmHWM (Linux), else ru_maxrss.

    Not ru_maxrss on Linux: it survives exec, so a child would report at least its parent's RSS at the fork.
    """
    status = Path("/proc/self/status")
    for line in status.read_text().splitlines() if status.is_file() else []:
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    scale = 1 if sys.platform != "darwin" else 1024  # KiB on Linux, bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / scale


def child_model(arch: str, side: int, tiny: bool) -> dict:
    """In a fresh process: peak RSS of one forward of `arch` through the precision-auto fast path."""
    model = build_arch(arch, tiny=tiny)
    lr, conditions = example_input(model, side)
    before = peak_rss_mb()
    fast = prepare(model, precision="auto")
    fast(lr, **conditions)
    return {"peak_rss_mb": round(peak_rss_mb(), 1), "rss_before_forward_mb": round(before, 1),
            "auto_precision": fast.precision}


def tiling_model(tiny: bool) -> tuple[str, nn.Module]:
    """The default model (bundled) or, when this install has none, a fresh MSRResNet (weights do not change the
    memory; they make max_tile_diff a check of the layout only)."""
    from perceptsr.zoo.models import default_model, load_model

    name = default_model()
    if name != "bicubic" and not tiny:
        return name, load_model(name)
    return f"msrresnet ({'tiny' if tiny else 'default'} config, random weights)", build_arch("msrresnet", tiny=tiny)


def child_tiling(size: int, tile: int | None, overlap: int, tiny: bool) -> dict:
    """In a fresh process: x4 of a size x size random image, tiled (`tile` None: as upscale tiles by default), at
    precision auto."""
    from perceptsr.inference.upscale import tile_plan, upscale_tensor

    label, model = tiling_model(tiny)
    fast = prepare(model, precision="auto")
    if tile is None:
        tile = tile_plan(fast, size, size, tile=None, overlap=overlap)[0]
    lr = torch.rand(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    start = time.perf_counter()
    sr = upscale_tensor(fast, lr, tile=tile, overlap=overlap, precision="auto")
    seconds, peak = time.perf_counter() - start, peak_rss_mb()
    crop, context = min(CROP, size), overlap if size > CROP else 0
    top = (size - crop) // 2
    region = lr[:, :, max(0, top - context):top + crop + context, max(0, top - context):top + crop + context]
    reference = fast(region)
    s, inner = model.scale, slice(context * model.scale, (context + crop) * model.scale)
    tiled = sr[:, :, top * s:(top + crop) * s, top * s:(top + crop) * s]
    difference = (tiled.clamp(0, 1) - reference[:, :, inner, inner].clamp(0, 1)).abs().max()
    return {"input": f"{size}x{size}", "scale": model.scale, "peak_rss_mb": round(peak, 1),
            "max_tile_diff": float(difference), "model": label, "precision": fast.precision, "tile": tile,
            "overlap": overlap, "seconds": round(seconds, 1), "output_mb": round(sr.numel() * 4 / 2**20, 1),
            "check": f"untiled on the central {crop}x{crop} LR crop (+{context} px context)"}


def photo_like(height: int, width: int, seed: int) -> Tensor:
    """A synthetic photo (1,3,h,w) in [0,1]: smooth colour gradients, mid-scale shapes and fine texture noise, so
    PNG coding and the model see photo-like statistics rather than pure noise (which no codec compresses)."""
    generator = torch.Generator().manual_seed(seed)

    def field(cells: int) -> Tensor:
        coarse = torch.rand(1, 3, max(2, height // cells), max(2, width // cells), generator=generator)
        return F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=False)

    texture = torch.randn(1, 1, height, width, generator=generator) * torch.rand(1, 3, 1, 1, generator=generator)
    return (0.65 * field(256) + 0.25 * field(24) + 0.1 * field(4) + 0.02 * texture).clamp(0, 1)


def end_to_end(settings: Settings, *, model_name: str | None = None) -> dict:
    """`perceptsr upscale` (the command's function, as the CLI calls it) of a folder of E2E_IMAGES photo-like PNGs
    with the default model at precision auto, against the forward time of the same output pixels at the per-tile
    rate of that same run: every forward call of the command is timed, and the rate is that of the median
    full-size tile forward, so it saw the load the run saw (on a shared machine the best tile is an outlier of
    quiet moments; the fraction at the best tile is reported too). `in_forward_fraction`: the share of the wall
    time spent inside forward calls, i.e. what decoding, encoding and tiling around them cost."""
    import statistics
    import tempfile

    from perceptsr.cli import commands
    from perceptsr.conditions import parse_model_spec
    from perceptsr.inference.upscale import DEFAULT_OVERLAP, RunOptions
    from perceptsr.io.images import write_image
    from perceptsr.zoo.models import default_model

    name = model_name or default_model()
    size = settings.e2e_size
    run = RunOptions(precision="auto", tile=settings.e2e_tile, tile_overlap=settings.e2e_overlap or DEFAULT_OVERLAP)
    calls: list[tuple[tuple[int, ...], float]] = []  # (output shape, seconds) of every forward
    prepared: list[nn.Module] = []
    load = commands.load_prepared

    def timed_load(*args: object, **kwargs: object) -> tuple[nn.Module, object]:
        model, device = load(*args, **kwargs)
        call = model._call

        def timed_call(lr: Tensor, conditions: dict, precision: str) -> Tensor:
            start = time.perf_counter()
            out = call(lr, conditions, precision)
            calls.append((tuple(out.shape), time.perf_counter() - start))
            return out

        model._call = timed_call
        prepared.append(model)
        return model, device

    with tempfile.TemporaryDirectory(prefix="perceptsr-bench-") as folder:
        inputs, outputs = Path(folder) / "in", Path(folder) / "out"
        inputs.mkdir()
        for index in range(E2E_IMAGES):
            write_image(inputs / f"photo{index}.png", photo_like(size, size, seed=index))
        commands.load_prepared = timed_load
        try:
            start = time.perf_counter()
            commands.cmd_upscale(inputs=[inputs], output=outputs, model=parse_model_spec(name), scale=4, run=run,
                                 max_pixels=10**9, quiet=True)
            seconds = time.perf_counter() - start
        finally:
            commands.load_prepared = load
        written = len(list(outputs.glob("*.png")))  # the folder also holds manifest.jsonl
    shape = max((shape for shape, _ in calls), key=lambda s: s[0] * s[2] * s[3])  # the full-size tile batches
    tile_times = [t for s, t in calls if s == shape]
    tile_mp = shape[0] * shape[2] * shape[3] / 1e6
    rate, best_rate = tile_mp / statistics.median(tile_times), tile_mp / min(tile_times)
    scale = prepared[0].scale
    megapixels = E2E_IMAGES * size * size * scale**2 / 1e6
    forward = megapixels / rate
    return {"images": written, "megapixels_out": _round(megapixels), "seconds": _round(seconds),
            "images_per_s": _round(written / seconds), "forward_seconds": _round(forward),
            "fraction_of_forward": _round(forward / seconds),
            "fraction_of_forward_at_best_tile": _round(megapixels / best_rate / seconds),
            "in_forward_fraction": _round(sum(t for _, t in calls) / seconds),
            "model": name, "precision": prepared[0].precision, "input": f"{size}x{size}",
            "tile": shape[2] // scale, "tiles_per_forward": shape[0], "forwards": len(calls),
            "overlap": run.tile_overlap, "tile_rate_mp_per_s": _round(rate),
            "best_tile_rate_mp_per_s": _round(best_rate)}


def spawn(jobs: list[dict]) -> list[dict]:
    """Run child jobs (`python -m perceptsr.inference.bench JSON`) side by side; their JSON results, in order.

    They start after all timing is done (so they disturb none of it); each one's peak RSS is its own.
    """
    source = str(Path(perceptsr.__file__).resolve().parents[1])  # the children import this same perceptsr
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])))
    children = [subprocess.Popen([sys.executable, "-m", "perceptsr.inference.bench",
                                  json.dumps({**job, "threads": torch.get_num_threads()})],
                                 env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for job in jobs]
    results = []
    for job, child in zip(jobs, children, strict=True):
        stdout, stderr = child.communicate()
        if child.returncode != 0:
            raise RuntimeError(f"bench child {job} failed:\n{stderr[-2000:]}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def machine() -> dict:
    """The conditions of this run (a busy machine lowers absolute numbers; ratios are what compare)."""
    cpu = next((line.split(":", 1)[1].strip() for line in _cpuinfo() if line.startswith("model name")),
               platform.processor())
    return {"cpu": cpu, "threads": torch.get_num_threads(), "load_average_1min": round(os.getloadavg()[0], 2),
            "torch": torch.__version__, "native_reduced_precision": native_reduced_precision(torch.device("cpu"))}


def _cpuinfo() -> list[str]:
    try:
        with open("/proc/cpuinfo") as handle:
            return handle.read().splitlines()
    except OSError:
        return []


def run_bench(*, quick: bool = False, models: list[str] | None = None, compile: bool = False,
              tiling: bool = True, end_to_end_run: bool = True, training: bool = True) -> dict:
    """The whole benchmark as the `--json` contract (plus extra descriptive keys)."""
    from perceptsr.archs import ARCHS

    settings = QUICK if quick else FULL
    names = models or [n for n in ARCHS if any(True for _ in build_arch(n, tiny=True).parameters())]
    unknown = [n for n in names if n not in ARCHS]
    if unknown:
        raise InputError(f"unknown architecture {unknown[0]!r}; known: {', '.join(ARCHS)}")
    conditions = {**machine(), "quick": quick, "compile": compile}
    results = {name: bench_model(name, settings, compile=compile) for name in names}
    roof = {p: max((r["roofline_gflops"][p] or 0.0 for r in results.values()), default=0.0) or None
            for p in ("fp32", "bf16")}
    sections: dict[str, dict] = {}
    if end_to_end_run:
        sections["end_to_end"] = end_to_end(settings)
    if training:
        from perceptsr.inference.bench_training import training_bench

        sections["training"] = training_bench(steps=settings.train_steps, warmup=1 if settings.tiny else 2,
                                              tiny=settings.tiny, passes=1 if settings.tiny else 2)
        conditions["training_note"] = (
            "training: random VGG weights (allow_random_vgg), a speed bench, not a training run; fast = the engine's "
            "fused Adam with bf16 autocast + channels-last where bf16 is native; eager = fp32 NCHW with torch's "
            "per-parameter Adam loop")
    conditions["load_average_1min_end"] = round(os.getloadavg()[0], 2)
    jobs = [{"kind": "model", "arch": name, "side": int(r["input"].split("x")[0]), "tiny": settings.tiny}
            for name, r in results.items()]
    if tiling:
        jobs.append({"kind": "tiling", "size": settings.tiling_size, "tile": settings.tiling_tile,
                     "overlap": settings.tiling_overlap, "tiny": settings.tiny})
    memory = spawn(jobs)
    for result, child in zip(results.values(), memory[:len(results)], strict=True):
        result.update(child)
    output = {"roofline_gflops": {k: None if v is None else _round(v) for k, v in roof.items()}, "models": results,
              "conditions": conditions, **sections}
    if tiling:
        output["tiling"] = memory[-1]
    return output


def _round(value: float) -> float:
    """Four significant digits: JSON stays readable and tiny quick-run rates do not round to 0."""
    return float(f"{value:.4g}")


def _num(value: float | None, spec: str) -> str:
    """A figure in `spec`, or "-" right-aligned to its width where this machine has none (bf16 on AVX2)."""
    return format(value, spec) if value is not None else "-".rjust(int(spec.split(".")[0] or 0))


def format_table(result: dict) -> str:
    """The human-readable form of a run_bench result."""
    roof, c = result["roofline_gflops"], result["conditions"]
    lines = [f"{c['cpu']}, {c['threads']} threads, load {c['load_average_1min']} -> {c['load_average_1min_end']}"
             f"{' (quick: tiny configs)' if c['quick'] else ''}",
             f"roofline (channels-last 3x3 conv 64->64): fp32 {roof['fp32']:.0f} GFLOP/s, "
             f"bf16 {_num(roof['bf16'], '.0f')}",
             f"{'arch':10s} {'input':>8s} {'GFLOP/MP':>9s} {'fp32 GF/s':>9s} {'of roof':>7s} "
             f"{'x fp32':>7s} {'x bf16':>7s} {'(max)':>6s} {'RSS MB':>7s}  times (ms)"]
    for name, r in result["models"].items():
        speed = r["speedup_vs_eager_fp32"]
        times = ", ".join(f"{k} {v:.0f}" for k, v in r["ms"].items())
        lines.append(f"{name:10s} {r['input']:>8s} {r['gflop_per_output_mp']:9.1f} {r['fp32_gflops']:9.1f} "
                     f"{r['fp32_roofline_fraction']:7.2f} {speed['fp32']:7.2f} {_num(speed['bf16'], '7.2f')} "
                     f"{_num(r['bf16_speedup_ceiling'], '6.2f')} {r['peak_rss_mb']:7.0f}  {times}")
    if "tiling" in result:
        t = result["tiling"]
        lines.append(f"tiling: x{t['scale']} of {t['input']} ({t['model']}, {t['precision']}, tile {t['tile']}): "
                     f"peak RSS {t['peak_rss_mb']:.0f} MB (output alone {t['output_mb']:.0f} MB), "
                     f"max |tiled - untiled| {t['max_tile_diff']:.2e} in {t['seconds']:.0f} s")
    if "end_to_end" in result:
        e = result["end_to_end"]
        lines.append(f"end to end: upscale of {e['images']} x {e['input']} ({e['model']}, {e['precision']}, tile "
                     f"{e['tile']}): {e['seconds']:.1f} s, {e['images_per_s']:.3f} img/s, forward at the tile rate "
                     f"{e['forward_seconds']:.1f} s = {e['fraction_of_forward']:.2f} of the wall time")
    for method, r in result.get("training", {}).items():
        its = r["its_per_s"]
        lines.append(f"training {method} ({r['config']}, random VGG): eager fp32 {its['eager_fp32']:.3f} it/s, "
                     f"{r['fast']} {its['fast']:.3f} it/s = x{r['speedup']:.2f}; loader "
                     f"{100 * r['loader_fraction']:.1f}% of a step")
    return "\n".join(lines)


def _child_main(job: dict) -> dict:
    torch.set_num_threads(int(job.get("threads", torch.get_num_threads())))
    if job["kind"] == "model":
        return child_model(job["arch"], job["side"], job["tiny"])
    return child_tiling(job["size"], job["tile"], job["overlap"], job["tiny"])


if __name__ == "__main__":
    from perceptsr.inference import allocator

    allocator.configure()  # as in the parent (`perceptsr bench`), before this process makes a tensor
    print(json.dumps(_child_main(json.loads(sys.argv[1]))))  # noqa: T201
