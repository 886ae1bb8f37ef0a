"""PNG compression level: encode time against file size on a photo-like output, to pick upscale's default.

python benchmarks/png_level.py [--size 4000] [--levels 1 3 6] [--rounds 2] [--json]

Writes one size x size photo-like image (`inference.bench.photo_like`, 16 MP at the default size: the x4 output
of a 1000x1000 photo) through `io.images.write_image` at each level, in interleaved rounds (best time of each),
so the ratios between levels hold on a busy machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from perceptsr.inference.bench import machine, photo_like  # noqa: E402
from perceptsr.io.images import write_image  # noqa: E402


def measure(size: int, levels: list[int], rounds: int) -> dict:
    image = photo_like(size, size, seed=0)
    best = dict.fromkeys(levels, float("inf"))
    sizes: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(rounds):
            for level in levels:
                path = Path(folder) / f"level{level}.png"
                start = time.perf_counter()
                write_image(path, image, png_level=level, overwrite=True)
                best[level] = min(best[level], time.perf_counter() - start)
                sizes[level] = path.stat().st_size
    return {str(level): {"seconds": round(best[level], 2), "mb": round(sizes[level] / 1e6, 2)} for level in levels}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=4000)
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    result = {"conditions": machine(), "image": f"{args.size}x{args.size} photo-like",
              "levels": measure(args.size, args.levels, args.rounds)}
    if args.json:
        print(json.dumps(result, indent=2))  # noqa: T201
        return
    print(f"{result['image']}; {result['conditions']['cpu']}, load {result['conditions']['load_average_1min']}")  # noqa: T201
    for level, figures in result["levels"].items():
        print(f"level {level}: {figures['seconds']:6.2f} s  {figures['mb']:7.2f} MB")  # noqa: T201


if __name__ == "__main__":
    main()
