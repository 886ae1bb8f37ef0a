"""perceptsr.io.images: every format round-trips, every bad file is one InputError line, writes are atomic."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps

from perceptsr.errors import InputError
from perceptsr.io import images as pio
from perceptsr.io.images import (
    atomic_output,
    list_images,
    read_image,
    upscale_alpha,
    write_image,
)

LOSSLESS = [".png", ".bmp", ".tif"]
LOSSY = [".jpg", ".webp"]


def smooth_rgb(height: int = 24, width: int = 32) -> torch.Tensor:
    """A smooth colour image (lossy codecs keep it within a few levels)."""
    y = torch.linspace(0, 1, height).view(-1, 1)
    x = torch.linspace(0, 1, width).view(1, -1)
    return torch.stack([x.expand(height, -1), y.expand(-1, width), (x + y) / 2]).unsqueeze(0)


def random_rgb(height: int = 9, width: int = 13, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, height, width, generator=generator)


def one_line_error(path: Path, **kwargs: object) -> str:
    with pytest.raises(InputError) as caught:
        read_image(path, **kwargs)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"cannot read image {path}: ")
    return message


# --- a tiny PNG writer for files Pillow cannot make: filtered/interlaced 16-bit, forged headers -------------

def png_chunk(kind: bytes, data: bytes) -> bytes:
    crc = zlib.crc32(kind + data) & 0xFFFFFFFF
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)


def png_bytes(width: int, height: int, bit_depth: int, color_type: int, idat: bytes, *,
              interlace: int = 0) -> bytes:
    header = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(idat))
            + png_chunk(b"IEND", b""))


def filtered(rows: np.ndarray, bpp: int, first_kind: int) -> bytes:
    """PNG-filter byte rows (H, L), cycling through all five filter types (None, Sub, Up, Average, Paeth)."""
    out, previous = [], np.zeros(rows.shape[1], np.int64)
    for index, row in enumerate(rows.astype(np.int64)):
        kind = (first_kind + index) % 5
        left = np.concatenate([np.zeros(bpp, np.int64), row[:-bpp]])
        up_left = np.concatenate([np.zeros(bpp, np.int64), previous[:-bpp]])
        estimate = left + previous - up_left
        distance = [np.abs(estimate - left), np.abs(estimate - previous), np.abs(estimate - up_left)]
        paeth = np.where((distance[0] <= distance[1]) & (distance[0] <= distance[2]), left,
                         np.where(distance[1] <= distance[2], previous, up_left))
        prediction = [0, left, previous, (left + previous) // 2, paeth][kind]
        out.append(bytes([kind]) + ((row - prediction) % 256).astype(np.uint8).tobytes())
        previous = row
    return b"".join(out)


ADAM7 = [(0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2), (0, 1, 1, 2)]


def png16(samples: np.ndarray, *, interlace: bool = False) -> bytes:
    """A filtered 16-bit PNG of uint16 (H,W,C) samples, optionally Adam7-interlaced."""
    height, width, channels = samples.shape
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]
    passes = ADAM7 if interlace else [(0, 0, 1, 1)]
    data = b""
    for number, (x0, y0, dx, dy) in enumerate(passes):
        part = samples[y0::dy, x0::dx]
        if part.size:
            rows = part.astype(">u2").reshape(part.shape[0], -1).view(np.uint8)
            data += filtered(rows, 2 * channels, first_kind=number)
    return png_bytes(width, height, 16, color_type, data, interlace=int(interlace))


# --- round trips -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", LOSSLESS)
def test_lossless_formats_round_trip_exactly(tmp_path: Path, suffix: str) -> None:
    rgb = random_rgb()
    write_image(tmp_path / f"a{suffix}", rgb)
    loaded = read_image(tmp_path / f"a{suffix}")
    assert loaded.rgb.shape == (1, 3, 9, 13) and loaded.rgb.dtype == torch.float32
    assert (loaded.rgb - rgb).abs().max() <= 0.5 / 255 + 1e-6
    assert not loaded.grayscale and loaded.alpha is None and loaded.bit_depth == 8


@pytest.mark.parametrize("suffix", LOSSY)
def test_lossy_formats_round_trip_closely(tmp_path: Path, suffix: str) -> None:
    rgb = smooth_rgb()
    write_image(tmp_path / f"a{suffix}", rgb)
    loaded = read_image(tmp_path / f"a{suffix}")
    assert loaded.rgb.shape == rgb.shape
    assert (loaded.rgb - rgb).abs().mean() < 0.01


@pytest.mark.parametrize("suffix", LOSSLESS + LOSSY)
def test_grayscale_writes_luma(tmp_path: Path, suffix: str) -> None:
    rgb = smooth_rgb()
    write_image(tmp_path / f"g{suffix}", rgb, grayscale=True)
    loaded = read_image(tmp_path / f"g{suffix}")
    luma = (rgb * torch.tensor(pio.LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
    tolerance = 0.5 / 255 + 1e-6 if suffix in LOSSLESS else 0.03
    assert (loaded.rgb - luma).abs().max() <= tolerance
    spread = (loaded.rgb.amax(1) - loaded.rgb.amin(1)).max()
    assert spread <= (0.02 if suffix == ".webp" else 0)  # WebP stores gray as (lossy) RGB
    assert loaded.grayscale == (suffix != ".webp")


@pytest.mark.parametrize("suffix", [".png", ".tif", ".webp"])
@pytest.mark.parametrize("grayscale", [False, True])
def test_alpha_round_trips(tmp_path: Path, suffix: str, grayscale: bool) -> None:
    alpha = random_rgb(seed=1)[:, :1]
    write_image(tmp_path / f"a{suffix}", smooth_rgb(9, 13), alpha=alpha, grayscale=grayscale)
    loaded = read_image(tmp_path / f"a{suffix}")
    assert loaded.alpha is not None and loaded.alpha.shape == (1, 1, 9, 13)
    assert (loaded.alpha - alpha).abs().max() <= 0.5 / 255 + 1e-6


def test_16bit_gray_round_trips_exactly(tmp_path: Path) -> None:
    values = np.random.default_rng(0).integers(0, 65536, (7, 5)).astype(np.uint16)
    rgb = torch.from_numpy(values.astype(np.float32) / 65535).expand(1, 3, -1, -1)
    write_image(tmp_path / "g16.png", rgb, grayscale=True, bit_depth=16)
    loaded = read_image(tmp_path / "g16.png")
    assert loaded.grayscale and loaded.bit_depth == 16
    assert np.array_equal(np.rint(loaded.rgb[0, 1].numpy() * 65535).astype(np.uint16), values)
    with Image.open(tmp_path / "g16.png") as im:  # readable by others as 16-bit gray too
        assert im.mode.startswith("I") and np.array_equal(np.asarray(im), values)


def test_16bit_gray_written_by_pillow(tmp_path: Path) -> None:
    values = np.array([[0, 1, 257], [40000, 65534, 65535]], dtype=np.uint16)
    Image.fromarray(values).save(tmp_path / "g.png")
    loaded = read_image(tmp_path / "g.png")
    assert loaded.bit_depth == 16 and loaded.grayscale
    assert torch.equal(loaded.rgb[0, 2], torch.from_numpy(values.astype(np.float32) / 65535))


@pytest.mark.parametrize("channels", [2, 3, 4])
@pytest.mark.parametrize("interlace", [False, True])
def test_16bit_color_png_read_exactly(tmp_path: Path, channels: int, interlace: bool) -> None:
    """Filtered (all five filters) and interlaced 16-bit LA/RGB/RGBA: every sample survives, both bytes."""
    values = np.random.default_rng(channels).integers(0, 65536, (11, 10, channels)).astype(np.uint16)
    (tmp_path / "c.png").write_bytes(png16(values, interlace=interlace))
    loaded = read_image(tmp_path / "c.png")
    got = np.rint(torch.cat([loaded.rgb, loaded.alpha] if loaded.alpha is not None else [loaded.rgb], 1)[0]
                  .permute(1, 2, 0).numpy() * 65535).astype(np.uint16)
    expected = np.concatenate([values[..., :1]] * 3 + [values[..., 1:]], -1) if channels == 2 else values
    assert loaded.bit_depth == 16 and loaded.grayscale == (channels == 2)
    assert np.array_equal(got, expected)


@pytest.mark.parametrize("channels", [1, 3])
def test_16bit_transparent_key_colour_becomes_alpha(tmp_path: Path, channels: int) -> None:
    values = np.array([[[1000, 2000, 3000], [1000, 2000, 3001]], [[5, 6, 7], [1000, 2000, 3000]]], np.uint16)
    values = values[..., :channels]
    key = png_chunk(b"tRNS", struct.pack(f">{channels}H", *values[0, 0]))
    data = png16(values)
    (tmp_path / "k.png").write_bytes(data[:33] + key + data[33:])  # tRNS goes after IHDR, before IDAT
    loaded = read_image(tmp_path / "k.png")
    assert loaded.bit_depth == 16 and loaded.alpha is not None
    expected = [[0, 1], [1, 0]] if channels == 3 else [[0, 0], [1, 0]]  # gray compares only the first value
    assert loaded.alpha[0, 0].tolist() == expected
    assert round(loaded.rgb[0, 0, 1, 0].item() * 65535) == 5


@pytest.mark.parametrize("with_alpha", [False, True])
def test_16bit_rgb_written_and_read_back_exactly(tmp_path: Path, with_alpha: bool) -> None:
    values = np.random.default_rng(3).integers(0, 65536, (6, 9, 4)).astype(np.uint16)
    floats = torch.from_numpy(values.astype(np.float32) / 65535).permute(2, 0, 1).unsqueeze(0)
    alpha = floats[:, 3:] if with_alpha else None
    write_image(tmp_path / "c16.png", floats[:, :3], alpha=alpha, bit_depth=16)
    loaded = read_image(tmp_path / "c16.png")
    assert loaded.bit_depth == 16 and not loaded.grayscale
    assert np.array_equal(np.rint(loaded.rgb[0].permute(1, 2, 0).numpy() * 65535).astype(np.uint16),
                          values[..., :3])
    if with_alpha:
        assert np.array_equal(np.rint(loaded.alpha[0, 0].numpy() * 65535).astype(np.uint16), values[..., 3])
    else:
        assert loaded.alpha is None


def test_16bit_gray_with_alpha_round_trips(tmp_path: Path) -> None:
    values = np.random.default_rng(6).integers(0, 65536, (2, 5, 4)).astype(np.uint16)
    gray, alpha = (torch.from_numpy(values[i].astype(np.float32) / 65535) for i in range(2))
    write_image(tmp_path / "la.png", gray.expand(3, -1, -1), alpha=alpha.view(1, 1, 5, 4), grayscale=True,
                bit_depth=16)
    loaded = read_image(tmp_path / "la.png")
    assert loaded.grayscale and loaded.bit_depth == 16
    assert np.array_equal(np.rint(loaded.rgb[0, 2].numpy() * 65535).astype(np.uint16), values[0])
    assert np.array_equal(np.rint(loaded.alpha[0, 0].numpy() * 65535).astype(np.uint16), values[1])


def test_16bit_written_png_is_standard(tmp_path: Path) -> None:
    """Our encoder's output opens in Pillow with the right size and high bytes."""
    values = np.random.default_rng(4).integers(0, 65536, (5, 8, 3)).astype(np.uint16)
    write_image(tmp_path / "c.png", torch.from_numpy(values / 65535).permute(2, 0, 1).float(), bit_depth=16)
    with Image.open(tmp_path / "c.png") as im:
        assert im.size == (8, 5)
        assert np.array_equal(np.asarray(im.convert("RGB")), (values >> 8).astype(np.uint8))


