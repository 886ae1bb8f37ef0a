"""Readers for the golden parity fixtures in ../shared/fixtures/parity (see its README §1).

Not a test module: parity tests import it (`from golden import fixture_weights, fixture_io`), which needs
`tests` on the import path (pytest `pythonpath = ["tests"]`, or PYTHONPATH=src:tests).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from torch import Tensor


def fixture_weights(parity_dir: Path, name: str) -> dict[str, Tensor]:
    """The fixture's state_dict in the original module's key order, under the original key names.

    Uses `<name>.safetensors` when stored, else regenerates every tensor from `<name>.recipe.json`
    (numpy RandomState(seed).uniform(low, high, shape) as float32; int64 buffers filled) and checks each
    tensor's sha256 of its little-endian float32 bytes.
    """
    recipe = json.loads((parity_dir / f"{name}.recipe.json").read_text())
    stored = parity_dir / f"{name}.safetensors"
    if stored.exists():
        tensors = load_file(str(stored))
        return {entry["key"]: tensors[entry["key"]] for entry in recipe["tensors"]}
    weights: dict[str, Tensor] = {}
    for entry in recipe["tensors"]:
        shape = tuple(entry["shape"])
        if entry["dtype"] == "int64":
            weights[entry["key"]] = torch.full(shape, int(entry.get("fill", 0)), dtype=torch.int64)
            continue
        array = np.random.RandomState(entry["seed"]).uniform(entry["low"], entry["high"], size=shape)
        array = np.ascontiguousarray(array.astype("<f4"))
        digest = hashlib.sha256(array.tobytes()).hexdigest()
        if digest != entry["sha256_f32le"]:
            raise AssertionError(f"{name}: regenerated {entry['key']} does not match its recipe sha256")
        weights[entry["key"]] = torch.from_numpy(array.astype(np.float32))
    return weights


def fixture_io(parity_dir: Path, name: str) -> dict[str, Tensor]:
    """Inputs and the original module's outputs (`input`, `output`, and any extra conditions/outputs)."""
    return load_file(str(parity_dir / f"{name}.io.safetensors"))


def assert_close_report(actual: Tensor, expected: Tensor, atol: float, what: str, *, rtol: float = 0.0) -> None:
    """assert |actual − expected| <= atol + rtol·|expected| everywhere (torch.testing's rule), reporting the max abs
    diff and where it occurs."""
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    diff = (actual.double() - expected.double()).abs()
    excess = diff - rtol * expected.double().abs()
    worst = float(diff.max())
    if not float(excess.max()) <= atol:
        where = tuple(int(i) for i in np.unravel_index(int(excess.argmax()), tuple(diff.shape)))
        raise AssertionError(
            f"{what}: max abs diff {worst:.3g}, at index {where} {float(diff[where]):.3g} exceeds atol {atol:g} "
            f"+ rtol {rtol:g} x |expected| "
            f"(got {float(actual[where]):.6f}, expected {float(expected[where]):.6f})"
        )
