"""`perceptsr demo --hr`: ground-truth inputs, the degrade command's LR fed to the models, an HR column (the model
cards' comparison), and the magnified region's size and zoom. The other demo tests are in test_cli.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_release
from PIL import Image

from perceptsr.cli.main import main
from perceptsr.io import compare
from perceptsr.io.compare import GAP, LABEL_HEIGHT
from perceptsr.io.images import read_image


def ground_truth(folder: Path, height: int = 42, width: int = 53, seed: int = 0) -> Path:
    """An HR picture whose size is not a multiple of 4 (so mod-cropping shows), smooth gradients plus grain."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 5, y * 6, (x + y) * 2], axis=-1) % 256
    pixels = np.clip(base + rng.integers(0, 40, (height, width, 3)), 0, 255).astype(np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(folder / "hr.png")
    return folder / "hr.png"


def as_bytes(image: torch.Tensor) -> np.ndarray:
    return (image[0].permute(1, 2, 0).clamp(0, 1).numpy() * 255).round().astype(np.uint8)


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> dict:
    """What the demo gives the models (`lr`) and the comparison (`rows`, `reference`), passed on unchanged."""
    from perceptsr.inference import upscale

    captured: dict = {"lr": []}
    upscale_image, side_by_side = upscale.upscale_image, compare.side_by_side

    def upscale_spy(model: object, image: object, **kwargs: object) -> object:
        captured["lr"].append(image.rgb.clone())
        return upscale_image(model, image, **kwargs)

    def compare_spy(rows: list[dict], **kwargs: object) -> torch.Tensor:
        captured["rows"], captured["reference"] = rows, kwargs.get("reference")
        return side_by_side(rows, **kwargs)

    monkeypatch.setattr(upscale, "upscale_image", upscale_spy)
    monkeypatch.setattr(compare, "side_by_side", compare_spy)
    return captured


def test_hr_feeds_the_degrade_commands_lr_and_adds_an_hr_column(tmp_path: Path, seen: dict) -> None:
    hr = ground_truth(tmp_path / "in")
    assert main(["degrade", str(hr), "-o", str(tmp_path / "lr"), "--scale", "4", "--quiet"]) == 0
    out = tmp_path / "card"
    assert main(["demo", "--hr", str(hr), "--model", "bicubic", "-o", str(out), "--crop-size", "0", "--quiet"]) == 0
    degraded = read_image(tmp_path / "lr" / "hr.png").rgb
    assert len(seen["lr"]) == 1 and seen["lr"][0].shape == degraded.shape == (1, 3, 10, 13)
    np.testing.assert_array_equal(as_bytes(seen["lr"][0]), as_bytes(degraded))
    # the columns: the models, then HR (mod-cropped to 40x52); no LR column; the region is chosen on HR
    row = seen["rows"][0]
    assert list(row) == ["bicubic", "HR"] and seen["reference"] == "HR"
    truth = as_bytes(read_image(hr).rgb)[:40, :52]
    np.testing.assert_array_equal(as_bytes(row["HR"]), truth)
    picture = np.asarray(Image.open(out / "comparison.png").convert("RGB"))
    assert picture.shape == (LABEL_HEIGHT + 40 + GAP, 52 + GAP + 52, 3)
    np.testing.assert_array_equal(picture[LABEL_HEIGHT:LABEL_HEIGHT + 40, 52 + GAP:], truth)
    bicubic = read_image(out / "bicubic" / "hr.png").rgb
    assert bicubic.shape == (1, 3, 40, 52)
    np.testing.assert_array_equal(picture[LABEL_HEIGHT:LABEL_HEIGHT + 40, :52], as_bytes(bicubic))


def test_without_hr_the_inputs_are_lr(tmp_path: Path, seen: dict) -> None:
    image = ground_truth(tmp_path / "in", 12, 16)
    assert main(["demo", str(image), "--model", "bicubic", "-o", str(tmp_path / "out"), "--quiet"]) == 0
    np.testing.assert_array_equal(as_bytes(seen["lr"][0]), as_bytes(read_image(image).rgb))
    assert list(seen["rows"][0]) == ["LR (nearest)", "bicubic"] and seen["reference"] is None


def test_crop_size_and_zoom(tmp_path: Path) -> None:
    hr = ground_truth(tmp_path / "in", 80, 96)
    argv = ["demo", "--hr", str(hr), "--model", "bicubic", "--quiet", "--crop-size", "16"]
    assert main([*argv, "-o", str(tmp_path / "a"), "--crop-zoom", "3"]) == 0
    height = Image.open(tmp_path / "a" / "comparison.png").size[1]
    assert height == 80 + 16 * 3 + 2 * (LABEL_HEIGHT + GAP)
    assert main([*argv, "-o", str(tmp_path / "b")]) == 0  # default: as much as the 96-pixel column holds
    height = Image.open(tmp_path / "b" / "comparison.png").size[1]
    assert height == 80 + 16 * 6 + 2 * (LABEL_HEIGHT + GAP)
    assert compare.ZOOM <= 6 <= compare.MAX_FIT_ZOOM
    assert main([*argv, "-o", str(tmp_path / "c"), "--crop-zoom", "3", "--crops-only"]) == 0
    assert Image.open(tmp_path / "c" / "comparison.png").size[1] == 16 * 3 + LABEL_HEIGHT + GAP  # the crop line only


def test_fitted_zoom_is_at_least_the_default_and_shows_a_two_pixel_pattern() -> None:
    stripes = torch.zeros(1, 3, 40, 40)
    stripes[..., ::2] = 1.0  # a 2-pixel period
    picture = compare.side_by_side([{"a": stripes}], scale=4, crop=32, zoom=None)
    assert picture.shape[-2] == 40 + 32 * compare.ZOOM + 2 * (LABEL_HEIGHT + GAP)  # 40 // 32 = 1: ZOOM, not 1
    line = picture[0, 0, 40 + 2 * LABEL_HEIGHT + GAP + 1, : 32 * compare.ZOOM].tolist()
    runs = [line[i:i + compare.ZOOM] for i in range(0, len(line), compare.ZOOM)]
    assert all(len(set(run)) == 1 for run in runs)  # every stripe pixel is a ZOOM-wide block, nearest neighbour
    assert [run[0] for run in runs[:4]] in ([1.0, 0.0, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0])


def test_region_is_chosen_on_the_reference_column() -> None:
    flat = torch.full((1, 3, 64, 64), 0.5)
    textured = flat.clone()
    textured[..., 40:56, 4:20] = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    boxes = []
    original = compare.texture_box
    try:
        compare.texture_box = lambda image, size: boxes.append(original(image, size)) or boxes[-1]
        compare.side_by_side([{"model": flat, "HR": textured}], scale=4, crop=16, reference="HR")
    finally:
        compare.texture_box = original
    assert boxes == [(40, 4, 16)]


def test_hr_refuses_a_model_of_another_scale(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    hr = ground_truth(tmp_path / "in")
    x2 = tiny_release(tmp_path / "x2.safetensors", "msrresnet", 2)
    out = tmp_path / "card"
    assert main(["demo", "--hr", str(hr), "--model", "bicubic", "--model", str(x2), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "upscales x2" in err and err.count("\n") == 1 and err.startswith("perceptsr: error:")
    assert not out.exists() or not any(out.rglob("*.png"))


@pytest.mark.parametrize(("extra", "message"), [
    (["--model", "bicubic:label=HR"], "labelled HR"),
    (["--model", "bicubic", "--crop-zoom", "0"], "--crop-zoom must be at least 1"),
    (["--model", "bicubic", "--crop-size", "0", "--crops-only"], "--crops-only needs"),
])
def test_hr_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture, extra: list[str], message: str) -> None:
    hr = ground_truth(tmp_path / "in")
    assert main(["demo", "--hr", str(hr), "-o", str(tmp_path / "out"), "--quiet", *extra]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()