@pytest.mark.parametrize("channels", [1, 2, 3, 4])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_png_encoder_round_trips_through_pillow_across_bands(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             channels: int, dtype: type) -> None:
    """write_png filters every row against the one above, across the bands it compresses separately."""
    monkeypatch.setattr(pio, "PNG_BAND_BYTES", 100)  # a few rows per band
    top = np.iinfo(dtype).max
    values = np.random.default_rng(channels).integers(0, top + 1, (23, 7, channels)).astype(dtype)
    path = tmp_path / "out.png"
    with open(path, "wb") as file:
        pio.write_png(file, values, level=1)
    with Image.open(path) as im:
        im.load()
        if dtype == np.uint8:
            decoded = np.asarray(im).reshape(values.shape)
            assert im.mode == {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}[channels]
            assert np.array_equal(decoded, values)
    loaded = read_image(path)
    assert loaded.bit_depth == (8 if dtype == np.uint8 else 16)
    first = torch.from_numpy(values[..., 0].astype(np.int64))
    assert torch.equal((loaded.rgb[0, 0] * top).round().to(torch.int64), first)


# --- modes and metadata ------------------------------------------------------------------------------------

def test_rgba_and_la(tmp_path: Path) -> None:
    rgba = np.random.default_rng(5).integers(0, 256, (4, 6, 4)).astype(np.uint8)
    Image.fromarray(rgba).save(tmp_path / "rgba.png")
    loaded = read_image(tmp_path / "rgba.png")
    assert torch.equal(loaded.alpha[0, 0], torch.from_numpy(rgba[..., 3] / 255).float())
    assert torch.equal(loaded.rgb[0], torch.from_numpy(rgba[..., :3] / 255).float().permute(2, 0, 1))
    Image.fromarray(rgba[..., :2]).save(tmp_path / "la.png")  # (H,W,2) uint8 -> LA
    loaded = read_image(tmp_path / "la.png")
    assert loaded.grayscale and torch.equal(loaded.rgb[0, 1], torch.from_numpy(rgba[..., 0] / 255).float())
    assert torch.equal(loaded.alpha[0, 0], torch.from_numpy(rgba[..., 1] / 255).float())


