"""Image files <-> canonical tensors: the only place where images change format.

In the package an image is float32 (1,3,H,W) RGB in [0,1]. This module reads PNG, JPEG, BMP, TIFF and WebP
into that form (EXIF orientation applied; grayscale replicated to 3 channels; alpha split off; 16-bit kept
at 16-bit precision) and writes it back, atomically, so an interrupted run never leaves a half-written
output behind. Pillow cannot hold 16-bit RGB(A) in memory, so those PNGs are decoded in two passes (high
bytes, then low bytes) and written with the small PNG encoder at the bottom of this file.

Hostile or unusual files: a floating-point TIFF is read with its range detected (values up to 1 are 0-1 data,
larger ones 0-255 data, divided by 255; negatives clip to 0) and NaN or infinite pixels are an InputError. An
embedded ICC profile other than sRGB is converted to sRGB on read (8-bit colour images; outputs are written as
sRGB, untagged). Animated PNG/WebP is refused; other multi-frame files (MPO photos, multi-page TIFF) use their
first frame with a one-line warning. `check_output_size` refuses an upscale whose result cannot fit in memory.
"""

from __future__ import annotations

import io
import logging
import os
import re
import secrets
import signal
import struct
import threading
import time
import zlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from perceptsr.errors import InputError

log = logging.getLogger(__name__)

SUPPORTED_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
DEFAULT_MAX_PIXELS = 50_000_000
# BT.601 luma, the weights of Pillow's convert("L"): a grayscale output is the luma of the RGB result.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)

# read_image checks the pixel count from the header itself (with a message naming --max-pixels), so Pillow's
# own decompression-bomb warning/error is switched off.
Image.MAX_IMAGE_PIXELS = None

_READ_FORMATS = {"PNG", "JPEG", "MPO", "BMP", "DIB", "TIFF", "WEBP"}
_WRITE_FORMATS = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF",
                  ".tiff": "TIFF", ".webp": "WEBP"}
_NO_ALPHA = {"JPEG", "BMP"}  # Pillow reads a 32-bit BMP back without its alpha
_SAVE_OPTIONS = {"JPEG": {"quality": 95, "subsampling": 0}, "WEBP": {"quality": 95}}
_GRAY16_MODES = {"I;16", "I;16B", "I;16L", "I;16N", "I"}
# EXIF orientation -> numpy ops on (H, W, C); equal to what ImageOps.exif_transpose does (tested).
_ORIENT = {
    2: lambda a: a[:, ::-1],
    3: lambda a: a[::-1, ::-1],
    4: lambda a: a[::-1],
    5: lambda a: a.transpose(1, 0, 2),
    6: lambda a: np.rot90(a, -1),
    7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
    8: lambda a: np.rot90(a, 1),
}


@dataclass
class LoadedImage:
    """A decoded image: rgb (1,3,H,W) and alpha (1,1,H,W) float32 in [0,1], and what write_image needs."""

    rgb: Tensor
    alpha: Tensor | None
    grayscale: bool
    bit_depth: int
    path: Path


def read_image(path: str | Path, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> LoadedImage:
    """Decode an image file; any unreadable file raises InputError("cannot read image <path>: <reason>")."""
    path = Path(path)
    try:
        with Image.open(path) as im:
            if im.format not in _READ_FORMATS:
                raise InputError(f"cannot read image {path}: {im.format} is not supported "
                                 f"(use PNG, JPEG, BMP, TIFF or WebP)")
            width, height = im.size
            _check_frames(im, path)
            if width * height > max_pixels:
                raise InputError(f"cannot read image {path}: {width}x{height} = {width * height:,} pixels is "
                                 f"over the limit of {max_pixels:,} (raise it with --max-pixels)")
            pixels, depth, grayscale = _decode(im, path)
            orientation = _orientation(im, path)
    except InputError:
        raise
    except Exception as error:  # Pillow reports corrupt data with many types; all mean "unusable file"
        raise InputError(f"cannot read image {path}: {_reason(path, error)}") from error
    if orientation in _ORIENT:
        pixels = _ORIENT[orientation](pixels)
    tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1))).unsqueeze(0)
    color = tensor[:, :1].expand(-1, 3, -1, -1) if grayscale else tensor[:, :3]
    alpha = tensor[:, -1:].clone() if tensor.shape[1] in (2, 4) else None
    return LoadedImage(rgb=color.contiguous(), alpha=alpha, grayscale=grayscale, bit_depth=depth, path=path)


