"""The spine's command-line contracts end to end: degrade, metrics, upscale, the API, and the bad-input corpus.

A few commands run through a real subprocess (exit codes, stderr, nothing else printed); the bad-input corpus goes
through `cli.main` in-process (the same code path, without paying a torch import per file).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import perceptsr
from perceptsr.cli.main import main
from perceptsr.data.resize import degrade, imresize
from perceptsr.io.images import read_image, write_image, write_png16
from perceptsr.metrics import psnr

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "perceptsr", *args], env=ENV, capture_output=True, text=True,
                          timeout=300)


def photo(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 6, y * 8, (x + y) * 3], axis=-1) % 256
    return np.clip(base + rng.integers(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)


def test_degrade_matches_the_library_and_keeps_bit_depth(tmp_path: Path) -> None:
    Image.fromarray(photo(27, 34)).save(tmp_path / "a.png")
    deep = (photo(16, 20, seed=1).astype(np.uint16) * 257 + 7)
    with open(tmp_path / "b.png", "wb") as handle:
        write_png16(handle, deep)
    result = run("degrade", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "lr"),
                 "--scale", "4")
    assert result.returncode == 0, result.stderr
    lr = read_image(tmp_path / "lr" / "a.png")
    assert lr.rgb.shape == (1, 3, 6, 8) and lr.bit_depth == 8
    expected = degrade(read_image(tmp_path / "a.png").rgb, 4)
    assert torch.equal(lr.rgb, expected)
    lr16 = read_image(tmp_path / "lr" / "b.png")
    assert lr16.bit_depth == 16 and lr16.rgb.shape == (1, 3, 4, 5)
    assert torch.allclose(lr16.rgb, degrade(read_image(tmp_path / "b.png").rgb, 4, bit_depth=16), atol=1e-7)


def test_metrics_json_contract(tmp_path: Path) -> None:
    gt, sr = tmp_path / "gt", tmp_path / "sr"
    for i in range(2):
        image = photo(40, 48, seed=i)
        noisy = np.clip(image.astype(int) + np.random.default_rng(i).integers(-6, 7, image.shape), 0, 255)
        write_image(gt / f"im{i}.png", torch.from_numpy(image).permute(2, 0, 1)[None] / 255.0)
        write_image(sr / f"im{i}.png", torch.from_numpy(noisy.astype(np.uint8)).permute(2, 0, 1)[None] / 255.0)
    result = run("metrics", "--gt", str(gt), "--sr", str(sr), "--crop-border", "4", "--y-channel", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"images", "mean"} and set(data["images"]) == {"im0", "im1"}
    assert set(data["mean"]) == {"psnr", "ssim"}
    direct = psnr(read_image(sr / "im0.png").rgb, read_image(gt / "im0.png").rgb, crop_border=4, y_channel=True)
    assert data["images"]["im0"]["psnr"] == pytest.approx(direct, abs=1e-9)
    assert data["mean"]["psnr"] == pytest.approx((data["images"]["im0"]["psnr"] + data["images"]["im1"]["psnr"]) / 2)


def test_metrics_pairing_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt, sr = tmp_path / "gt", tmp_path / "sr"
    write_image(gt / "a.png", torch.rand(1, 3, 8, 8))
    write_image(sr / "b.png", torch.rand(1, 3, 8, 8))
    assert main(["metrics", "--gt", str(gt), "--sr", str(sr)]) == 2
    assert "has no ground truth" in capsys.readouterr().err
    write_image(sr / "a.png", torch.rand(1, 3, 9, 8))
    (sr / "b.png").unlink()
    assert main(["metrics", "--gt", str(gt), "--sr", str(sr)]) == 2
    err = capsys.readouterr().err
    assert "8x9" in err and err.count("\n") == 1


def test_upscale_bicubic_default_gray_rgba_and_no_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo()).save(src / "rgb.png")
    Image.fromarray(photo()[..., 0]).save(src / "gray.png")
    rgba = np.dstack([photo(), np.linspace(0, 255, 24 * 32).reshape(24, 32).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    out = tmp_path / "out"
    result = run("upscale", str(src), "-o", str(out), "--model", "bicubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    with Image.open(out / "gray.png") as image:
        assert image.mode in ("L", "I;16") and image.size == (64, 48)
    with Image.open(out / "alpha.png") as image:
        assert image.mode == "RGBA" and image.size == (64, 48)
    rgb = read_image(out / "rgb.png").rgb
    expected = imresize(read_image(src / "rgb.png").rgb, 2).clamp(0, 1)
    assert (rgb - expected).abs().max() <= 0.5 / 255 + 1e-6
    before = (out / "rgb.png").read_bytes()
    again = run("upscale", str(src / "rgb.png"), "-o", str(out), "--model", "bicubic", "--scale", "2")
    assert again.returncode == 2 and "exists" in again.stderr and again.stderr.count("\n") == 1
    assert (out / "rgb.png").read_bytes() == before


def test_python_api(tmp_path: Path) -> None:
    model = perceptsr.load_model("bicubic", scale=3)
    assert model.scale == 3 and not model.training
    lr = torch.rand(1, 3, 10, 12)
    raw = model(lr)
    assert raw.shape == (1, 3, 30, 36)
    assert torch.equal(perceptsr.upscale(lr, model), raw.clamp(0, 1))
    hr = torch.rand(1, 3, 21, 30)
    assert torch.equal(perceptsr.degrade(hr, 4), degrade(hr, 4))
    with pytest.raises(perceptsr.errors.InputError):
        perceptsr.load_model("no-such-model")


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def encoded(fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo(64, 64)).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


BAD = {
    "truncated.png": encoded("PNG")[:200],
    "truncated.jpg": encoded("JPEG")[:300],
    "empty.png": b"",
    "text.png": b"this is not an image\n",
    "bomb.png": png_header_only(60000, 60000),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_are_one_line_errors_and_leave_nothing(tmp_path: Path, name: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / name
    path.write_bytes(BAD[name])
    out = tmp_path / "out"
    for command in (["upscale", str(path), "-o", str(out), "--model", "bicubic"],
                    ["degrade", str(path), "-o", str(out), "--scale", "4"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith("perceptsr: error:") and err.count("\n") == 1 and "Traceback" not in err
        assert not out.exists() or not any(out.iterdir())


GOOD = {
    "gray16.png": lambda p: p.write_bytes(_png16_gray()),
    "palette.png": lambda p: Image.fromarray(photo()).convert("P").save(p),
    "cmyk.jpg": lambda p: Image.fromarray(photo()).convert("CMYK").save(p),
    "one.png": lambda p: Image.fromarray(photo(1, 1)).save(p),
    "rotated.jpg": lambda p: _rotated_jpeg(p),
    "rgba.png": lambda p: Image.fromarray(np.dstack([photo(), photo()[..., 0]]), "RGBA").save(p),
}


def _png16_gray() -> bytes:
    buffer = io.BytesIO()
    write_png16(buffer, (np.arange(24 * 32).reshape(24, 32, 1) * 80).astype(np.uint16))
    return buffer.getvalue()


def _rotated_jpeg(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo(24, 32)).save(path, exif=exif.tobytes())


@pytest.mark.parametrize("name", sorted(GOOD))
def test_odd_but_valid_inputs_upscale(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    GOOD[name](path)
    out = tmp_path / "out"
    assert main(["upscale", str(path), "-o", str(out), "--model", "bicubic", "--scale", "2"]) == 0
    source = read_image(path)
    result = read_image(out / f"{path.stem}.png")
    assert result.rgb.shape[-2:] == (source.rgb.shape[-2] * 2, source.rgb.shape[-1] * 2)
    assert result.bit_depth == source.bit_depth and result.grayscale == source.grayscale
    assert (result.alpha is None) == (source.alpha is None)


def test_output_paths_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(photo()).save(image)
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    assert main(["upscale", str(image), "-o", str(tmp_path / "out"), "--model", "bicubic"]) == 2
    assert "existing directory" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["upscale", str(image), "-o", str(tmp_path / "file"), "--model", "bicubic"]) == 2
    assert "existing file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


def test_wrong_scale_for_a_model_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", "x.png", "-o", str(tmp_path), "--scale", "0"])
    assert exit_info.value.code == 2
    assert "scale must be between" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "report"])
def test_repeated_and_listed_data_folders_all_count(command: str) -> None:
    from perceptsr.cli.main import build_parser

    extra = ["-o", "out"] if command == "report" else []
    args = build_parser().parse_args([command, "--model", "bicubic", "--data", "a", "b", "--data", "c",
                                      "--scale", "4", *extra])
    assert [str(p) for p in args.data] == ["a", "b", "c"]
