"""BT.601 (MATLAB) colour conversion: golden parity with BasicSR's color_util plus properties."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from safetensors.numpy import load_file

from perceptsr.errors import InputError
from perceptsr.io.color import bgr_to_y_numpy, rgb_to_y, rgb_to_ycbcr, ycbcr_to_rgb

IMAGES = ["rand_37x53", "grad_64x48", "astronaut_60x76"]


def _chw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None]


@pytest.mark.parametrize("name", IMAGES)
def test_matches_basicsr_color_util(shared: Callable[[str], Path], name: str) -> None:
    ref = load_file(shared("fixtures/matlab_resize") / f"{name}.color.safetensors")
    rgb = _chw(ref["input_f32_rgb"])
    for got, key in [
        (rgb_to_ycbcr(rgb), "rgb2ycbcr_pt_f32"),
        (rgb_to_y(rgb), "rgb2ycbcr_pt_f32_yonly"),
        (rgb_to_ycbcr(rgb), None),
        (rgb_to_ycbcr(rgb.double()).float(), None),
    ]:
        expected = torch.from_numpy(ref[key]) if key else _chw(ref["rgb2ycbcr_f32"])
        assert got.shape == expected.shape and got.dtype == torch.float32
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    back = ycbcr_to_rgb(_chw(ref["rgb2ycbcr_f32"]))
    torch.testing.assert_close(back, _chw(ref["ycbcr2rgb_f32_of_rgb2ycbcr_f32"]), rtol=0, atol=1e-6)
    y_only = rgb_to_y(rgb)[0, 0].numpy()
    np.testing.assert_allclose(y_only, ref["rgb2ycbcr_f32_yonly"], atol=1e-6)
    bgr255 = ref["input_uint8_rgb"][..., ::-1].astype(np.float64)
    np.testing.assert_array_equal(bgr_to_y_numpy(bgr255), ref["to_y_channel_of_bgr_uint8"][..., 0])


def test_known_values():
    white, black = torch.ones(3, 1, 1), torch.zeros(3, 1, 1)
    torch.testing.assert_close(
        rgb_to_ycbcr(white).flatten(), torch.tensor([235, 128, 128]) / 255.0, atol=2e-5, rtol=0
    )
    torch.testing.assert_close(
        rgb_to_ycbcr(black).flatten(), torch.tensor([16, 128, 128]) / 255.0, atol=1e-7, rtol=0
    )
    red = torch.tensor([1.0, 0, 0]).view(3, 1, 1)
    torch.testing.assert_close(
        rgb_to_y(red).flatten(), torch.tensor([(16 + 65.481) / 255]), atol=1e-7, rtol=0
    )


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 8), w=st.integers(1, 8), seed=st.integers(0, 2**16), batch=st.booleans())
def test_round_trip_and_ranges(h: int, w: int, seed: int, batch: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    rgb = torch.rand((2, 3, h, w) if batch else (3, h, w), generator=g, dtype=torch.float64)
    ycbcr = rgb_to_ycbcr(rgb)
    assert ycbcr.shape == rgb.shape
    torch.testing.assert_close(ycbcr_to_rgb(ycbcr), rgb, rtol=0, atol=1e-5)
    y = rgb_to_y(rgb)
    assert y.shape[-3] == 1
    torch.testing.assert_close(y, ycbcr[..., :1, :, :], rtol=0, atol=1e-12)
    assert y.min() >= 16 / 255 - 1e-12 and y.max() <= 235 / 255 + 1e-6
    grey = rgb[..., :1, :, :].expand_as(rgb)
    torch.testing.assert_close(
        rgb_to_ycbcr(grey)[..., 1:, :, :], torch.full_like(rgb[..., 1:, :, :], 128 / 255), rtol=0, atol=1e-5
    )


def test_wrong_shapes_raise():
    for bad in (torch.rand(4, 5, 5), torch.rand(5, 5), torch.zeros(3, 4, 4, dtype=torch.uint8)):
        for fn in (rgb_to_ycbcr, rgb_to_y, ycbcr_to_rgb):
            with pytest.raises(InputError):
                fn(bad)