def _check_frames(im: Image.Image, path: Path) -> None:
    """Animations are refused (which frame would be meant?); other multi-frame files use frame 0, with a warning."""
    frames = getattr(im, "n_frames", 1)
    if frames <= 1:
        return
    if getattr(im, "is_animated", False) and im.format in ("PNG", "WEBP"):
        raise InputError(f"cannot read image {path}: it is an animation of {frames} frames (extract one frame)")
    log.warning("%s has %d frames (%s); using the first", path, frames, im.format)


def _is_srgb(icc: bytes | None) -> bool:
    """True for no profile (untagged means sRGB), an sRGB profile, or one that cannot be parsed."""
    if not icc:
        return True
    try:
        from PIL import ImageCms

        description = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))) or ""
    except Exception:  # noqa: BLE001 - a damaged profile is ignored (with a warning where it would be applied)
        return False
    return "srgb" in description.lower().replace(" ", "")


def _to_srgb(im: Image.Image, path: Path) -> Image.Image:
    """`im` (RGB, RGBA or CMYK) with its embedded ICC profile converted to sRGB; untagged or sRGB: unchanged."""
    icc = im.info.get("icc_profile")
    if _is_srgb(icc):
        return im
    try:
        from PIL import ImageCms

        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        mode = "RGBA" if im.mode == "RGBA" else "RGB"
        return ImageCms.profileToProfile(im, source, ImageCms.createProfile("sRGB"), outputMode=mode)
    except Exception as error:  # a damaged or unsupported profile: the pixels are still usable as they are
        log.warning("%s: ignoring its ICC profile (%s)", path, str(error).splitlines()[0] if str(error) else error)
        return im


def _orientation(im: Image.Image, path: Path) -> int:
    """The EXIF orientation tag (1 = as stored); broken EXIF is logged and ignored, the pixels are fine."""
    try:
        return int(im.getexif().get(0x0112, 1))
    except Exception as error:  # EXIF parsing fails in many ways on damaged metadata
        log.warning("%s: ignoring unreadable EXIF (%s)", path, error)
        return 1


def _reason(path: Path, error: Exception) -> str:
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, IsADirectoryError) or path.is_dir():
        return "it is a directory"
    if isinstance(error, PermissionError):
        return "permission denied"
    if isinstance(error, Image.UnidentifiedImageError):
        if path.stat().st_size == 0:
            return "empty file"
        return "not a readable PNG, JPEG, BMP, TIFF or WebP image"
    text = str(error).strip().splitlines()
    return text[0] if text else type(error).__name__


def _decode(im: Image.Image, path: Path) -> tuple[np.ndarray, int, bool]:
    """Pixels float32 (H,W,C) in [0,1], C in 1..4 (gray, gray+alpha, RGB, RGBA); bit depth; grayscale."""
    rawmode = _png_rawmode(im)
    if rawmode in ("RGB;16B", "RGBA;16B", "LA;16B"):
        if rawmode != "LA;16B" and not _is_srgb(im.info.get("icc_profile")):
            log.warning("%s: its ICC profile is not applied (16-bit); colours are read as sRGB", path)
        return _decode_png16_color(im, path, rawmode), 16, rawmode == "LA;16B"
    mode = im.mode
    if mode in _GRAY16_MODES:
        raw = np.asarray(im).astype(np.float32)
        gray = np.clip(raw, 0, 65535)[..., None] / 65535
        return _with_transparency(im, raw, gray), 16, True
    if mode == "F":
        return _float_pixels(np.asarray(im, dtype=np.float32), path)[..., None], 16, True
    if mode in ("1", "L", "LA", "La"):
        target = "LA" if mode in ("LA", "La") or "transparency" in im.info else "L"
        return _as_float8(im.convert(target)), 8, True
    has_alpha = mode in ("RGBA", "RGBa", "PA") or "transparency" in im.info
    if mode in ("RGB", "RGBA", "CMYK") and im.info.get("icc_profile"):
        im = _to_srgb(im, path)
    return _as_float8(im.convert("RGBA" if has_alpha else "RGB")), 8, False


