"""Where pretrained weights come from, and reading tensor files safely.

Provenance (URL, hash, environment variable) is kept apart from the layers that use it (timm's
`_pretrained.py` idea). Files are read without arbitrary pickles: `.pth` through
`torch.load(weights_only=True)`, `.npz` with `allow_pickle=False`, or `.safetensors`. Every failure is a
one-line `CheckpointError` that says how to provide the file.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import Tensor

from perceptsr.errors import CheckpointError
from perceptsr.io.arrays import check_zip

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightSource:
    """A downloadable weight file and the ways a user can provide it offline."""

    name: str  # what it is, for messages: "VGG19 ImageNet weights"
    url: str
    sha256: str  # the full hex digest if known, else the prefix torchvision puts in the file name
    env: str  # environment variable that may name a local copy
    option: str  # the CLI option that names a local copy, for messages

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    def how_to_provide(self) -> str:
        return f"pass {self.option} FILE or set {self.env} (torchvision's {self.filename})"


VGG19_IMAGENET = WeightSource(
    name="VGG19 ImageNet weights",
    url="https://download.pytorch.org/models/vgg19-dcbb9e9d.pth",
    sha256="dcbb9e9d",
    env="PERCEPTSR_VGG19_WEIGHTS",
    option="--vgg-weights",
)


def read_tensor_file(path: str | Path) -> Any:
    """Read `.pth`/`.pt` (weights_only), `.safetensors` or `.npz` (no pickle) into Python objects of tensors.

    `.npz` gives a dict of numpy arrays. Anything unreadable, or needing arbitrary pickled objects, raises a
    one-line CheckpointError.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist")
    suffix = path.suffix.lower()
    if suffix in (".pth", ".pt"):
        return load_torch_file(path, "PyTorch checkpoint")
    if suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({_first_line(error)})"
            ) from None
    if suffix == ".npz":
        check_zip(path, max_bytes=MAX_WEIGHT_BYTES, what=".npz file")
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except Exception as error:  # zipfile/numpy report damage with many exception types
            raise CheckpointError(
                f"{path} is not a readable pickle-free .npz file ({_first_line(error)})"
            ) from None
    raise CheckpointError(
        f"{path}: unsupported checkpoint type {suffix or '(none)'} (use .pth, .pt, .safetensors or .npz)"
    )


# The largest weight file read: VGG19 is 548 MiB, the largest generators well under that.
MAX_WEIGHT_BYTES = 4 << 30


def load_torch_file(path: Path, what: str) -> Any:
    """`torch.load(weights_only=True)` of a file that may be hostile: sizes checked first, one-line errors.

    A pickle that needs anything but tensors and containers is refused with the project's own message; torch's
    advice to retry with weights_only=False (which would run the file's code) is never passed on.
    """
    check_zip(path, max_bytes=MAX_WEIGHT_BYTES, what=what)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        refused, reason = unpickling_reason(error)
        if refused:
            raise CheckpointError(
                f"{path} holds pickled objects other than tensors ({reason}); refusing to load it (read with "
                "torch.load weights_only=True: no code from a weight file runs). Re-save its state_dict with "
                "torch.save(model.state_dict())"
            ) from None
        raise CheckpointError(f"{path} is not a readable {what} ({reason})") from None
    except Exception as error:  # torch reports corrupt files with RuntimeError, EOFError, ValueError, KeyError, ...
        raise CheckpointError(f"{path} is not a readable {what} ({_first_line(error)})") from None


def unpickling_reason(error: BaseException) -> tuple[bool, str]:
    """(refused by the weights-only unpickler?, a short reason free of torch's "set weights_only=False" advice).

    Torch words this differently across versions ("Unsupported global: GLOBAL x.y", "unsupported GLOBAL
    posix.system whose module posix is blocked", "Unsupported class ...", "Unsupported operand 172" for bytes
    that are no pickle at all), so it is matched loosely: a named GLOBAL, a class or a call is a refusal;
    an unknown opcode, a truncation or no detail at all means the file is not a readable pickle.
    """
    text = str(error)
    found = re.search(r"GLOBAL\s+([\w.]+)", text)
    if found:
        return True, f"it needs {found.group(1)}"
    detail = text.split("WeightsUnpickler error:", 1)[1] if "WeightsUnpickler error:" in text else ""
    lines = [line.strip() for line in detail.splitlines() if line.strip()]
    first = re.split(r"\.\s|;|\bPlease\b|`", lines[0])[0].strip(" .") if lines else ""
    if first and not re.search(r"operand|truncat|load key|EOF|MARK|memo|stack", first, re.IGNORECASE):
        return True, first
    return False, first or _first_line(error)


def resolve_weights(source: WeightSource, local: str | Path | None = None) -> dict[str, Tensor]:
    """The state_dict of `source`: explicit `local` path > `$source.env` > torch.hub cache > download.

    Hash check of local files: a full sha256 in `source` is always verified; a torchvision-style prefix only
    when the file keeps its original name (a renamed or re-saved copy cannot be expected to match), which the
    hub cache's copy does.
    """
    if local is not None:
        return _load_local(source, Path(local), "given")
    from_env = os.environ.get(source.env, "")
    if from_env:
        return _load_local(source, Path(from_env), f"named by {source.env}")
    return _load_local(source, hub_cached(source), "in the torch.hub cache")


def hub_cached(source: WeightSource, *, name: str | None = None, hint: str | None = None,
               progress: bool = True) -> Path:
    """The torch.hub-cache copy of `source` (file `name`, default its own file name), downloaded first when missing.

    Not `torch.hub.load_state_dict_from_url`: it prints "Downloading: ..." before connecting, so an offline
    machine saw a download announced and then an error. `download_url_to_file` connects first and draws its
    progress bar only once the server answers; offline, the one line printed is the error, ending with `hint`
    (default: how to provide the file).
    """
    cached = Path(torch.hub.get_dir()) / "checkpoints" / (name or source.filename)
    if cached.is_file():
        return cached
    log.info("downloading %s from %s", source.name, source.url)
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(source.url, str(cached), hash_prefix=source.sha256, progress=progress)
    except (OSError, RuntimeError, pickle.UnpicklingError, ValueError) as error:
        raise CheckpointError(
            f"{source.name} are not available offline ({_first_line(error)}): {hint or source.how_to_provide()}"
        ) from None
    return cached


def _load_local(source: WeightSource, path: Path, how: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{source.name}: file {path} ({how}) does not exist; {source.how_to_provide()}")
    full = len(source.sha256) == 64
    if full or path.name == source.filename:
        digest = file_sha256(path)
        if not digest.startswith(source.sha256):
            raise CheckpointError(
                f"{path}: sha256 {digest[:16]}... does not match {source.name} "
                f"({source.sha256[:16]}); the file is corrupt or a different model"
            )
    else:
        log.debug("%s: not named %s, skipping its hash check", path, source.filename)
    return _tensor_dict(read_tensor_file(path), source, str(path))


def _tensor_dict(state: Any, source: WeightSource, where: str) -> dict[str, Tensor]:
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{where} is not a state_dict of tensors ({source.name} expected)")
    return {str(k): v for k, v in state.items()}


def file_sha256(path: Path) -> str:
    """The sha256 of a file's bytes, read in 1 MiB blocks (release provenance, caches, manifests)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(error: BaseException) -> str:
    """The first line of an error, without any advice to disable the weights-only guard."""
    for line in str(error).strip().splitlines():
        if line.strip() and not re.search(r"weights[_ ]only", line, re.IGNORECASE):
            return line.strip()
    return type(error).__name__
