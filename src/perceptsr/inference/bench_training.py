"""Training speed for `perceptsr bench` (and benchmarks/training.py): iterations/s of a GAN-phase step, eager
NCHW fp32 against the fast setting, and the data loader's share of a step.

Each variant trains the same small run from the same seed with the real `Trainer` (engine/train.py) on a folder
of photo-like images made here. fast = the engine's fused Adam with bf16 autocast + channels-last where bf16 is
native on this CPU (fp32 channels-last otherwise); eager = fp32 NCHW with torch's per-parameter Adam loop, as a
plain training loop runs. The VGG of the perceptual losses is RANDOMLY INITIALISED (allow_random_vgg): the same
FLOPs as the real one and no download; a bench is not a training run, its loss values mean nothing.

The loader is wrapped to time every `next()`: a step is the interval between two batch requests (after the
warm-up steps), the loader's share is the time spent waiting for the batch over the step time.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

import torch

WARMUP = 2  # steps before timing (allocations, oneDNN kernel choice)


def small_config(method: str, *, tiny: bool) -> dict:
    """The model part of a small GAN-phase config of `method` (srgan or esrgan); tiny: a smoke-test size (and a VGG
    cut after its second block)."""
    if method == "srgan":
        generator = {"scale": 4, "num_feat": 8, "num_block": 1} if tiny else \
            {"scale": 4, "num_feat": 64, "num_block": 6, "batch_norm": True}
        return {"arch": "srresnet", "generator": generator, "discriminator_arch": "srgan",
                "discriminator": {"num_feat": 8 if tiny else 64, "input_size": 32 if tiny else 64},
                "allow_random_vgg": True, "content_layers": {"relu2_2" if tiny else "relu5_4": 1.0}}
    if method == "esrgan":
        generator = {"scale": 4, "num_feat": 8, "num_block": 1, "num_grow_ch": 4} if tiny else \
            {"scale": 4, "num_feat": 32, "num_block": 3, "num_grow_ch": 16}
        return {"generator": generator, "discriminator": {"num_feat": 8 if tiny else 32, "input_size": 128},
                "allow_random_vgg": True, "perceptual_layers": {"conv2_2" if tiny else "conv5_4": 1.0}}
    raise ValueError(f"no small bench config for {method!r}")


def run_config(method: str, data: list[str], *, steps: int, precision: str, channels_last: bool, tiny: bool,
               workers: int = 1, fused_optimizer: bool = True) -> dict:
    """A whole run: `method`'s GAN phase only, `steps` iterations, small patches, no checkpoints or validation."""
    model = small_config(method, tiny=tiny)
    # ESRGAN's discriminator takes 128x128 only
    patch = 128 if method == "esrgan" else 32 if tiny else 64
    batch = 1 if tiny else 2 if method == "esrgan" else 4
    model["phases"] = {"pretrain": {"iterations": 0}, "gan": {"iterations": steps, "trains": ["generator", "image"]}}
    return {"method": method, "model": model,
            "data": {"train": data, "patch_size": patch, "batch_size": batch, "workers": workers},
            "precision": precision, "channels_last": channels_last, "fused_optimizer": fused_optimizer,
            "log_every": 1, "save_every": 10**9, "val_every": 10**9}


class TimedLoader:
    """Wraps the training DataLoader; records when each batch was requested and how long it took to arrive."""

    def __init__(self, loader: object, records: list[tuple[float, float]]) -> None:
        self.loader, self.records = loader, records

    def __iter__(self) -> TimedLoader:
        self.iterator = iter(self.loader)
        return self

    def __next__(self) -> object:
        start = time.perf_counter()
        batch = next(self.iterator)
        self.records.append((start, time.perf_counter() - start))
        return batch