def test_palette_with_transparency(tmp_path: Path) -> None:
    image = Image.new("P", (3, 2))
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    image.putdata([0, 1, 2, 2, 1, 0])
    image.save(tmp_path / "p.png", transparency=1)
    loaded = read_image(tmp_path / "p.png")
    assert not loaded.grayscale and loaded.bit_depth == 8
    assert loaded.alpha[0, 0].tolist() == [[1, 0, 1], [1, 0, 1]]
    assert loaded.rgb[0, :, 0, 0].tolist() == [1, 0, 0] and loaded.rgb[0, :, 1, 0].tolist() == [0, 0, 1]


def test_palette_without_transparency_has_no_alpha(tmp_path: Path) -> None:
    Image.fromarray(np.arange(12, dtype=np.uint8).reshape(3, 4) * 20).convert("P").save(tmp_path / "p.png")
    loaded = read_image(tmp_path / "p.png")
    assert loaded.alpha is None and loaded.rgb.shape == (1, 3, 3, 4) and loaded.rgb.max() > 0.8


def test_bilevel_and_gray_with_transparency(tmp_path: Path) -> None:
    Image.fromarray(np.array([[0, 255], [255, 0]], np.uint8)).convert("1").save(tmp_path / "one.png")
    loaded = read_image(tmp_path / "one.png")
    assert loaded.grayscale and loaded.rgb[0, 0].tolist() == [[0, 1], [1, 0]]
    Image.fromarray(np.array([[0, 10, 20]], np.uint8)).save(tmp_path / "t.png", transparency=10)
    assert read_image(tmp_path / "t.png").alpha[0, 0].tolist() == [[1, 0, 1]]


