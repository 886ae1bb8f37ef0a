"""What perceptsr's allocator settings (inference/allocator.py) buy a forward: glibc keeping freed blocks (none
mapped anew), PyTorch's huge pages for large tensors, both (perceptsr's default), neither.

Each setting is read once per process, so every measurement is a fresh child process; the settings alternate,
`--runs` times each, and the medians are printed. Each child times (best of 3, after a warm-up) one forward of
the paper SRResNet x4 and of RRDBNet x4 on a 128x128 input on the fast path in fp32 and bf16 (where native),
and the same SRResNet forward eagerly in fp32 NCHW, and counts the page faults of one forward.

    python benchmarks/allocation.py [--runs 3] [--models srresnet,rrdb]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

SETTINGS = {  # name -> environment
    "neither": {"PERCEPTSR_KEEP_FREED_MEMORY": "0", "THP_MEM_ALLOC_ENABLE": "0"},
    "keep freed": {"PERCEPTSR_KEEP_FREED_MEMORY": "1", "THP_MEM_ALLOC_ENABLE": "0"},
    "huge pages": {"PERCEPTSR_KEEP_FREED_MEMORY": "0", "THP_MEM_ALLOC_ENABLE": "1"},
    "both (default)": {"PERCEPTSR_KEEP_FREED_MEMORY": "1", "THP_MEM_ALLOC_ENABLE": "1"},
}

CHILD = r"""
from perceptsr.inference import allocator
allocator.configure()  # reads the environment this child was given
import json, resource, sys, time, torch
from perceptsr.inference.bench import build_arch, example_input
from perceptsr.inference.fast import native_reduced_precision, prepare

def best(function, rounds=3):
    function()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return min(times) * 1e3

def faults(function):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    function()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

result = {}
for name in sys.argv[1].split(","):
    model = build_arch(name, tiny=False)
    lr, _ = example_input(model, 128)
    if name == "srresnet":
        with torch.no_grad():
            result[f"{name} eager fp32"] = best(lambda: model(lr))
    for precision in ["fp32"] + (["bf16"] if native_reduced_precision(torch.device("cpu")) else []):
        fast = prepare(model, precision=precision)
        result[f"{name} fast {precision}"] = best(lambda: fast(lr))
        result[f"{name} fast {precision} page faults"] = faults(lambda: fast(lr))
print(json.dumps(result))
"""


def child(setting: str, models: str) -> dict[str, float]:
    env = {**os.environ, **SETTINGS[setting]}
    out = subprocess.run([sys.executable, "-c", CHILD, models], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--models", default="srresnet,rrdb")
    args = parser.parse_args()
    results: dict[str, list[dict[str, float]]] = {setting: [] for setting in SETTINGS}
    for _ in range(args.runs):
        for setting in SETTINGS:
            results[setting].append(child(setting, args.models))
    default = "neither"
    print(f"{'median of ' + str(args.runs):32s}" + "".join(f"{s:>24s}" for s in SETTINGS))  # noqa: T201
    for name in results[default][0]:
        medians = {s: statistics.median(r[name] for r in results[s]) for s in SETTINGS}
        faults = name.endswith("faults")
        cells = [f"{m:>24.0f}" if faults else f"{m:>11.1f} ms ({medians[default] / m:4.2f}x)" for m in medians.values()]
        print(f"{name:32s}" + "".join(cells))  # noqa: T201


if __name__ == "__main__":
    main()
