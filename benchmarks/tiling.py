"""Peak memory and exactness of tiled x4 inference on a large image.

python benchmarks/tiling.py [--size 2000] [--tile 512] [--overlap 16] [--full-check] [--json]

Two models upscale a random size x size image x4 with `tiled_forward`: (a) MATLAB bicubic (resize.imresize
in a tiny module) and (b) a small conv net (3 convs of 32 channels + pixel shuffle). Each runs in a fresh
subprocess so its peak RSS (getrusage ru_maxrss) is its own. The tiled result is compared with an untiled
run of the same model on a central LR crop (with `overlap` pixels of context around it, so the crop's own
borders do not matter), or with --full-check on the whole image (which needs far more memory). Fails (exit
1) when a peak RSS reaches 3 GB or the difference reaches 1/255.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import Tensor, nn

SCALE = 4
RSS_LIMIT = 3 * 10**9
CROP = 400
CASES = ("bicubic", "convnet")


class Bicubic(nn.Module):
    """MATLAB bicubic upscaling as a model (the project's own will live in perceptsr.archs)."""

    def forward(self, lr: Tensor) -> Tensor:
        from perceptsr.data.resize import imresize

        return imresize(lr, SCALE)


class SmallConvNet(nn.Module):
    """3 conv3x3 (32 channels) + pixel shuffle: receptive radius 3 LR pixels."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(),
            nn.Conv2d(channels, 3 * SCALE**2, 3, padding=1), nn.PixelShuffle(SCALE))

    def forward(self, lr: Tensor) -> Tensor:
        return self.body(lr)


def peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def run_case(case: str, size: int, tile: int, overlap: int, full_check: bool) -> dict:
    """Runs in the child process: one tiled upscale, then the exactness check."""
    from perceptsr.inference.tile import _spans, tiled_forward

    torch.set_num_threads(2)
    torch.manual_seed(0)
    model = (Bicubic() if case == "bicubic" else SmallConvNet()).eval()
    lr = torch.rand(1, 3, size, size)
    rss_before = peak_rss()
    start = time.perf_counter()
    sr = tiled_forward(model, lr, scale=SCALE, tile=tile, overlap=overlap)
    seconds = time.perf_counter() - start
    rss_tiled = peak_rss()

    if full_check or size <= CROP:
        top, bottom, context = 0, size, 0
        check = f"untiled on the full {size}x{size} image"
    else:
        top, bottom, context = (size - CROP) // 2, (size - CROP) // 2 + CROP, overlap
        check = f"untiled on the central {CROP}x{CROP} LR crop (+{overlap} px context)"
    region = lr[:, :, top - context:bottom + context, top - context:bottom + context]
    with torch.inference_mode():
        reference = model(region)
    inner = slice(context * SCALE, (context + bottom - top) * SCALE)
    reference = reference[:, :, inner, inner]
    difference = (sr[:, :, top * SCALE:bottom * SCALE, top * SCALE:bottom * SCALE] - reference).abs().max()
    tiles = len(_spans(size, tile, overlap)) ** 2
    return {"case": case, "size": size, "scale": SCALE, "tile": tile, "overlap": overlap, "tiles": tiles,
            "seconds": round(seconds, 2), "rss_before_bytes": rss_before, "rss_tiled_bytes": rss_tiled,
            "rss_end_bytes": peak_rss(), "output_bytes": sr.numel() * 4, "max_abs_diff": float(difference),
            "check": check}


def spawn(case: str, args: argparse.Namespace) -> dict:
    root = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root / "src"),
                                                                    os.environ.get("PYTHONPATH")])))
    command = [sys.executable, __file__, "--case", case, "--size", str(args.size), "--tile", str(args.tile),
               "--overlap", str(args.overlap)] + (["--full-check"] if args.full_check else [])
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{case} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def gigabytes(count: int) -> str:
    return f"{count / 1e9:.2f} GB"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=2000)
    parser.add_argument("--tile", type=int, default=512)
    parser.add_argument("--overlap", type=int, default=16)
    parser.add_argument("--full-check", action="store_true", help="compare with untiled on the whole image")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--case", choices=CASES, help=argparse.SUPPRESS)  # set in the child processes
    args = parser.parse_args()
    if args.case:
        result = run_case(args.case, args.size, args.tile, args.overlap, args.full_check)
        print(json.dumps(result))  # noqa: T201
        return
    results = [spawn(case, args) for case in CASES]
    failed = [r["case"] for r in results if r["rss_tiled_bytes"] >= RSS_LIMIT or r["max_abs_diff"] >= 1 / 255]
    if args.json:
        summary = {"results": results, "rss_limit_bytes": RSS_LIMIT, "failed": failed}
        print(json.dumps(summary, indent=2))  # noqa: T201
    else:
        for r in results:
            print(f"{r['case']:8s} {r['size']}x{r['size']} -> x{r['scale']}, tile {r['tile']} overlap "  # noqa: T201
                  f"{r['overlap']} ({r['tiles']} tiles): {r['seconds']:.1f} s; "
                  f"peak RSS {gigabytes(r['rss_tiled_bytes'])}"
                  f" after the tiled run (output alone {gigabytes(r['output_bytes'])}, before it "
                  f"{gigabytes(r['rss_before_bytes'])}), {gigabytes(r['rss_end_bytes'])} after the check; "
                  f"max |tiled - untiled| = {r['max_abs_diff']:.2e} ({r['check']})")
        verdict = f"ok: every peak RSS < {gigabytes(RSS_LIMIT)}, every difference < 1/255"
        print("FAILED: " + ", ".join(failed) if failed else verdict)  # noqa: T201
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
