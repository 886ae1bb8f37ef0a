"""MATLAB bicubic imresize, modcrop and degrade: golden parity with BasicSR plus properties."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file
from tolerance import assert_paths_close

from perceptsr.data.resize import degrade, imresize, modcrop
from perceptsr.errors import InputError

ATOL = 1e-6  # fixtures/README.md §2


def _cases(root: Path) -> Iterator[tuple[str, str, dict, np.ndarray, np.ndarray]]:
    index = json.loads((root / "index.json").read_text())
    for name, info in index["images"].items():
        tensors = load_file(root / f"{name}.safetensors")
        for key, case in info["outputs"].items():
            if "original_raises" not in case:
                yield name, key, case, tensors["input_f32"], tensors[key]


@pytest.mark.parametrize("path", ["numpy", "torch"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_basicsr_imresize(shared: Callable[[str], Path], path: str, dtype: type) -> None:
    worst, count = 0.0, 0
    for name, key, case, image, expected in _cases(shared("fixtures/matlab_resize")):
        x = image.astype(dtype)
        if path == "numpy":
            out = imresize(x, case["scale_arg"], antialiasing=case["antialiasing"])
        else:
            t = torch.from_numpy(x)
            t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t  # (1,3,H,W) colour, (H,W) gray
            out_t = imresize(t, case["scale_arg"], antialiasing=case["antialiasing"])
            assert out_t.dtype == t.dtype
            out = (out_t[0].permute(1, 2, 0) if out_t.ndim == 4 else out_t).numpy()
        assert out.dtype == dtype and out.shape == tuple(case["shape"]), (name, key, out.shape)
        diff = np.abs(out.astype(np.float64) - expected.astype(np.float64))
        where = np.unravel_index(np.argmax(diff), diff.shape)
        assert diff.max() <= ATOL, f"{name} {key}: max |diff| {diff.max():.3g} at {where}"
        worst, count = max(worst, float(diff.max())), count + 1
    assert count == 34 and worst < ATOL  # every stored case where the original did not raise


def _reference_axis(x: np.ndarray, out_len: int, scale: float, antialiasing: bool) -> np.ndarray:
    """Slow direct MATLAB bicubic along axis 0, with numpy's symmetric padding (any pad width)."""
    widen = scale < 1 and antialiasing
    width = 4 / scale if widen else 4.0
    pad = int(math.ceil(width)) + 4
    padded = np.pad(x, [(pad, pad)] + [(0, 0)] * (x.ndim - 1), mode="symmetric")
    out = np.zeros((out_len,) + x.shape[1:])
    for i in range(out_len):
        u = (i + 1) / scale + 0.5 * (1 - 1 / scale)
        taps = np.arange(math.floor(u - width / 2), math.floor(u - width / 2) + math.ceil(width) + 2)
        d = np.abs((u - taps) * (scale if widen else 1.0))
        w = np.where(
            d <= 1, 1.5 * d**3 - 2.5 * d**2 + 1, np.where(d <= 2, -0.5 * d**3 + 2.5 * d**2 - 4 * d + 2, 0)
        )
        w = w / w.sum()
        out[i] = np.tensordot(w, padded[taps - 1 + pad], axes=1)
    return out


@pytest.mark.parametrize(
    ("shape", "scale", "antialiasing"),
    [
        ((64, 48), 0.25, False),
        ((37, 53), 0.125, False),
        ((5, 7), 0.125, True),
        ((1, 1), 3.0, True),
        ((2, 3), 0.5, True),
        ((3, 2), 1 / 3, False),
        ((9, 4), 2.5, True),
    ],
)
def test_cases_where_the_original_raises(shape: tuple[int, int], scale: float, antialiasing: bool) -> None:
    x = np.random.default_rng(0).random(shape)
    out = imresize(x, scale, antialiasing=antialiasing)
    oh, ow = (math.ceil(n * scale) for n in shape)
    expected = _reference_axis(_reference_axis(x, oh, scale, antialiasing).T, ow, scale, antialiasing).T
    np.testing.assert_allclose(out, expected, atol=1e-12)


def test_size_argument_uses_per_axis_scale():
    x = np.random.default_rng(1).random((20, 30))
    out = imresize(x, size=(15, 7))
    expected = _reference_axis(_reference_axis(x, 15, 15 / 20, True).T, 7, 7 / 30, True).T
    np.testing.assert_allclose(out, expected, atol=1e-12)


@pytest.mark.parametrize(
    ("scale", "size"),
    [
        (0, None),
        (-0.5, None),
        (float("nan"), None),
        (float("inf"), None),
        (None, None),
        (0.5, (4, 4)),
        (None, (0, 3)),
        (None, (3,)),
        (True, None),
        (1e-9, None),
    ],
)
def test_invalid_scale_or_size_raises(scale: float | None, size: tuple[int, ...] | None) -> None:
    with pytest.raises(InputError):
        imresize(torch.rand(3, 8, 8), scale, size=size)


def test_invalid_inputs_raise():
    for bad in (torch.rand(8), torch.zeros(8, 8, dtype=torch.uint8), np.zeros((2, 3, 4, 5)), [[0.0]]):
        with pytest.raises(InputError):
            imresize(bad, 2)


def taps(scale: float, antialiasing: bool = True) -> int:
    """Products summed into one output pixel: the cubic kernel's 4 taps per axis, widened by 1/scale when
    downscaling with antialiasing, over the two separable passes (the rounding depth of a resize)."""
    per_axis = math.ceil(4 / scale) + 2 if antialiasing and scale < 1 else 6
    return 2 * per_axis