def test_cmyk_jpeg_becomes_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (8, 8), (255, 0, 0, 0)).save(tmp_path / "cmyk.jpg", quality=100)  # pure cyan
    loaded = read_image(tmp_path / "cmyk.jpg")
    assert loaded.rgb.shape == (1, 3, 8, 8)
    assert torch.allclose(loaded.rgb.mean((0, 2, 3)), torch.tensor([0.0, 1.0, 1.0]), atol=0.03)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_matches_pillow(tmp_path: Path, orientation: int) -> None:
    pixels = np.random.default_rng(orientation).integers(0, 256, (3, 5, 3)).astype(np.uint8)
    exif = Image.Exif()
    exif[0x0112] = orientation
    Image.fromarray(pixels).save(tmp_path / "o.png", exif=exif)
    with Image.open(tmp_path / "o.png") as im:
        expected = np.asarray(ImageOps.exif_transpose(im))
    loaded = read_image(tmp_path / "o.png")
    assert np.array_equal(np.rint(loaded.rgb[0].permute(1, 2, 0).numpy() * 255).astype(np.uint8), expected)


def test_exif_rotated_jpeg_is_transposed(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    image = np.zeros((4, 8, 3), np.uint8)
    image[:, :4] = 255  # left half white; rotated 90 degrees clockwise it becomes the top half
    Image.fromarray(image).save(tmp_path / "r.jpg", exif=exif, quality=95)
    loaded = read_image(tmp_path / "r.jpg")
    assert loaded.rgb.shape == (1, 3, 8, 4)
    assert loaded.rgb[0, :, :3].mean() > 0.9 and loaded.rgb[0, :, 5:].mean() < 0.1


def test_one_pixel(tmp_path: Path) -> None:
    write_image(tmp_path / "p.png", torch.tensor([0.2, 0.4, 0.6]).view(1, 3, 1, 1))
    loaded = read_image(tmp_path / "p.png")
    assert torch.allclose(loaded.rgb.flatten(), torch.tensor([51, 102, 153]) / 255)


# --- bad inputs --------------------------------------------------------------------------------------------

def encoded(fmt: str) -> bytes:
    """A 64x64 noise image (no run of bytes to compress) encoded as `fmt`."""
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)).save(buffer, fmt)
    return buffer.getvalue()