def run_variant(config: dict, warmup: int = WARMUP) -> dict:
    """Train `config` (a run_config) in a temporary folder; the median step time after `warmup` steps, the
    loader's share of the steps, and the first step's logged losses."""
    import json

    from perceptsr.engine import train as train_module
    from perceptsr.engine.setup import parse_train_config

    records: list[tuple[float, float]] = []
    original = train_module.make_train_loader
    train_module.make_train_loader = lambda *a, **k: TimedLoader(original(*a, **k), records)
    try:
        with tempfile.TemporaryDirectory(prefix="perceptsr-bench-") as folder:
            out = Path(folder) / "run"
            train_module.Trainer(parse_train_config(config), out, progress=False).run()
            first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    finally:
        train_module.make_train_loader = original
    starts = [start for start, _ in records]
    steps = [b - a for a, b in zip(starts, starts[1:], strict=False)][warmup:]
    if not steps:
        raise ValueError(f"too few steps to time: {len(records)} batches with {warmup} warm-up steps")
    waits = [wait for _, wait in records][warmup:warmup + len(steps)]
    step = statistics.median(steps)
    return {"seconds_per_step": step, "its_per_s": 1 / step, "loader_fraction": sum(waits) / sum(steps),
            "steps_measured": len(steps),
            "first_step_losses": {k: v for k, v in first.items() if k.startswith(("g_", "d_"))}}


def make_data(folder: Path, *, count: int, size: int) -> list[str]:
    """`count` photo-like PNGs of size x size in `folder` (training needs HR images, any will do for speed)."""
    from perceptsr.inference.bench import photo_like
    from perceptsr.io.images import write_image

    folder.mkdir(parents=True, exist_ok=True)
    for index in range(count):
        write_image(folder / f"train{index}.png", photo_like(size, size, seed=1000 + index))
    return [str(folder)]


def fast_setting() -> tuple[str, bool]:
    """(precision, channels_last) of the fast variant on this CPU."""
    from perceptsr.inference.fast import native_reduced_precision

    return ("bf16" if native_reduced_precision(torch.device("cpu")) == "bf16" else "fp32"), True


def training_bench(methods: tuple[str, ...] = ("srgan", "esrgan"), *, steps: int = 6, warmup: int = WARMUP,
                   tiny: bool = False, passes: int = 1) -> dict:
    """The bench's `training` section: per method, its/s of eager fp32 NCHW (torch's per-parameter Adam loop, as a
    plain training loop runs) and of the fast setting (the engine's defaults: fused Adam), the speed-up, and the
    loader's share of a fast step. The variants of a method alternate for `passes` passes
    (each keeps its fastest pass), so a change of load on a shared machine hits both; tiny runs load in the main
    process (no worker to start), the others with one loader worker."""
    precision, channels_last = fast_setting()
    variants = {"eager_fp32": ("fp32", False, False), "fast": (precision, channels_last, True)}
    results = {}
    with tempfile.TemporaryDirectory(prefix="perceptsr-bench-data-") as folder:
        data = make_data(Path(folder), count=2 if tiny else 16, size=128 if tiny else 160)
        for method in methods:
            timed: dict[str, dict] = {}
            for _ in range(max(1, passes)):
                for name, (p, cl, fused) in variants.items():
                    run = run_config(method, data, steps=steps + warmup + 1, precision=p, channels_last=cl,
                                     tiny=tiny, workers=0 if tiny else 1, fused_optimizer=fused)
                    result = run_variant(run, warmup)
                    if name not in timed or result["seconds_per_step"] < timed[name]["seconds_per_step"]:
                        timed[name] = result
            results[method] = {"its_per_s": {name: _round(r["its_per_s"]) for name, r in timed.items()},
                               "speedup": _round(timed["eager_fp32"]["seconds_per_step"]
                                                 / timed["fast"]["seconds_per_step"]),
                               "loader_fraction": _round(timed["fast"]["loader_fraction"]),
                               "fast": f"{precision}{' channels-last' if channels_last else ''}",
                               "config": "tiny" if tiny else "small", "steps_measured": timed["fast"]["steps_measured"],
                               "passes": max(1, passes)}
    return results


def _round(value: float) -> float:
    return float(f"{value:.4g}")