def _float_pixels(values: np.ndarray, path: Path) -> np.ndarray:
    """Floating-point samples to [0,1]: 0-1 data as it is, 0-255 data (any value above 1) divided by 255."""
    if not np.isfinite(values).all():
        raise InputError(f"cannot read image {path}: it holds NaN or infinite pixel values")
    top = float(values.max(initial=0.0))
    if top > 1.0 + 1e-3:
        if top > 255.0 + 1e-3:
            raise InputError(f"cannot read image {path}: floating-point pixels up to {top:g} (expected 0-1 or "
                             f"0-255)")
        values = values / 255.0
    return np.clip(values, 0, 1)


def _as_float8(im: Image.Image) -> np.ndarray:
    array = np.asarray(im, dtype=np.float32) / 255
    return array[..., None] if array.ndim == 2 else array


def _with_transparency(im: Image.Image, raw: np.ndarray, gray: np.ndarray) -> np.ndarray:
    key = im.info.get("transparency")
    if not isinstance(key, int):
        return gray
    return np.concatenate([gray, (raw != key).astype(np.float32)[..., None]], axis=-1)


def _png_rawmode(im: Image.Image) -> str | None:
    if im.format != "PNG" or len(im.tile) != 1 or not isinstance(im.tile[0][3], str):
        return None
    return im.tile[0][3]


def _with_rawmode(im: Image.Image, rawmode: str) -> np.ndarray:
    """Decode `im` with another unpacker (PNG filters work per byte, so one of equal width is exact)."""
    tile = im.tile[0]
    im.tile = [tile._replace(args=rawmode) if hasattr(tile, "_replace") else (*tile[:3], rawmode)]
    im.load()
    return np.asarray(im).astype(np.uint16)


def _decode_png16_color(im: Image.Image, path: Path, rawmode: str) -> np.ndarray:
    """Full-precision 16-bit RGB / RGBA / gray+alpha PNG as float32 (H,W,C) / 65535.

    Pillow only keeps the high byte of these. Its "RGB;16L"/"RGBA;16L" unpackers take the other byte of each
    sample, so a second decode pass gives the low bytes. Gray+alpha (4 bytes per pixel) is unpacked raw as
    "RGBA".
    """
    if rawmode == "LA;16B":
        data = _with_rawmode(im, "RGBA")
        values = np.stack([data[..., 0] << 8 | data[..., 1], data[..., 2] << 8 | data[..., 3]], axis=-1)
    else:
        high = _with_rawmode(im, rawmode)
        with Image.open(path) as again:
            low = _with_rawmode(again, rawmode.replace(";16B", ";16L"))
        values = high << 8 | low
    transparency = im.info.get("transparency")
    pixels = values.astype(np.float32) / 65535
    if rawmode == "RGB;16B" and isinstance(transparency, tuple):
        # tRNS holds a 16-bit key colour; Pillow reports it as given in the file
        alpha = np.any(values != np.asarray(transparency, dtype=np.uint16), axis=-1).astype(np.float32)
        pixels = np.concatenate([pixels, alpha[..., None]], axis=-1)
    return pixels


def write_image(path: str | Path, rgb: Tensor, *, alpha: Tensor | None = None, grayscale: bool = False,
                bit_depth: int = 8, overwrite: bool = False, png_level: int | None = None) -> None:
    """Write rgb (1,3,H,W) or (3,H,W), any range (clamped to [0,1]), atomically; the suffix picks the format.
    png_level: zlib level 0-9 of a PNG (default 6, as Pillow's; written by write_png).

    grayscale=True writes one channel, the BT.601 luma (LUMA_WEIGHTS). alpha (1,1,H,W) must already be at the
    output size. bit_depth 16 is PNG only. An existing file is an InputError unless overwrite=True.
    """
    write_samples(path, image_samples(path, rgb, alpha=alpha, grayscale=grayscale, bit_depth=bit_depth),
                  overwrite=overwrite, png_level=png_level)


def has_nan(values: Tensor) -> bool:
    """Whether any element is NaN, in one pass over a clean tensor (its sum is NaN only if some element is NaN
    or +inf and -inf are both there; only then is every element looked at)."""
    return bool(torch.isnan(values.sum())) and bool(torch.isnan(values).any())


