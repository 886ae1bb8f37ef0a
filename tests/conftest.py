"""Shared fixtures.

`shared` points at ../shared (data, golden fixtures). A user's clone has none: there the tests that need it
skip with the reason; under CI (CI=true) a missing file fails instead, so CI can never pass by skipping.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("PERCEPTSR_SHARED", ROOT.parent / "shared"))

# One thread: the models under test are tiny, and two threads on a busy 2-core machine stall each other badly.
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