@pytest.mark.parametrize("name, content, reason", [
    ("empty.png", b"", "empty file"),
    ("text.png", b"hello, I am not a picture\n", "not a readable PNG, JPEG, BMP, TIFF or WebP image"),
    ("truncated.png", encoded("PNG")[:6000], "truncated"),
    ("truncated.jpg", encoded("JPEG")[:1500], "truncated"),
    ("header-only.png", encoded("PNG")[:33], ""),
])
def test_unreadable_files_are_one_line_errors(tmp_path: Path, name: str, content: bytes, reason: str) -> None:
    (tmp_path / name).write_bytes(content)
    assert reason in one_line_error(tmp_path / name)


def test_missing_directory_and_unsupported(tmp_path: Path) -> None:
    assert one_line_error(tmp_path / "nope.png").endswith("no such file")
    assert one_line_error(tmp_path).endswith("it is a directory")
    Image.new("RGB", (2, 2)).save(tmp_path / "a.gif")
    assert "GIF is not supported" in one_line_error(tmp_path / "a.gif")


def test_decompression_bomb_refused_from_header(tmp_path: Path) -> None:
    """A 60000x60000 header with almost no data: refused before decoding, naming the size and the flag."""
    (tmp_path / "bomb.png").write_bytes(png_bytes(60000, 60000, 8, 2, b"\x00" * 100))
    message = one_line_error(tmp_path / "bomb.png")
    assert "60000x60000" in message and "--max-pixels" in message