def image_samples(path: str | Path, rgb: Tensor, *, alpha: Tensor | None = None, grayscale: bool = False,
                  bit_depth: int = 8) -> np.ndarray:
    """write_image's checks and its conversion to integer samples (H,W,C), the part that runs torch ops.

    A pipeline converts in its compute thread and writes (write_samples) in another: torch ops in a second
    thread start a second team of worker threads, which on a 2-core machine slowed the forward beside it.
    """
    path = Path(path)
    fmt = _WRITE_FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise InputError(f"cannot write {path}: unsupported suffix '{path.suffix}' "
                         f"(use one of {', '.join(SUPPORTED_SUFFIXES)})")
    if bit_depth not in (8, 16):
        raise InputError(f"cannot write {path}: bit depth must be 8 or 16, not {bit_depth}")
    if bit_depth == 16 and fmt != "PNG":
        raise InputError(f"cannot write {path}: 16-bit output needs a .png file")
    if alpha is not None and fmt in _NO_ALPHA:
        raise InputError(f"cannot write {path}: {fmt} has no alpha channel (write a .png, .tif or .webp)")
    if has_nan(rgb.detach()):
        raise InputError(f"cannot write {path}: the result has NaN pixels (a numerical failure, e.g. fp16 "
                         f"overflow: try --precision fp32)")
    return _to_samples(rgb, alpha, grayscale, bit_depth, nan_checked=True)


def write_samples(path: str | Path, samples: np.ndarray, *, overwrite: bool = False,
                  png_level: int | None = None) -> None:
    """Encode image_samples(path, ...) into path atomically (no torch ops: numpy, zlib and Pillow)."""
    path = Path(path)
    fmt = _WRITE_FORMATS[path.suffix.lower()]
    with atomic_output(path, overwrite=overwrite) as temp:
        try:
            if fmt == "PNG":
                with open(temp, "wb") as file:
                    write_png(file, samples, level=6 if png_level is None else png_level)
            else:
                image = Image.fromarray(samples.squeeze(-1) if samples.shape[-1] == 1 else samples)
                if image.mode == "LA":
                    image = image.convert("RGBA")
                image.save(temp, format=fmt, **_SAVE_OPTIONS.get(fmt, {}))
        except OSError as error:
            raise InputError(f"cannot write {path}: {error}") from error


def _to_samples(rgb: Tensor, alpha: Tensor | None, grayscale: bool, bit_depth: int, *,
                nan_checked: bool = False) -> np.ndarray:
    """Integer samples (H,W,C): C = 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA. `nan_checked`: the caller has refused
    NaN already (image_samples), so the pixels are not looked at again."""
    if rgb.dim() == 4 and rgb.shape[0] == 1:
        rgb = rgb[0]
    if rgb.dim() != 3 or rgb.shape[0] != 3:
        raise ValueError(f"write_image needs rgb of shape (1,3,H,W) or (3,H,W), got {tuple(rgb.shape)}")
    channels = rgb.detach().to("cpu", torch.float32)
    if not nan_checked and has_nan(channels):
        raise ValueError("write_image got NaN pixels (a numerical failure upstream, e.g. fp16 overflow)")
    if grayscale:
        weights = torch.tensor(LUMA_WEIGHTS).view(3, 1, 1)
        channels = (channels.clamp(0, 1) * weights).sum(0, keepdim=True)
    if alpha is not None:
        alpha = alpha.detach().to("cpu", torch.float32).reshape(-1, *alpha.shape[-2:])
        if alpha.shape != (1, *channels.shape[-2:]):
            raise ValueError(f"alpha {tuple(alpha.shape)} does not match the image size "
                             f"{tuple(channels.shape[-2:])}")
        channels = torch.cat([channels, alpha])
    top = 255 if bit_depth == 8 else 65535
    scaled = channels.clamp(0, 1).mul_(top).round_().permute(1, 2, 0)  # one image-sized float copy, not three
    if bit_depth == 8:
        return scaled.to(torch.uint8).contiguous().numpy()
    return np.ascontiguousarray(scaled.numpy().astype(np.uint16))


PNG_BAND_BYTES = 1 << 22  # rows filtered and compressed at a time, in bytes
try:  # ISA-L's deflate: zlib's format, several times faster at levels 1-3 (write_png)
    from isal import isal_zlib as fast_deflate
