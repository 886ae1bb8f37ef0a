"""Lattice artifacts: synthetic checkerboards and grids show, non-periodic changes do not, SR = HR is exactly 0."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from scipy.ndimage import gaussian_filter

from perceptsr.errors import InputError
from perceptsr.evaluation.evaluate import DEFAULT_METRICS, EVAL_METRICS
from perceptsr.metrics import METRICS, MetricInputs, lattice_artifacts, lattice_score
from perceptsr.metrics.periodic import tile_size

VISIBLE = 3.0  # dB: what a grid of 2/255 must at least give
QUIET = 1.0  # dB: what blur, noise, flips and shifts must stay under (measured: below 0.6)
SUBPIXEL = np.random.default_rng(7).uniform(-1, 1, (4, 4))  # a x4 upsampler's 16 sub-pixel offsets, zero mean
SUBPIXEL = (SUBPIXEL - SUBPIXEL.mean()) / np.abs(SUBPIXEL - SUBPIXEL.mean()).max()


def photo_like(h: int, w: int, seed: int) -> torch.Tensor:
    """(1,3,H,W) on the 8-bit grid: noise with a falling 1/f^1.5 amplitude spectrum, correlated channels; smooth
    like a photo, with no periodic structure of its own."""
    rng = np.random.default_rng(seed)
    f = np.hypot(np.fft.fftfreq(h)[:, None], np.fft.fftfreq(w)[None, :])
    img = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((3, h, w))) * np.maximum(f, 1 / max(h, w)) ** -1.5))
    img = 0.6 * img + 0.4 * img.mean(0)
    img = 0.5 + 0.15 * (img - img.mean()) / img.std()
    return quantise(torch.from_numpy(img)[None])


def quantise(x: torch.Tensor) -> torch.Tensor:
    return torch.round(x.clamp(0, 1) * 255) / 255


def checkerboard(h: int, w: int) -> torch.Tensor:
    """The x2 lattice: (-1)^(x+y)."""
    y, x = np.mgrid[:h, :w]
    return torch.from_numpy((-1.0) ** (x + y))


def grid4(h: int, w: int) -> torch.Tensor:
    """The x4 lattice: the same 4x4 offsets repeated, peak amplitude 1."""
    y, x = np.mgrid[:h, :w]
    return torch.from_numpy(SUBPIXEL[y % 4, x % 4])


@pytest.fixture(scope="module")
def hr() -> torch.Tensor:
    return photo_like(97, 131, seed=0)  # odd, non-square


@pytest.mark.parametrize(("pattern", "scale"), [(checkerboard, 2), (checkerboard, 4), (grid4, 4)])
def test_grows_with_the_amplitude_of_a_lattice(hr: torch.Tensor, pattern: Callable, scale: int) -> None:
    lattice = pattern(*hr.shape[-2:])
    values = [lattice_artifacts(quantise(hr + a / 255 * lattice), hr, scale=scale, crop_border=scale)
              for a in (0, 1, 2, 4, 8)]
    assert values[0] == 0.0  # SR = HR
    assert all(b > a for a, b in zip(values, values[1:], strict=False)), values
    assert values[2] > VISIBLE, values  # 2/255: faint, but visible on a flat region


def test_a_checkerboard_on_a_photo(shared: Callable[[str], Path]) -> None:
    """Set5's bird: HR's own score is small, and a 2/255 checkerboard or x4 grid stands far out of it."""
    rgb = np.asarray(Image.open(shared("data/Set5/bird.png")).convert("RGB"), dtype=np.float64) / 255
    hr = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    h, w = hr.shape[-2:]
    assert 0 <= lattice_score(hr, scale=4, crop_border=4) < VISIBLE  # a photo has a little (1.1 dB here)
    for pattern in (checkerboard, grid4):
        sr = quantise(hr + 2 / 255 * pattern(h, w))
        assert lattice_artifacts(sr, hr, scale=4, crop_border=4) > VISIBLE
        assert lattice_score(sr, scale=4, crop_border=4) > lattice_score(hr, scale=4, crop_border=4) + VISIBLE
    blurred = quantise(torch.from_numpy(gaussian_filter(hr.numpy(), (0, 0, 0.7, 0.7))))
    assert abs(lattice_artifacts(blurred, hr, scale=4, crop_border=4)) < QUIET


def test_blur_noise_flips_and_shifts_stay_small(hr: torch.Tensor) -> None:
    g = torch.Generator().manual_seed(1)
    changed = {
        "blur 0.5": quantise(torch.from_numpy(gaussian_filter(hr.numpy(), (0, 0, 0.5, 0.5)))),
        "blur 1.0": quantise(torch.from_numpy(gaussian_filter(hr.numpy(), (0, 0, 1.0, 1.0)))),
        "noise 2/255": quantise(hr + 2 / 255 * torch.randn(hr.shape, generator=g, dtype=torch.float64)),
        "noise 4/255": quantise(hr + 4 / 255 * torch.randn(hr.shape, generator=g, dtype=torch.float64)),
        "flip": hr.flip(-1),
        "upside down": hr.flip(-2),
    }
    for name, sr in changed.items():
        for scale in (2, 4):
            assert abs(lattice_artifacts(sr, hr, scale=scale, crop_border=scale)) < QUIET, (name, scale)
    shifted = lattice_artifacts(hr[..., 3:, 1:], hr[..., :-3, :-1], scale=4)
    assert abs(shifted) < QUIET
    # a grid measures the same flipped, transposed or shifted along with its HR
    sr = quantise(hr + 3 / 255 * grid4(*hr.shape[-2:]))
    value = lattice_artifacts(sr, hr, scale=4)
    assert value > VISIBLE
    assert lattice_artifacts(sr.transpose(-1, -2), hr.transpose(-1, -2), scale=4) == pytest.approx(value, abs=1e-9)
    assert lattice_artifacts(sr.flip(-1), hr.flip(-1), scale=4) == pytest.approx(value, abs=QUIET)
    assert lattice_artifacts(sr[..., 2:, 5:], hr[..., 2:, 5:], scale=4) == pytest.approx(value, abs=QUIET)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), h=st.integers(64, 110), w=st.integers(64, 110), scale=st.sampled_from([2, 3, 4]),
       amplitude=st.integers(3, 12))
def test_properties(seed: int, h: int, w: int, scale: int, amplitude: int) -> None:
    """Any size: SR = HR is 0, a lattice of the scale shows, the sign follows which image has the lattice."""
    hr = photo_like(h, w, seed)
    if min(h, w) < tile_size(scale):
        with pytest.raises(InputError, match="at least"):
            lattice_artifacts(hr, hr, scale=scale)
        return
    y, x = np.mgrid[:h, :w]
    phase = np.random.default_rng(seed).uniform(-1, 1, (scale, scale))
    lattice = torch.from_numpy(phase[y % scale, x % scale] - phase.mean())
    sr = quantise(hr + amplitude / 255 * lattice / lattice.abs().max())
    assert lattice_artifacts(hr, hr, scale=scale) == 0.0
    forward = lattice_artifacts(sr, hr, scale=scale)
    assert forward > VISIBLE
    assert lattice_artifacts(hr, sr, scale=scale) < 0  # HR measured against a lattice: less periodic than it
    assert math.isfinite(lattice_score(sr, scale=scale)) and lattice_score(sr, scale=scale) >= 0


def test_user_errors_are_one_line_input_errors(hr: torch.Tensor) -> None:
    with pytest.raises(InputError, match="scale of 2 or more"):
        lattice_artifacts(hr, hr, scale=1)
    with pytest.raises(InputError, match="differ in shape"):
        lattice_artifacts(hr, hr[..., 1:], scale=2)
    small = hr[..., :70, :]
    with pytest.raises(InputError, match="at least 64x64 pixels after the border crop, got 123x62"):
        lattice_artifacts(small, small, scale=4, crop_border=4)
    assert lattice_artifacts(small, small, scale=4, crop_border=3) == 0.0
    flat = torch.full((1, 3, 70, 70), 0.5)
    assert lattice_score(flat, scale=2) == 0.0 and lattice_artifacts(flat, flat, scale=2) == 0.0


def test_in_the_metrics_table_and_in_eval(hr: torch.Tensor) -> None:
    spec = METRICS["lattice"]
    assert spec.needs == ("hr",) and not spec.higher_is_better and spec.column(True) == "Lattice"
    assert "x4 sampling lattice" in spec.describe(scale=4, crop_border=4, y_channel=True)
    sr = quantise(hr + 2 / 255 * checkerboard(*hr.shape[-2:]))
    assert spec.compute(MetricInputs(sr=sr, hr=hr, scale=2, crop_border=2)) == lattice_artifacts(
        sr, hr, scale=2, crop_border=2)
    assert "lattice" in EVAL_METRICS and "lattice" not in DEFAULT_METRICS  # report/sweep columns stay as they were


def test_metrics_command_prints_the_column(hr: torch.Tensor, tmp_path: Path) -> None:
    (tmp_path / "gt").mkdir()
    (tmp_path / "sr").mkdir()
    pixels = hr[0].permute(1, 2, 0).mul(255).round().byte().numpy()[:96, :128]
    lattice = (2 * checkerboard(96, 128)[..., None].numpy()).astype(np.int16)
    Image.fromarray(pixels).save(tmp_path / "gt" / "im0.png")
    Image.fromarray(np.clip(pixels + lattice, 0, 255).astype(np.uint8)).save(tmp_path / "sr" / "im0.png")
    result = run_cli("metrics", "--gt", tmp_path / "gt", "--sr", tmp_path / "sr", "--scale", "4", "--metrics",
                     "psnr,lattice")
    assert result.returncode == 0, result.stderr
    header, row = result.stdout.splitlines()[:2]
    assert header.split()[1:3] == ["psnr", "lattice"]
    assert float(row.split()[2]) > VISIBLE
    refused = run_cli("metrics", "--gt", tmp_path / "gt", "--sr", tmp_path / "sr", "--metrics", "lattice")
    assert refused.returncode == 2 and "lattice needs --scale" in refused.stderr