def test_max_pixels_is_adjustable(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", random_rgb(10, 10))
    assert "100 pixels" in one_line_error(tmp_path / "a.png", max_pixels=99)
    assert read_image(tmp_path / "a.png", max_pixels=100).rgb.shape == (1, 3, 10, 10)


# --- writing -----------------------------------------------------------------------------------------------

def test_write_refusals(tmp_path: Path) -> None:
    write_image(tmp_path / "a.png", random_rgb())
    before = (tmp_path / "a.png").read_bytes()
    with pytest.raises(InputError, match="exists"):
        write_image(tmp_path / "a.png", random_rgb(seed=2))
    assert (tmp_path / "a.png").read_bytes() == before
    write_image(tmp_path / "a.png", random_rgb(seed=2), overwrite=True)
    assert (read_image(tmp_path / "a.png").rgb - random_rgb(seed=2)).abs().max() < 1 / 255
    (tmp_path / "d.png").mkdir()
    with pytest.raises(InputError, match="directory"):
        write_image(tmp_path / "d.png", random_rgb(), overwrite=True)
    for name, kwargs, match in [("a.gif", {}, "suffix"), ("a.jpg", {"bit_depth": 16}, "16-bit"),
                                ("a.png", {"bit_depth": 12, "overwrite": True}, "bit depth"),
                                ("a.jpg", {"alpha": torch.ones(1, 1, 9, 13)}, "alpha"),
                                ("a.bmp", {"alpha": torch.ones(1, 1, 9, 13)}, "alpha")]:
        with pytest.raises(InputError, match=match):
            write_image(tmp_path / name, random_rgb(), **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "d.png"]


def test_write_creates_parents_and_clamps(tmp_path: Path) -> None:
    target = tmp_path / "new" / "deeper" / "x.png"
    write_image(target, torch.tensor([-1.0, 0.5, 7.0]).view(3, 1, 1))
    assert read_image(target).rgb.flatten().tolist() == pytest.approx([0.0, 128 / 255, 1.0], abs=1e-7)


def test_write_rejects_nan(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="NaN pixels"):
        write_image(tmp_path / "n.png", torch.full((3, 2, 2), float("nan")))
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(("suffix", "bit_depth"), [("png", 8), ("png", 16), ("tif", 8)])
@pytest.mark.parametrize("existing", [False, True])
def test_failed_write_leaves_nothing_behind(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str,
                                            bit_depth: int, existing: bool) -> None:
    target = tmp_path / f"out.{suffix}"
    if existing:
        target.write_bytes(b"old")

    def broken_encoder(file_or_image: object, fp: object, *args: object, **kwargs: object) -> None:
        if isinstance(fp, (str, Path)):
            Path(fp).write_bytes(b"\x89PNG partial")
        else:
            fp.write(b"\x89PNG partial")
        raise RuntimeError("disk on fire")

    if suffix == "png":  # PNGs are encoded by write_png, the other formats by Pillow
        monkeypatch.setattr(pio, "write_png", lambda file, samples, **options: broken_encoder(None, file))
    else:
        monkeypatch.setattr(Image.Image, "save", broken_encoder)
    with pytest.raises(RuntimeError, match="disk on fire"):
        write_image(target, random_rgb(), bit_depth=bit_depth, overwrite=existing)
    assert [p.name for p in tmp_path.iterdir()] == ([target.name] if existing else [])
    if existing:
        assert target.read_bytes() == b"old"


def test_atomic_output(tmp_path: Path) -> None:
    target = tmp_path / "sub" / "state.bin"
    with atomic_output(target) as temp:
        assert temp.parent == target.parent and temp != target and not target.exists()
        temp.write_bytes(b"new")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["state.bin"]
    with pytest.raises(KeyError), atomic_output(target, overwrite=True) as temp:
        temp.write_bytes(b"half")
        raise KeyError("interrupted")
    assert target.read_bytes() == b"new" and [p.name for p in target.parent.iterdir()] == ["state.bin"]
    with pytest.raises(InputError, match="exists"), atomic_output(target):
        pass


# --- listing and alpha ------------------------------------------------------------------------------------

def test_list_images(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    for name in ["b.JPG", "a.png", "notes.txt", ".hidden.png", "c.webp"]:
        (folder / name).write_bytes(b"x")
    (folder / "sub").mkdir()
    (folder / "sub" / "deep.png").write_bytes(b"x")
    (tmp_path / "z.tif").write_bytes(b"x")
    found = list_images([tmp_path / "z.tif", str(folder)])
    assert [p.name for p in found] == ["z.tif", "a.png", "b.JPG", "c.webp"]


def test_list_images_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / "a.jpg").write_bytes(b"x")
    for inputs, match in [([tmp_path / "missing"], "no such file"), ([tmp_path / "empty"], "no images"),
                          ([tmp_path / "notes.txt"], "unsupported"), ([tmp_path], "a.png"),
                          ([tmp_path / "a.png", tmp_path / "a.png"], "both")]:
        with pytest.raises(InputError, match=match):
            list_images(inputs)


def test_upscale_alpha() -> None:
    pytest.importorskip("perceptsr.data.resize")
    alpha = torch.zeros(1, 1, 6, 8)
    alpha[..., 3:, :] = 1  # a hard edge: bicubic overshoots it, the result must not
    up = upscale_alpha(alpha, 4)
    assert up.shape == (1, 1, 24, 32)
    assert up.min() == 0 and up.max() == 1
    assert up[..., :8, :].eq(0).all() and up[..., 16:, :].eq(1).all()
    below, above = up[0, 0, 11], up[0, 0, 12]  # either side of the edge, symmetric about 1/2
    assert (below > 0.2).all() and (above < 0.8).all() and torch.allclose(below + above, torch.ones(32))
    assert torch.equal(upscale_alpha(torch.full((1, 1, 3, 3), 0.25), 2), torch.full((1, 1, 6, 6), 0.25))


# --- floating-point TIFFs, colour profiles, frames, output size --------------------------------------------

@pytest.mark.parametrize(("top", "divisor"), [(1.0, 1.0), (255.0, 255.0)])
def test_float_tiff_range_is_detected(tmp_path: Path, top: float, divisor: float) -> None:
    values = np.linspace(0, top, 12, dtype=np.float32).reshape(3, 4)
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    loaded = read_image(tmp_path / "f.tif")
    assert loaded.grayscale
    torch.testing.assert_close(loaded.rgb[0, 0], torch.from_numpy(values / divisor), rtol=0, atol=1e-7)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), 1000.0])
