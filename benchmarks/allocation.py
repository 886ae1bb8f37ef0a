"""Transparent huge pages for large CPU tensors (PyTorch's THP_MEM_ALLOC_ENABLE=1): on vs off.

Fresh multi-MB tensors (every op on an HR feature map makes one) cost page faults; with huge pages a fresh 64 MB
copy took 12 ms instead of 27 here, but on whole forwards the gain went mostly to the eager baseline (3 runs
each: eager fp32 1.10x, fast fp32 1.05x, fast bf16 0.93x), so perceptsr does not set it; users can.

PyTorch reads the setting once per process, so each measurement is a fresh child process; the two settings
alternate, `--runs` times each, and the medians are printed. Each child times (best of 5) a copy of a 64 MB
tensor into a new one (what every op on an HR feature map does) and one forward of the paper SRResNet x4 on a
128x128 input on the fast path in fp32 and bf16 (where native), and the same forward eagerly in fp32 NCHW.

    python benchmarks/allocation.py [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

CHILD = r"""
import json, time, torch
from perceptsr.bench import build_arch, example_input
from perceptsr.speed import native_reduced_precision, prepare

def best(function, rounds=5):
    function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3

big = torch.rand(16 * 2**20)
model = build_arch("srresnet", tiny=False)
lr, _ = example_input(model, 128)
result = {"copy 64 MB": best(lambda: big.clone())}
with torch.no_grad():
    result["srresnet eager fp32"] = best(lambda: model(lr), rounds=3)
for precision in ["fp32"] + (["bf16"] if native_reduced_precision(torch.device("cpu")) else []):
    fast = prepare(model, precision=precision)
    result[f"srresnet fast {precision}"] = best(lambda: fast(lr), rounds=3)
print(json.dumps(result))
"""


def child(enabled: bool) -> dict[str, float]:
    env = {**os.environ, "THP_MEM_ALLOC_ENABLE": "1" if enabled else "0"}
    out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    results: dict[bool, list[dict[str, float]]] = {True: [], False: []}
    for _ in range(args.runs):
        for enabled in (False, True):
            results[enabled].append(child(enabled))
    for name in results[True][0]:
        off, on = (statistics.median(r[name] for r in results[e]) for e in (False, True))
        print(f"{name:22s} THP off {off:8.1f} ms  on {on:8.1f} ms  ({off / on:.2f}x)")  # noqa: T201


if __name__ == "__main__":
    main()
