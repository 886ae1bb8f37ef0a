"""The inference goals of issue 9, checked on this machine: `perceptsr bench` plus the Set5 quality drop.

python benchmarks/inference.py [--models a,b] [--compile] [--quick] [--set5 DIR] [--json]

Runs perceptsr.inference.bench.run_bench (roofline, per-architecture rates and speed-ups, peak RSS, 64-MP tiling) and,
for every bundled model installed, the Y-PSNR of fp32 and bf16 on Set5; then prints each goal with its
measured figure. Exit code 1 when a goal is missed (figures are noisy on a shared machine: the ratios within
one run are what count).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from perceptsr.inference import allocator  # noqa: E402
from perceptsr.inference.bench import format_table, run_bench  # noqa: E402

ROOFLINE_GOAL = 0.8  # fp32 fraction of the fp32 roofline, for srresnet and rrdb
BF16_GOAL = 6.0  # bf16 speed-up over eager fp32 NCHW
DROP_GOAL = 0.05  # dB of Y-PSNR on Set5
RSS_GOAL_MB = 3 * 10**9 / 2**20
TILE_GOAL = 1 / 255


def set5_drops(set5: Path) -> dict[str, dict[str, float]]:
    """fp32 and bf16 Y-PSNR (crop = scale) on Set5 of every bundled model present."""
    from perceptsr.evaluation.evaluate import evaluate
    from perceptsr.inference.fast import prepare
    from perceptsr.zoo.models import BUNDLED, bundled_path, load_model

    out = {}
    for name in BUNDLED:
        if bundled_path(name) is None or not set5.is_dir():
            continue
        model = load_model(name)
        psnr = {p: evaluate(prepare(model, precision=p), set5, scale=model.scale, metrics=("psnr",),
                            progress=False).mean["psnr"] for p in ("fp32", "bf16")}
        out[name] = {**psnr, "drop": psnr["fp32"] - psnr["bf16"]}
    return out


def goals(result: dict, drops: dict[str, dict[str, float]]) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) rows; met is None when the figure could not be measured here."""
    rows: list[tuple[str, str, bool | None]] = []
    models = result["models"]
    for name in ("srresnet", "rrdb"):
        if name in models:
            fraction = models[name]["fp32_roofline_fraction"]
            rows.append((f"{name} fp32 >= {ROOFLINE_GOAL} of roofline", f"{fraction:.2f}", fraction >= ROOFLINE_GOAL))
    for name, r in models.items():
        speedup, ceiling = r["speedup_vs_eager_fp32"]["bf16"], r["bf16_speedup_ceiling"]
        rows.append((f"{name} bf16 >= {BF16_GOAL:.0f}x eager fp32", f"{speedup:.2f}x (ceiling here {ceiling:.2f}x)",
                     speedup >= BF16_GOAL))
    for name, d in drops.items():
        rows.append((f"{name} Set5 Y-PSNR drop < {DROP_GOAL} dB", f"{d['drop']:.4f} dB (fp32 {d['fp32']:.3f})",
                     d["drop"] < DROP_GOAL))
    if not drops:
        rows.append((f"Set5 Y-PSNR drop < {DROP_GOAL} dB", "no bundled model installed", None))
    if "tiling" in result:
        t = result["tiling"]
        rows.append((f"x{t['scale']} of {t['input']} peak RSS < 3 GB", f"{t['peak_rss_mb']:.0f} MB",
                     t["peak_rss_mb"] < RSS_GOAL_MB))
        rows.append(("tiled = untiled within 1/255", f"{t['max_tile_diff']:.2e}", t["max_tile_diff"] < TILE_GOAL))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated architectures (default: all)")
    parser.add_argument("--compile", action="store_true", help="also time the torch.compile paths")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--set5", type=Path, default=ROOT.parent / "shared" / "data" / "Set5")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",")] if args.models else None
    allocator.configure()  # as `perceptsr bench` does
    result = run_bench(quick=args.quick, models=models, compile=args.compile)
    rows = goals(result, set5_drops(args.set5))
    if args.json:
        report = {"bench": result, "goals": [{"goal": g, "measured": m, "met": ok} for g, m, ok in rows]}
        print(json.dumps(report, indent=2))  # noqa: T201
    else:
        print(format_table(result) + "\n\ngoals:")  # noqa: T201
        for goal, measured, met in rows:
            print(f"  [{'ok' if met else '--' if met is None else 'MISSED'}] {goal}: {measured}")  # noqa: T201
    sys.exit(1 if any(met is False for _, _, met in rows) else 0)


if __name__ == "__main__":
    main()