def test_float_tiff_with_nan_inf_or_unknown_range_is_one_line(tmp_path: Path, bad: float) -> None:
    values = np.full((3, 4), 0.5, np.float32)
    values[1, 2] = bad
    Image.fromarray(values, mode="F").save(tmp_path / "f.tif")
    one_line_error(tmp_path / "f.tif")


def icc_rgb_profile(colorants: tuple, gamma: float = 2.2, name: str = "test wide RGB") -> bytes:
    """A minimal ICC v2 matrix/TRC RGB display profile (D50 colorant columns), for tagged test images."""
    def s15(*values: float) -> bytes:
        return b"".join(struct.pack(">i", round(v * 65536)) for v in values)

    def xyz(*values: float) -> bytes:
        return b"XYZ \0\0\0\0" + s15(*values)

    text = name.encode("ascii") + b"\0"
    desc = b"desc\0\0\0\0" + struct.pack(">I", len(text)) + text + b"\0" * 8 + b"\0" * 3 + b"\0" * 67
    curve = b"curv\0\0\0\0" + struct.pack(">IH", 1, round(gamma * 256)) + b"\0\0"
    tags = [(b"desc", desc), (b"wtpt", xyz(0.9642, 1.0, 0.8249)), (b"cprt", b"text\0\0\0\0none\0\0\0\0"),
            (b"rXYZ", xyz(*colorants[0])), (b"gXYZ", xyz(*colorants[1])), (b"bXYZ", xyz(*colorants[2])),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset = 128 + 4 + 12 * len(tags)
    table, data = struct.pack(">I", len(tags)), b""
    for signature, body in tags:
        body += b"\0" * (-len(body) % 4)
        table += signature + struct.pack(">II", offset + len(data), len(body))
        data += body
    size = offset + len(data)
    header = (struct.pack(">I", size) + b"\0" * 4 + struct.pack(">I", 0x02100000) + b"mntrRGB XYZ " + b"\0" * 12
              + b"acsp" + b"\0" * 28 + s15(0.9642, 1.0, 0.8249) + b"\0" * 48)
    return header + table + data


ADOBE_RGB_D50 = ((0.6097, 0.3111, 0.0195), (0.2053, 0.6257, 0.0609), (0.1492, 0.0632, 0.7446))


def test_an_embedded_icc_profile_is_converted_to_srgb(tmp_path: Path) -> None:
    from PIL import ImageCms

    pixels = (np.arange(4 * 6 * 3).reshape(4, 6, 3) * 37 % 256).astype(np.uint8)
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
    Image.fromarray(pixels).save(tmp_path / "tagged-srgb.png", icc_profile=srgb.tobytes())
    as_stored = torch.from_numpy(pixels / 255).float().permute(2, 0, 1).unsqueeze(0)
    assert torch.equal(read_image(tmp_path / "tagged-srgb.png").rgb, as_stored)
    wide = icc_rgb_profile(ADOBE_RGB_D50)
    for suffix in (".png", ".jpg", ".webp", ".tif"):
        path = tmp_path / f"wide{suffix}"
        Image.fromarray(pixels).save(path, icc_profile=wide, **({"quality": 100} if suffix == ".jpg" else {}))
        with Image.open(path) as stored:
            expected = ImageCms.profileToProfile(stored.convert("RGB"), ImageCms.ImageCmsProfile(io.BytesIO(wide)),
                                                 srgb, outputMode="RGB")
        loaded = read_image(path).rgb
        assert torch.equal(loaded, torch.from_numpy(np.asarray(expected) / 255).float().permute(2, 0, 1)[None])
        if suffix == ".png":
            assert (loaded - as_stored).abs().max() > 0.05  # the conversion really changed the colours


def test_a_broken_icc_profile_is_ignored(tmp_path: Path) -> None:
    pixels = np.full((2, 3, 3), 100, np.uint8)
    Image.fromarray(pixels).save(tmp_path / "x.png", icc_profile=b"not a profile at all")
    assert torch.allclose(read_image(tmp_path / "x.png").rgb, torch.full((1, 3, 2, 3), 100 / 255))


def test_animations_are_refused_and_multipage_tiffs_use_frame_0(tmp_path: Path,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    frames = [Image.fromarray(np.full((4, 4, 3), v, np.uint8)) for v in (10, 200)]
    frames[0].save(tmp_path / "a.png", save_all=True, append_images=frames[1:])
    frames[0].save(tmp_path / "a.webp", save_all=True, append_images=frames[1:], lossless=True)
    for name in ("a.png", "a.webp"):
        assert "animation of 2 frames" in one_line_error(tmp_path / name)
    frames[0].save(tmp_path / "pages.tif", save_all=True, append_images=frames[1:])
    with caplog.at_level("WARNING"):
        loaded = read_image(tmp_path / "pages.tif")
    assert torch.allclose(loaded.rgb, torch.full((1, 3, 4, 4), 10 / 255))
    assert "has 2 frames" in caplog.text


def test_output_size_is_checked_against_memory() -> None:
    pio.check_output_size(100, 100, 4, available=100 * 100 * 16 * 3 * 16)
    with pytest.raises(InputError, match=r"56000x56000 = 3,136,000,000 pixels") as error:
        pio.check_output_size(7000, 7000, 8, what="big.png", available=8 << 30)
    assert "\n" not in str(error.value)