def test_batch_and_autograd_match_single_images():
    torch.manual_seed(0)
    x = torch.rand(2, 3, 13, 17, dtype=torch.float64)
    batch = imresize(x, 0.37)
    for n in range(2):
        assert_paths_close(batch[n], imresize(x[n], 0.37), dtype=torch.float64, depth=taps(0.37), what="batch")
    leaf = x.clone().requires_grad_(True)
    out = imresize(leaf, 1.7)
    assert_paths_close(out.detach(), imresize(x, 1.7), dtype=torch.float64, depth=taps(1.7), what="autograd")
    out.sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0


_dims = st.integers(min_value=1, max_value=24)
_scales = st.sampled_from([0.1, 0.25, 1 / 3, 0.5, 0.7, 1.0, 1.5, 2.0, 3.0, 4.0])


@settings(max_examples=25, deadline=None)
@given(h=_dims, w=_dims, scale=_scales, aa=st.booleans(), value=st.floats(-2, 2))
def test_keeps_constants_and_shape(h: int, w: int, scale: float, aa: bool, value: float) -> None:
    out = imresize(torch.full((2, h, w), value, dtype=torch.float64), scale, antialiasing=aa)
    assert out.shape == (2, math.ceil(h * scale), math.ceil(w * scale))
    torch.testing.assert_close(out, torch.full_like(out, value), rtol=0, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(
    h=_dims,
    w=_dims,
    scale=_scales,
    aa=st.booleans(),
    a=st.floats(-3, 3),
    b=st.floats(-3, 3),
    seed=st.integers(0, 2**16),
)
def test_is_linear(h: int, w: int, scale: float, aa: bool, a: float, b: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    x, y = (
        torch.rand(3, h, w, generator=g, dtype=torch.float64),
        torch.rand(3, h, w, generator=g, dtype=torch.float64),
    )
    left = imresize(a * x + b * y, scale, antialiasing=aa)
    right = a * imresize(x, scale, antialiasing=aa) + b * imresize(y, scale, antialiasing=aa)
    # the inputs a*x + b*y are of size |a| + |b|: the scale of every rounding on either side
    assert_paths_close(left, right, dtype=torch.float64, depth=taps(scale, aa), min_scale=max(1.0, abs(a) + abs(b)))


@settings(max_examples=20, deadline=None)
@given(h=_dims, w=_dims, scale=_scales, aa=st.booleans(), seed=st.integers(0, 2**16))
def test_float32_close_to_float64_and_torch_equals_numpy(
    h: int, w: int, scale: float, aa: bool, seed: int
) -> None:
    x = np.random.default_rng(seed).random((h, w, 3))
    out64 = imresize(x, scale, antialiasing=aa)
    out32 = imresize(x.astype(np.float32), scale, antialiasing=aa)
    assert out32.dtype == np.float32
    assert_paths_close(out32, out64, dtype=torch.float32, depth=taps(scale, aa), what="float32 vs float64")
    out_t = imresize(torch.from_numpy(x).permute(2, 0, 1), scale, antialiasing=aa).permute(1, 2, 0).numpy()
    assert_paths_close(out_t, out64, dtype=torch.float64, depth=taps(scale, aa), what="torch vs numpy")


def test_modcrop():
    t = torch.arange(2 * 3 * 10 * 7.0).reshape(2, 3, 10, 7)
    assert modcrop(t, 4).shape == (2, 3, 8, 4)
    torch.testing.assert_close(modcrop(t, 4), t[..., :8, :4])
    a = np.arange(10 * 7 * 3).reshape(10, 7, 3)
    np.testing.assert_array_equal(modcrop(a, 3), a[:9, :6])
    np.testing.assert_array_equal(modcrop(a[..., 0], 3), a[:9, :6, 0])
    assert modcrop(t, 1).shape == t.shape
    for bad in (0, -2, 2.0, True):
        with pytest.raises(InputError):
            modcrop(t, bad)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_degrade(scale: int) -> None:
    torch.manual_seed(scale)
    hr = torch.rand(1, 3, 26, 31)
    lr = degrade(hr, scale)
    h, w = 26 // scale * scale, 31 // scale * scale
    assert lr.shape == (1, 3, h // scale, w // scale) and lr.dtype == torch.float32
    levels = lr * 255
    torch.testing.assert_close(levels, levels.round(), rtol=0, atol=1e-4)
    assert lr.min() >= 0 and lr.max() <= 1
    exact = imresize(hr[..., :h, :w].double(), 1 / scale)
    assert (lr.double() - exact.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6
    unrounded = degrade(hr, scale, bit_depth=None)
    torch.testing.assert_close(unrounded.double(), exact, rtol=0, atol=1e-6)
    if scale == 1:
        torch.testing.assert_close(unrounded, hr)


def test_degrade_rejects_bad_input():
    hr = torch.rand(3, 8, 8)
    for bad in (0, -1, 2.5, True, "4"):
        with pytest.raises(InputError):
            degrade(hr, bad)
    with pytest.raises(InputError):
        degrade(torch.rand(3, 3, 8), 4)
    with pytest.raises(InputError):
        degrade(hr, 2, bit_depth=0)


def test_a_cached_plan_made_in_inference_mode_still_serves_autograd() -> None:
    """The weight matrices are cached: the first call may come from inference code (upscale), the next from training."""
    x = torch.rand(1, 3, 11, 13)
    with torch.inference_mode():
        imresize(x, 3)
    y = torch.rand(1, 3, 11, 13, requires_grad=True)
    imresize(y, 3).sum().backward()
    assert y.grad is not None and torch.isfinite(y.grad).all()
