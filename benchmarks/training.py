"""Training speed of the SRGAN GAN phase on a fixed small config, and the data loader's share of a step.

python benchmarks/training.py [--data DIR ...] [--steps 6] [--warmup 2] [--workers 1] [--json]

Each variant (fp32 NCHW, fp32 channels-last, bf16 autocast + channels-last) trains the same run from the same
seed with the real `Trainer` (engine/train.py): SRGAN's paper generator (SRResNet, 16 BN blocks, 64 channels),
its discriminator, VGG54 content loss, 4 x 64x64 HR patches. The VGG is RANDOMLY INITIALISED
(allow_random_vgg): the same FLOPs as the real one, no download; its loss values mean nothing. The loader is
wrapped to time every `next()`: a step is the interval between two batches requests (after `warmup` steps),
the loader's share is the time spent waiting for the batch. The first step's losses of every variant are
printed too: channels-last must not change them, bf16 only slightly.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from perceptsr.engine import train as train_module  # noqa: E402
from perceptsr.engine.setup import parse_train_config  # noqa: E402
from perceptsr.inference.bench import machine  # noqa: E402

VARIANTS = {"fp32 NCHW": ("fp32", False), "fp32 channels-last": ("fp32", True),
            "bf16 channels-last": ("bf16", True)}


def config(data: list[str], steps: int, workers: int, precision: str, channels_last: bool) -> dict:
    """The fixed benchmark run: SRGAN's GAN phase only, small patches, random VGG."""
    return {
        "method": "srgan",
        "model": {"arch": "srresnet", "generator": {"scale": 4},
                  "discriminator_arch": "srgan", "discriminator": {"input_size": 64},
                  "allow_random_vgg": True, "content_layers": {"relu5_4": 1.0},
                  "phases": {"pretrain": {"iterations": 0},
                             "gan": {"iterations": steps, "trains": ["generator", "image"]}}},
        "data": {"train": data, "patch_size": 64, "batch_size": 4, "workers": workers},
        "precision": precision, "channels_last": channels_last,
        "log_every": 1, "save_every": 10**9, "val_every": 10**9,
    }


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


def run_variant(run: dict, warmup: int) -> dict:
    records: list[tuple[float, float]] = []
    original = train_module.make_train_loader
    train_module.make_train_loader = lambda *a, **k: TimedLoader(original(*a, **k), records)
    try:
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "run"
            train_module.Trainer(parse_train_config(run), out, progress=False).run()
            first = json.loads((out / "log.jsonl").read_text().splitlines()[0])
    finally:
        train_module.make_train_loader = original
    starts = [start for start, _ in records]
    steps = [b - a for a, b in zip(starts, starts[1:], strict=False)][warmup:]
    waits = [wait for _, wait in records][warmup:warmup + len(steps)]
    step = statistics.median(steps)
    return {"seconds_per_step": round(step, 3), "iterations_per_s": round(1 / step, 3),
            "loader_share": round(sum(waits) / sum(steps), 4), "steps_measured": len(steps),
            "first_step_losses": {k: v for k, v in first.items() if k.startswith(("g_", "d_"))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=[str(ROOT.parent / "shared" / "data" / "T91")])
    parser.add_argument("--steps", type=int, default=6, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    conditions = machine()
    results = {name: run_variant(config(args.data, args.steps + args.warmup + 1, args.workers, precision, cl),
                                 args.warmup)
               for name, (precision, cl) in VARIANTS.items()}
    base = results["fp32 NCHW"]["seconds_per_step"]
    for result in results.values():
        result["speedup_vs_fp32_nchw"] = round(base / result["seconds_per_step"], 2)
    summary = {"conditions": {**conditions, "load_average_1min_end": machine()["load_average_1min"],
                              "vgg": "random (allow_random_vgg): benchmark only"},
               "config": "SRGAN gan phase: SRResNet 64x16 BN, SRGAN D (64x64 in), VGG19 relu5_4, 4 x 64x64 HR",
               "variants": results}
    if args.json:
        print(json.dumps(summary, indent=2))  # noqa: T201
        return
    c = summary["conditions"]
    print(f"{summary['config']}; VGG is RANDOM (benchmark only)\n"  # noqa: T201
          f"{c['cpu']}, {c['threads']} threads, load {c['load_average_1min']} -> {c['load_average_1min_end']}")
    for name, r in results.items():
        losses = ", ".join(f"{k} {v:.5g}" for k, v in r["first_step_losses"].items())
        print(f"{name:20s} {r['iterations_per_s']:6.3f} it/s  x{r['speedup_vs_fp32_nchw']:.2f}  "  # noqa: T201
              f"loader {100 * r['loader_share']:4.1f}% of a step  (median of {r['steps_measured']}); step 1: {losses}")


if __name__ == "__main__":
    main()
