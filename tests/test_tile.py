"""perceptsr.inference.tile: tiled == untiled once overlap covers the receptive field; conditions tiled too."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from tolerance import assert_paths_close, network_depth
from torch import Tensor, nn

from perceptsr.errors import InputError
from perceptsr.inference import tile as tiling
from perceptsr.inference.tile import auto_tile_size, tiled_forward


class TinyNet(nn.Module):
    """3 conv3x3 at LR + pixel shuffle: each output pixel sees 3 LR pixels on each side."""

    receptive_radius = 3

    def __init__(self, scale: int, channels: int = 6) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(3, channels, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale))

    def forward(self, lr: Tensor) -> Tensor:
        return self.body(lr)


class ConditionedNet(nn.Module):
    """Uses an LR-size map `t` (concatenated to the input) and an HR-size map `seg` (a 3x3 conv at HR)."""

    receptive_radius = 4  # 3 LR convs, then one HR 3x3 conv: ceil(1 / scale) more LR pixel

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(4, 6, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(6, 6, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(6, 3 * scale**2, 3, padding=1), nn.PixelShuffle(scale))
        self.seg_conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, lr: Tensor, *, t: Tensor, seg: Tensor) -> Tensor:
        return self.body(torch.cat([lr, t], 1)) * (1 + self.seg_conv(seg))


def untiled(model: nn.Module, lr: Tensor, **conditions: Tensor) -> Tensor:
    with torch.no_grad():
        return model(lr, **conditions)


@pytest.fixture(autouse=True)
def seeded() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize("scale", [2, 4])
@pytest.mark.parametrize("tile", [13, 20, 64])
@pytest.mark.parametrize("overlap", [3, 4])
def test_tiled_equals_untiled(scale: int, tile: int, overlap: int) -> None:
    model = TinyNet(scale).eval()
    lr = torch.rand(1, 3, 21, 31)  # odd sizes, taller and wider than most tiles
    expected = untiled(model, lr)
    got = tiled_forward(model, lr, scale=scale, tile=tile, overlap=overlap)
    assert got.shape == (1, 3, 21 * scale, 31 * scale) and got.dtype == torch.float32
    assert expected.abs().mean() > 0.01
    assert_paths_close(got, expected, depth=network_depth(model), what=f"tile {tile} overlap {overlap}")


def test_overlap_below_receptive_field_differs_but_blends() -> None:
    """With too little overlap the result is off by far more than the tolerance above, but still blends."""
    model = TinyNet(2).eval()
    lr = torch.rand(1, 3, 30, 30)
    expected, tiled = untiled(model, lr), tiled_forward(model, lr, scale=2, tile=12, overlap=1)
    with pytest.raises(AssertionError, match="exceeds"):
        assert_paths_close(tiled, expected, depth=network_depth(model))
    difference = (tiled - expected).abs()
    assert difference.max() > 1e-4 and difference.mean() < 0.05


@pytest.mark.parametrize("scale", [2, 3])
def test_conditions_at_lr_and_hr_size(scale: int) -> None:
    model = ConditionedNet(scale).eval()
    lr = torch.rand(1, 3, 19, 26)
    t = torch.rand(1, 1, 19, 26)
    seg = torch.rand(1, 2, 19 * scale, 26 * scale)
    expected = untiled(model, lr, t=t, seg=seg)
    got = tiled_forward(model, lr, scale=scale, tile=13, overlap=4, conditions={"t": t, "seg": seg})
    tolerance = assert_paths_close(got, expected, depth=network_depth(model), what="conditioned tiles")
    # both maps matter, so a tiling that cut them wrongly would be caught
    assert (untiled(model, lr, t=torch.zeros_like(t), seg=seg) - expected).abs().max() > 100 * tolerance
    assert (untiled(model, lr, t=t, seg=torch.zeros_like(seg)) - expected).abs().max() > 100 * tolerance


def test_condition_size_must_be_an_integer_multiple() -> None:
    model = ConditionedNet(2).eval()
    lr = torch.rand(1, 3, 10, 12)
    for t, seg in [(torch.rand(1, 1, 11, 12), torch.rand(1, 2, 20, 24)),
                   (torch.rand(1, 1, 10, 12), torch.rand(1, 2, 20, 36)),
                   (torch.rand(1, 1, 10, 12), torch.rand(1, 2, 15, 18)),
                   (torch.rand(1, 1, 5, 6), torch.rand(1, 2, 20, 24))]:
        with pytest.raises(InputError, match="integer multiple"):
            tiled_forward(model, lr, scale=2, tile=8, overlap=2, conditions={"t": t, "seg": seg})


def test_bad_tile_settings_are_input_errors() -> None:
    model = TinyNet(2).eval()
    lr = torch.rand(1, 3, 8, 8)
    with pytest.raises(InputError, match="larger than 2 x overlap"):
        tiled_forward(model, lr, scale=2, tile=8, overlap=4)
    with pytest.raises(InputError, match="overlap"):
        tiled_forward(model, lr, scale=2, tile=8, overlap=-1)
    with pytest.raises(InputError, match="--scale"):
        tiled_forward(model, lr, scale=4, tile=None, overlap=0)


def test_single_call_when_tile_is_none_or_large() -> None:
    calls = []

    def model(lr: Tensor) -> Tensor:
        calls.append(tuple(lr.shape))
        return lr.repeat_interleave(2, -1).repeat_interleave(2, -2)

    lr = torch.rand(1, 3, 5, 7)
    for tile in [None, 7, 100]:
        calls.clear()
        result = tiled_forward(model, lr, scale=2, tile=tile, overlap=2)
        assert calls == [(1, 3, 5, 7)]
        assert torch.equal(result, model(lr))
    calls.clear()
    tiled_forward(model, lr, scale=2, tile=6, overlap=2)  # only the width needs tiling
    assert calls and all(shape[2] == 5 and shape[3] == 6 for shape in calls)


def test_out_is_filled_and_input_untouched() -> None:
    lr = torch.rand(1, 3, 17, 9)
    keep = lr.clone()
    out = torch.full((1, 3, 17, 9), 123.0)
    result = tiled_forward(lambda x: x, lr, scale=1, tile=6, overlap=1, out=out, progress=True)
    assert result is out and torch.allclose(out, keep, atol=1e-6) and torch.equal(lr, keep)
    fresh = tiled_forward(lambda x: x * 2, lr, scale=1, tile=6, overlap=1)
    fresh.clamp_(0, 1)  # a normal tensor, not an inference-mode one
    assert torch.allclose(fresh, (keep * 2).clamp(0, 1), atol=1e-6)


def test_device_argument_moves_tiles() -> None:
    seen = []

    def model(lr: Tensor) -> Tensor:
        seen.append(lr.device.type)
        return lr

    tiled_forward(model, torch.rand(1, 3, 10, 10), scale=1, tile=6, overlap=1, device="cpu")
    assert seen and set(seen) == {"cpu"}


@settings(max_examples=12, deadline=None, derandomize=True)
@given(height=st.integers(1, 20), width=st.integers(1, 20), overlap=st.integers(3, 5),
       tile_extra=st.integers(3, 16), scale=st.sampled_from([1, 2]))
def test_property_tiled_equals_untiled(height: int, width: int, overlap: int, tile_extra: int,
                                       scale: int) -> None:
    torch.manual_seed(height * 31 + width)
    model = TinyNet(scale, channels=4).eval()
    lr = torch.rand(1, 3, height, width)
    got = tiled_forward(model, lr, scale=scale, tile=2 * overlap + tile_extra, overlap=overlap)
    assert_paths_close(got, untiled(model, lr), depth=network_depth(model), what=f"{height}x{width}")


@settings(max_examples=60, deadline=None, derandomize=True)
@given(length=st.integers(1, 200), overlap=st.integers(0, 12), tile_extra=st.integers(1, 60),
       scale=st.integers(1, 4))
def test_property_layout(length: int, overlap: int, tile_extra: int, scale: int) -> None:
    """Spans cover the axis with full tiles; weights sum to 1 and vanish within `overlap` of a cut edge."""
    tile = 2 * overlap + tile_extra
    spans, weights = tiling._layout(length, tile, overlap, scale)
    total = torch.zeros(length * scale)
    for (start, stop), weight in zip(spans, weights, strict=True):
        assert 0 <= start < stop <= length and stop - start == min(tile, length)
        assert weight.shape == ((stop - start) * scale,)
        total[start * scale:stop * scale] += weight
        margin = overlap * scale
        if start > 0 and margin:
            assert weight[:margin].eq(0).all()
        if stop < length and margin:
            assert weight[-margin:].eq(0).all()
    assert spans[0][0] == 0 and spans[-1][1] == length
    assert torch.allclose(total, torch.ones_like(total), atol=1e-6)


def test_auto_tile_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = auto_tile_size(64, 4, available_bytes=500 * 2**20)
    large = auto_tile_size(64, 4, available_bytes=8 * 2**30)
    assert 64 <= small < large <= 2048 and small % 8 == 0 and large % 8 == 0
    assert auto_tile_size(64, 2, available_bytes=2 * 2**30) > auto_tile_size(64, 4, available_bytes=2 * 2**30)
    # 8 GiB / 4 = 2 GiB over 4 * 64 * (4 + 16) bytes per pixel -> sqrt(419430) = 647 -> 640
    assert large == 640
    assert auto_tile_size(64, 4, available_bytes=1) == 64
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       24000000 kB\nMemAvailable:    8388608 kB\n")
    assert tiling._memory_available(meminfo) == 8 * 2**30
    assert tiling._memory_available(tmp_path / "missing") is None
    monkeypatch.setattr(tiling, "_memory_available", lambda: None)
    assert auto_tile_size(64, 4) == tiling.FALLBACK_TILE
