"""Shared fixtures and helpers, one of each (`from conftest import ROOT, run_cli, write_pngs, ...`).

`shared` points at ../shared (data, golden fixtures). A user's clone has none: there the tests that need it
skip with the reason; under CI (CI=true) a missing file fails instead, so CI can never pass by skipping.
Other shared test code: tolerance.py (comparing two numerical paths), foreign.py (foreign release layouts),
golden.py (the parity fixtures).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PERCEPTSR_SHARED", ROOT.parent / "shared"))

# The environment of a `perceptsr` subprocess: this checkout's sources, one thread, no user's segmentation prior.
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
ENV.pop("PERCEPTSR_SEG_MODEL", None)

# One thread: the models under test are tiny, and two threads on a busy 2-core machine stall each other badly.
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Every test starts, and leaves, with one intra-op thread, whatever a test before it set."""
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(1)


def need_shared(relative: str) -> Path:
    """Return ../shared/<relative>, or fail (CI) / skip (elsewhere) when it is missing."""
    path = SHARED / relative
    if not path.exists():
        message = f"{path} is missing (the golden data lives in ../shared beside the project)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture
def shared() -> callable:
    """`shared("fixtures/parity")` -> Path, failing under CI and skipping elsewhere when missing."""
    return need_shared


def flat_noisy_images(folder: Path, *, count: int, size: tuple[int, int], seed: int, base: float,
                      noise: float) -> Path:
    """Write `count` PNGs of a random flat colour (0..base) plus uniform noise (0..noise): tiny training sets."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    for i in range(count):
        colour = rng.random((1, 1, 3)) * base
        pixels = colour + rng.random((*size, 3)) * noise
        Image.fromarray(pixels.astype(np.uint8)).save(folder / f"img{i}.png")
    return folder


def run_cli(*args: object, env: dict[str, str] | None = None, timeout: float = 300,
            **kwargs: object) -> subprocess.CompletedProcess:
    """`python -m perceptsr ARGS` in a fresh process with ENV (plus `env`), text output captured."""
    return subprocess.run([sys.executable, "-m", "perceptsr", *map(str, args)], env={**ENV, **(env or {})},
                          capture_output=True, text=True, timeout=timeout, **kwargs)


def write_pngs(folder: Path, sizes: list[tuple[int, int]], *, seed: int = 0, mode: str = "RGB", block: int = 1,
               resample: int | None = None) -> Path:
    """8-bit PNGs im0.png, im1.png, ... of the given (height, width) sizes: uniform noise, or with `block` > 1
    noise at 1/block of the size resized up (`resample`, bicubic by default), smooth enough for finite PSNRs."""
    import numpy as np
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    channels = () if mode == "L" else (3,)
    for i, (h, w) in enumerate(sizes):
        if block == 1:
            image = Image.fromarray(rng.integers(0, 256, (h, w, *channels), dtype=np.uint8), mode)
        else:
            base = rng.integers(0, 256, (h // block + 1, w // block + 1, *channels), dtype=np.uint8)
            image = Image.fromarray(base, mode).resize((w, h), Image.BICUBIC if resample is None else resample)
        image.save(folder / f"im{i}.png")
    return folder


def tiny_release(path: Path, arch: str, scale: int, *, seed: int = 0, weight_scale: float = 1.0) -> Path:
    """A release file of the ARCHS entry's tiny config (torch seed `seed`), weights multiplied by `weight_scale`
    (e.g. 0.05 for an MSRResNet that is ~its bilinear skip: a bicubic-like model)."""
    from perceptsr.archs import ARCHS
    from perceptsr.zoo.release import save_release

    torch.manual_seed(seed)
    spec = ARCHS[arch]
    model = spec.module(spec.tiny(scale))
    if weight_scale != 1.0:
        with torch.no_grad():
            for param in model.parameters():
                param.mul_(weight_scale)
    save_release(path, arch=arch, config=model.config, state_dict=model.state_dict())
    return path


def tiny_srgan(hr_folder: Path, *, pretrain: int = 2, gan: int = 2, **model: object) -> dict:
    """A run config small enough for a test: 8-channel MSRResNet, 32-pixel patches, batch 4, no workers."""
    config = {
        "method": "srgan",
        "model": {
            "arch": "msrresnet",
            "generator": {"scale": 4, "num_feat": 8, "num_block": 1},
            "discriminator_arch": "srgan",
            "discriminator": {"num_feat": 4, "input_size": 32, "dense_features": 8},
            "allow_random_vgg": True,
            "content_layers": {"relu1_2": 1.0},
            "phases": {"pretrain": {"iterations": pretrain},
                       "gan": {"iterations": gan, "trains": ["generator", "image"]}},
        },
        "data": {"train": [str(hr_folder)], "patch_size": 32, "batch_size": 4, "workers": 0},
        "save_every": 2,
        "log_every": 1,
    }
    for key, value in model.items():
        if isinstance(value, dict) and isinstance(config["model"].get(key), dict):
            config["model"][key] = {**config["model"][key], **value}
        else:
            config["model"][key] = value
    return config
