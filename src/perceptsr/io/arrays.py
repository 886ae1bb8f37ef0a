"""Array files read without trusting the sizes they claim: `.npy`, `.npz` and other zip archives (`torch.save`).

An `.npy` header states a shape; numpy allocates that much before reading a byte of data, so a 300-byte file
can ask for terabytes. A zip member states its inflated size; a small compressed member can inflate to
gigabytes. Here every claim is checked against the bytes actually present and a cap first: an `.npy` payload
must be exactly shape × itemsize (stored members of an `.npz` too), and the inflated total of an archive may not
exceed `max(MIN_INFLATE, RATIO × file size)` nor `max_bytes`. Numeric weights compress by less than 2×, so a
larger claimed ratio is a zip bomb, refused before anything is inflated. Every refusal is a one-line
CheckpointError (callers re-raise it as their own kind where the file is an input, not a checkpoint).
"""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path
from typing import IO

import numpy as np

from perceptsr.errors import CheckpointError

DEFAULT_MAX_BYTES = 4 << 30
MIN_INFLATE = 64 << 20
RATIO = 20


def _human(count: int) -> str:
    size = float(count)
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if size < 1024 or unit == "PiB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{count} bytes"


def npy_header(handle: IO[bytes], what: str) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, payload bytes) from an `.npy` header; the handle is left at the start of the data."""
    try:
        version = np.lib.format.read_magic(handle)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(handle, max_header_size=10000)
        elif version in ((2, 0), (3, 0)):
            shape, _, dtype = np.lib.format.read_array_header_2_0(handle, max_header_size=10000)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except Exception as error:  # numpy reports a bad header with ValueError, SyntaxError, TypeError, ...
        text = str(error).strip().splitlines()
        raise CheckpointError(f"{what}: not a readable .npy header ({text[0] if text else type(error).__name__})") \
            from None
    if dtype.hasobject:
        return shape, dtype, 0
    count = 1
    for side in shape:
        count *= int(side)
    return shape, dtype, count * dtype.itemsize


def check_npy(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
    """Refuse an `.npy` whose header claims more data than the file holds, or more than `max_bytes`."""
    path = Path(path)
    with open(path, "rb") as handle:
        shape, dtype, nbytes = npy_header(handle, str(path))
        present = path.stat().st_size - handle.tell()
    _check_claim(str(path), shape, dtype, nbytes, present, max_bytes)


def load_npy(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """`np.load(path, allow_pickle=False)` after `check_npy`; any failure is one CheckpointError line."""
    check_npy(path, max_bytes=max_bytes)
    try:
        return np.load(path, allow_pickle=False)
    except Exception as error:  # numpy reads short or pickled data with ValueError, OSError, ...
        raise CheckpointError(f"{path}: not a readable .npy file ({_first_line(error)})") from None


def check_zip(path: str | Path, *, max_bytes: int = DEFAULT_MAX_BYTES, what: str = "archive") -> None:
    """Refuse a zip whose members would inflate past the caps (module docstring); non-zips pass unchanged.

    `.npy` members are also checked header against size (stored or inflated: the inflated size is the claim).
    """
    path = Path(path)
    if not zipfile.is_zipfile(path):
        return
    size = path.stat().st_size
    limit = min(max_bytes, max(MIN_INFLATE, RATIO * size))
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            total = sum(info.file_size for info in infos)
            if total > limit:
                raise CheckpointError(
                    f"{path}: {what} would inflate to {_human(total)} from {_human(size)} (limit {_human(limit)}); "
                    "refusing it as corrupt or a zip bomb")
            for info in infos:
                if info.filename.endswith(".npy"):
                    with archive.open(info) as member:
                        shape, dtype, nbytes = npy_header(member, f"{path}: member {info.filename}")
                        present = info.file_size - member.tell()
                    _check_claim(f"{path}: member {info.filename}", shape, dtype, nbytes, present, max_bytes)
    except CheckpointError:
        raise
    except Exception as error:  # zipfile reports damage with BadZipFile, OSError, EOFError, zlib.error, ...
        raise CheckpointError(f"{path}: not a readable {what} ({_first_line(error)})") from None


def _check_claim(what: str, shape: tuple[int, ...], dtype: np.dtype, nbytes: int, present: int,
                 max_bytes: int) -> None:
    if dtype.hasobject:
        return  # pickled: refused or unpickled with a restricted unpickler by the caller
    if nbytes > max_bytes:
        raise CheckpointError(f"{what}: array {list(shape)} {dtype} claims {_human(nbytes)}, over the limit of "
                              f"{_human(max_bytes)}")
    if nbytes != present:
        raise CheckpointError(f"{what}: array {list(shape)} {dtype} needs {_human(nbytes)} but the file holds "
                              f"{_human(max(present, 0))} (truncated or corrupt)")


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def save_safetensors(tensors: dict, path: str | Path, metadata: dict[str, str] | None = None) -> None:
    """`safetensors.torch.save_file`, with its I/O failures raised as the OSError they are (ENOSPC, EACCES, ...).

    safetensors reports a full disk as `SafetensorError("... I/O error: No space left on device (os error 28)")`;
    callers and the CLI handle OSError, so the errno is recovered from the message.
    """
    from safetensors import SafetensorError
    from safetensors.torch import save_file

    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as error:
        found = re.search(r"os error (\d+)", str(error))
        if found:
            number = int(found.group(1))
            raise OSError(number, os.strerror(number), str(path)) from None
        raise