except ImportError:  # a platform without its wheel: zlib
    fast_deflate = None


def write_png(file: BinaryIO, samples: np.ndarray, *, level: int = 6) -> None:
    """Encode uint8 or uint16 (H,W,C) samples, C in 1..4, as an 8- or 16-bit PNG (Pillow cannot write 16-bit
    RGB(A) or LA, and its 8-bit encoder tries five filters on every row).

    Every row takes PNG's Up filter (its difference from the row above), which compresses photographs about as
    well as Pillow's per-row choice in less time. Levels 1-3 deflate with ISA-L (the `isal` package) where it is
    installed: on a 16-MP photo-like image, filtered, ISA-L level 1 took 0.13 s for 29.6 MB where zlib level 1
    took 0.68 s for 31.1 MB and zlib 6 1.53 s for 30.8 MB (2-core AMX Xeon). Level 0 stores; 4-9 are zlib's.
    Rows are filtered and compressed in bands, so memory stays at one band of rows.
    """
    height, width, channels = samples.shape
    depth = 16 if samples.dtype == np.uint16 else 8
    color_type = {1: 0, 2: 4, 3: 2, 4: 6}[channels]

    def chunk(kind: bytes, data: bytes) -> None:
        file.write(struct.pack(">I", len(data)) + kind + data)
        file.write(struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    def row_bytes(rows: np.ndarray) -> np.ndarray:
        rows = rows.astype(">u2") if depth == 16 else rows
        return np.ascontiguousarray(rows).reshape(rows.shape[0], -1).view(np.uint8)

    file.write(b"\x89PNG\r\n\x1a\n")
    chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, depth, color_type, 0, 0, 0))
    compressor = (fast_deflate if fast_deflate is not None and 1 <= level <= 3 else zlib).compressobj(level)
    band = max(1, PNG_BAND_BYTES // max(1, width * channels * depth // 8))
    above = np.zeros((1, width * channels * depth // 8), np.uint8)
    for top in range(0, height, band):
        rows = row_bytes(samples[top:top + band])
        filtered = np.empty((rows.shape[0], rows.shape[1] + 1), np.uint8)
        filtered[:, 0] = 2  # filter type Up
        np.subtract(rows, np.concatenate([above, rows[:-1]]), out=filtered[:, 1:])  # modulo 256, as PNG wants
        above = rows[-1:]
        data = compressor.compress(filtered.tobytes())
        if data:
            chunk(b"IDAT", data)
    chunk(b"IDAT", compressor.flush())
    chunk(b"IEND", b"")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# Temporary files are `.NAME.<pid>.<8 hex>.tmp` beside their target. A SIGTERM while one exists removes it before
# the process ends; a kill that cannot be caught leaves it, and the next write into that folder removes it once its
# process is gone. (`.NAME.<8 hex>.tmp`, the name before the pid was added, is removed after an hour.)
_TEMP = re.compile(r"^\..+?\.(?:(\d+)\.)?[0-9a-f]{8}\.tmp$")
_LIVE: set[Path] = set()
_SWEPT: set[Path] = set()
_GUARD = threading.Lock()
_STALE_SECONDS = 3600


def _on_sigterm(signum: int, frame: object) -> None:
    """Remove this process's temporary outputs, then end as SIGTERM would have."""
    for temp in list(_LIVE):
        temp.unlink(missing_ok=True)
    signal.signal(signum, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def _track(temp: Path) -> None:
    with _GUARD:
        _LIVE.add(temp)
        if threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _on_sigterm)  # a program with its own handler keeps it (and cleans up)


def _untrack(temp: Path) -> None:
    with _GUARD:
        _LIVE.discard(temp)
        if not _LIVE and threading.current_thread() is threading.main_thread() \
                and signal.getsignal(signal.SIGTERM) is _on_sigterm:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def clean_stale_temps(folder: Path) -> list[Path]:
    """Remove temporary files this tool left in `folder` when killed (see above); returns what was removed."""
    removed = []
    try:
        entries = list(Path(folder).iterdir())
    except OSError:
        return removed
    now = time.time()
    for entry in entries:
        found = _TEMP.match(entry.name)
        if not found or entry in _LIVE:
            continue
        try:
            if not entry.is_file() or entry.is_symlink():
                continue
            pid = found.group(1)
            stale = not _alive(int(pid)) if pid else now - entry.stat().st_mtime > _STALE_SECONDS
            if stale:
                entry.unlink()
                removed.append(entry)
        except OSError:
            continue
    return removed


@contextmanager
def atomic_output(path: str | Path, *, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on any exception it is removed.

    Refuses (InputError) an existing directory, or an existing file unless overwrite; creates missing parents.
    The temporary file is also removed on SIGTERM, and stale ones of killed runs are removed from the folder.
    """
    path = Path(path)
    if path.is_dir():
        raise InputError(f"cannot write {path}: it is a directory")
    if path.exists() and not overwrite:
        raise InputError(f"cannot write {path}: the file exists (pass --overwrite to replace it)")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = path.parent.resolve()
        if folder not in _SWEPT:
            _SWEPT.add(folder)
            clean_stale_temps(folder)
        # O_EXCL on a random name: never clobbers another writer's temp; mode 0o666 lets the umask decide
        temp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
        os.close(os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        _track(temp)
    except OSError as error:
        raise InputError(f"cannot write {path}: {error.strerror or error}") from error
    try:
        yield temp
        if not overwrite and path.exists():
            raise InputError(f"cannot write {path}: the file appeared while writing (pass --overwrite)")
        with open(temp, "rb+") as written:
            os.fsync(written.fileno())
        # Some writers (safetensors) recreate the file as 0600: give it the ordinary umask permissions.
        os.chmod(temp, 0o666 & ~_umask())
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    finally:
        _untrack(temp)


# What an upscaled image costs until it is written: the float32 result, its clamped and scaled copies and the
# integer samples, per output pixel and channel (4 + 4 + 4 + 1 bytes), with a margin.
BYTES_PER_OUTPUT_SAMPLE = 16


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux MemAvailable, else free pages), or None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, AttributeError):
        return None


def check_output_size(width: int, height: int, scale: int, *, what: str = "the image", channels: int = 3,
                      available: int | None = None) -> None:
    """Refuse (InputError, one line) an upscale whose result cannot be held in memory, before any work is done.

    Tiling bounds the network's working memory, not the result, which is assembled whole before it is written;
    so the only remedies are a smaller input or scale, or more memory.
    """
    out_w, out_h = width * scale, height * scale
    needed = out_w * out_h * channels * BYTES_PER_OUTPUT_SAMPLE
    free = available_memory() if available is None else available
    if free is not None and needed > free:
        raise InputError(f"{what}: upscaling {width}x{height} by {scale} gives {out_w}x{out_h} = {out_w * out_h:,} "
                         f"pixels, needing about {needed / 2**30:.1f} GiB of memory but {free / 2**30:.1f} GiB is "
                         f"available; use a smaller input or scale")


def list_images(inputs: Sequence[str | Path]) -> list[Path]:
    """Expand files and folders (non-recursive, sorted, dotfiles skipped) into image paths, in input order.

    Outputs are named <stem>.png, so two inputs with the same stem are refused here, before any work is done.
    """
    paths: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            found = sorted(p for p in item.iterdir() if p.is_file() and not p.name.startswith(".")
                           and p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise InputError(f"{item}: folder has no images ({', '.join(SUPPORTED_SUFFIXES)})")
            paths.extend(found)
        elif item.is_file():
            if item.suffix.lower() not in SUPPORTED_SUFFIXES:
                raise InputError(f"{item}: unsupported image type '{item.suffix}' "
                                 f"(use one of {', '.join(SUPPORTED_SUFFIXES)})")
            paths.append(item)
        else:
            raise InputError(f"{item}: no such file or folder")
    seen: dict[str, Path] = {}
    for path in paths:
        if path.stem in seen:
            raise InputError(f"{seen[path.stem]} and {path} would both be written as {path.stem}.png")
        seen[path.stem] = path
    return paths


def upscale_alpha(alpha: Tensor, scale: int) -> Tensor:
    """Upscale an alpha map (...,H,W) by an integer scale with MATLAB bicubic, clamped to [0,1]."""
    from perceptsr.data.resize import imresize  # resize sits beside io; imported here to keep io importable alone

    return imresize(alpha, scale).clamp(0, 1)
