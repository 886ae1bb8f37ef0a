"""Training speed of the SRGAN GAN phase at the paper's generator size, and the data loader's share of a step.

python benchmarks/training.py [--data DIR ...] [--steps 6] [--warmup 2] [--workers 1] [--json]

Each variant (fp32 NCHW with torch's per-parameter Adam loop, then with the engine's fused Adam: fp32 NCHW, fp32
channels-last, bf16 autocast + channels-last) trains the same run from the same
seed with the real `Trainer` through perceptsr.inference.bench_training (the timing loop of `perceptsr bench`'s
training section, which runs smaller configs of SRGAN and ESRGAN): SRGAN's paper generator (SRResNet, 16 BN
blocks, 64 channels), its discriminator, VGG54 content loss, 4 x 64x64 HR patches. The VGG is RANDOMLY
INITIALISED (allow_random_vgg): the same FLOPs as the real one, no download; its loss values mean nothing. The
first step's losses of every variant are printed too: channels-last must not change them, bf16 only slightly.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from perceptsr.inference.bench import machine  # noqa: E402
from perceptsr.inference.bench_training import run_variant  # noqa: E402

VARIANTS = {"fp32 NCHW, Adam loop": ("fp32", False, False), "fp32 NCHW": ("fp32", False, True),
            "fp32 channels-last": ("fp32", True, True), "bf16 channels-last": ("bf16", True, True)}


def config(data: list[str], steps: int, workers: int, precision: str, channels_last: bool, fused: bool) -> dict:
    """The fixed benchmark run: SRGAN's GAN phase only, small patches, random VGG."""
    return {
        "method": "srgan",
        "model": {"arch": "srresnet", "generator": {"scale": 4},
                  "discriminator_arch": "srgan", "discriminator": {"input_size": 64},
                  "allow_random_vgg": True, "content_layers": {"relu5_4": 1.0},
                  "phases": {"pretrain": {"iterations": 0},
                             "gan": {"iterations": steps, "trains": ["generator", "image"]}}},
        "data": {"train": data, "patch_size": 64, "batch_size": 4, "workers": workers},
        "precision": precision, "channels_last": channels_last, "fused_optimizer": fused,
        "log_every": 1, "save_every": 10**9, "val_every": 10**9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", nargs="+", default=[str(ROOT.parent / "shared" / "data" / "T91")])
    parser.add_argument("--steps", type=int, default=6, help="measured steps per variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    conditions = machine()
    results = {}
    for name, (precision, channels_last, fused) in VARIANTS.items():
        run = config(args.data, args.steps + args.warmup + 1, args.workers, precision, channels_last, fused)
        timed = run_variant(run, args.warmup)
        results[name] = {"seconds_per_step": round(timed["seconds_per_step"], 3),
                         "iterations_per_s": round(timed["its_per_s"], 3),
                         "loader_share": round(timed["loader_fraction"], 4), "steps_measured": timed["steps_measured"],
                         "first_step_losses": timed["first_step_losses"]}
    base = results["fp32 NCHW, Adam loop"]["seconds_per_step"]
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
        print(f"{name:22s} {r['iterations_per_s']:6.3f} it/s  x{r['speedup_vs_fp32_nchw']:.2f}  "  # noqa: T201
              f"loader {100 * r['loader_share']:4.1f}% of a step  (median of {r['steps_measured']}); step 1: {losses}")


if __name__ == "__main__":
    main()
