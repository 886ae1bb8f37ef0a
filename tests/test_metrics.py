"""PSNR / SSIM / NIQE: golden parity with BasicSR's numpy metrics plus properties."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from perceptsr.data.resize import degrade
from perceptsr.errors import InputError
from perceptsr.metrics import METRICS, MetricInputs, MetricSpec, check_metrics, lr_psnr, niqe, psnr, ssim

PSNR_SSIM_ABS = 1e-9  # fixtures/README.md §3
NIQE_ABS = 1e-3


def _png(path: Path) -> torch.Tensor:
    """A PNG as the project reads it: RGB uint8 / 255, (3, H, W) float32."""
    return torch.from_numpy(np.array(Image.open(path).convert("RGB"))).permute(2, 0, 1).float() / 255


@pytest.fixture
def metric_fixtures(shared: Callable[[str], Path]) -> tuple[Path, dict]:
    root = shared("fixtures/metrics")
    return root, json.loads((root / "results.json").read_text())


def test_psnr_ssim_match_basicsr(metric_fixtures: tuple[Path, dict]) -> None:
    root, results = metric_fixtures
    checked = 0
    for name, pair in results["pairs"].items():
        gt, dist = _png(root / pair["gt"]), _png(root / pair["dist"])
        for crop in (0, 4):
            for y in (0, 1):
                for metric, fn in (("psnr", psnr), ("ssim", ssim)):
                    expected = pair[f"{metric}_crop{crop}_y{y}"]
                    got = fn(gt, dist, crop_border=crop, y_channel=bool(y))
                    assert got == pytest.approx(expected, abs=PSNR_SSIM_ABS), (
                        name,
                        metric,
                        crop,
                        y,
                        got - expected,
                    )
                    # Batched input and swapped roles give the same number.
                    again = fn(dist[None], gt[None].double(), crop_border=crop, y_channel=bool(y))
                    assert again == pytest.approx(expected, abs=PSNR_SSIM_ABS)
                    checked += 1
    assert checked == 32


def test_niqe_matches_basicsr(metric_fixtures: tuple[Path, dict]) -> None:
    root, results = metric_fixtures
    variants = {
        "niqe_crop0_y": {},
        "niqe_crop0_gray": {"convert_to": "gray"},
        "niqe_crop4_y": {"crop_border": 4},
    }
    for name, expected in results["niqe"].items():
        img = _png(root / name)
        for key, kwargs in variants.items():
            got = niqe(img if key != "niqe_crop4_y" else img[None], **kwargs)
            assert got == pytest.approx(expected[key], abs=NIQE_ABS), (name, key, got - expected[key])


def test_niqe_single_channel_and_degenerate_inputs():
    torch.manual_seed(0)
    textured = (torch.rand(1, 200, 200) * 255).round() / 255
    value = niqe(textured)
    assert math.isfinite(value) and value > 0
    assert niqe(textured.expand(3, -1, -1), convert_to="gray") == pytest.approx(value, abs=1e-9)
    assert math.isnan(niqe(torch.full((3, 200, 200), 0.5)))  # no texture: NIQE is undefined
    with pytest.raises(InputError, match="96x96"):
        niqe(torch.rand(3, 100, 150))  # one block only
    with pytest.raises(InputError, match="96x96"):
        niqe(torch.rand(3, 200, 200), crop_border=60)
    with pytest.raises(InputError):
        niqe(torch.rand(3, 200, 200), convert_to="lab")


def test_psnr_known_value_for_float_input():
    torch.manual_seed(1)
    hr = torch.rand(3, 20, 20, dtype=torch.float64) * 0.9
    assert psnr(hr + 0.01, hr) == pytest.approx(40.0, abs=1e-9)  # mse = 2.55**2 on the 0..255 scale
    y_gap = 0.01 * (65.481 + 128.553 + 24.966) / 255  # a grey offset moves Y by this much
    assert psnr(hr + 0.01, hr, y_channel=True) == pytest.approx(20 * math.log10(1 / y_gap), abs=1e-9)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**16), crop=st.integers(0, 3), y=st.booleans())
def test_psnr_ssim_properties(seed: int, crop: int, y: bool) -> None:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(3, 24, 24, generator=g)
    assert psnr(x, x.clone(), crop_border=crop, y_channel=y) == float("inf")
    assert ssim(x, x.clone(), crop_border=crop, y_channel=y) == pytest.approx(1.0, abs=1e-12)
    noise = torch.randn(3, 24, 24, generator=g)
    values = [psnr((x + s * noise).clamp(0, 1), x, crop_border=crop, y_channel=y) for s in (0.01, 0.05, 0.2)]
    assert values[0] > values[1] > values[2]
    other = (x + 0.1 * noise).clamp(0, 1)
    forward, backward = (
        ssim(other, x, crop_border=crop, y_channel=y),
        ssim(x, other, crop_border=crop, y_channel=y),
    )
    assert forward == pytest.approx(backward, abs=1e-12)
    assert -1 <= ssim(other, 1 - x, crop_border=crop, y_channel=y) <= forward < 1


def test_metric_input_errors():
    x = torch.rand(3, 16, 16)
    for fn in (psnr, ssim):
        with pytest.raises(InputError):
            fn(x, torch.rand(3, 16, 15))
        with pytest.raises(InputError):
            fn(x, x, crop_border=8)
        with pytest.raises(InputError):
            fn(x, x, crop_border=-1)
        with pytest.raises(InputError):
            fn(torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16))
        with pytest.raises(InputError):
            fn(torch.rand(4, 16, 16), torch.rand(4, 16, 16))
    with pytest.raises(InputError):
        ssim(x, x, crop_border=3)  # 10x10 left, below the 11x11 window


def test_single_channel_ignores_y_channel():
    torch.manual_seed(2)
    a, b = torch.rand(1, 1, 20, 20), torch.rand(1, 1, 20, 20)
    assert psnr(a, b, y_channel=True) == psnr(a, b)
    assert ssim(a[0], b[0], y_channel=True) == ssim(a, b)


def test_metrics_table():
    assert list(METRICS) == ["psnr", "ssim", "lr_psnr", "niqe", "lpips", "lattice"]
    for key, spec in METRICS.items():
        assert isinstance(spec, MetricSpec) and spec.name == key
    assert METRICS["psnr"].needs_reference and METRICS["psnr"].higher_is_better
    assert METRICS["ssim"].needs_reference and METRICS["ssim"].higher_is_better
    assert not METRICS["niqe"].needs_reference and not METRICS["niqe"].higher_is_better
    assert METRICS["lr_psnr"].needs == ("lr",) and METRICS["lpips"].needs == ("hr", "lpips")
    torch.manual_seed(3)
    a, b = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    inputs = MetricInputs(sr=a, hr=b, crop_border=2, y_channel=False)
    assert METRICS["psnr"].compute(inputs) == psnr(a, b, crop_border=2) < 20
    assert METRICS["ssim"].compute(inputs) == ssim(a, b, crop_border=2)
    with pytest.raises(InputError, match="needs the lpips"):
        METRICS["lpips"].compute(inputs)
    assert METRICS["psnr"].column(True) == "PSNR-Y" and METRICS["niqe"].column(False) == "NIQE"
    assert METRICS["psnr"].describe(scale=4, crop_border=4, y_channel=False) == "dB on RGB, crop 4"
    with pytest.raises(InputError, match="unknown metric 'psnrr'"):
        check_metrics(["psnr", "psnrr"])


def test_lr_psnr_is_the_ntire21_definition() -> None:
    """SR downscaled by MATLAB bicubic and rounded to 8 bit, against the LR, RGB, no crop: an SR that downscales
    back to its LR (the HR itself) is perfect (inf), where an unrounded downscale would score rounding noise."""
    rng = np.random.default_rng(0)
    hr = torch.from_numpy(rng.integers(0, 256, (1, 3, 48, 40)).astype(np.float32) / 255)
    lr = degrade(hr, 4)
    assert lr_psnr(hr, lr, scale=4) == math.inf
    unrounded = psnr(degrade(hr, 4, bit_depth=None), lr)
    assert 50 < unrounded < 70  # the other definition: a finite score for a perfectly consistent SR
    noisy = (hr + torch.from_numpy(rng.normal(0, 8, hr.shape).astype(np.float32) / 255)).clamp(0, 1)
    noisy = torch.round(noisy * 255) / 255
    expected = psnr(torch.round(degrade(noisy, 4, bit_depth=None).clamp(0, 1) * 255) / 255, lr)
    assert lr_psnr(noisy, lr, scale=4) == expected and math.isfinite(expected)
    assert lr_psnr(noisy, lr, scale=4) != psnr(degrade(noisy, 4, bit_depth=None), lr)  # the rounding matters
    assert METRICS["lr_psnr"].compute(MetricInputs(sr=noisy, lr=lr, scale=4)) == expected
    with pytest.raises(InputError, match="scale of 2 or more"):
        lr_psnr(hr, hr, scale=1)
    with pytest.raises(InputError, match="LR-PSNR"):
        lr_psnr(hr, lr[..., :-1, :], scale=4)
