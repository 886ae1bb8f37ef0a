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
import zipfile
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
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            text = str(error)
            if "Unsupported global" not in text:  # not a pickle at all: random bytes, truncated file, ...
                raise CheckpointError(
                    f"{path} is not a readable PyTorch checkpoint ({_unpickler_reason(text)})"
                ) from None
            raise CheckpointError(
                f"{path} holds pickled objects other than tensors ({_unpickler_reason(text)}); refusing to "
                "load it (torch.load weights_only=True). Re-save its state_dict with "
                "torch.save(model.state_dict())"
            ) from None
        except (RuntimeError, EOFError, ValueError, OSError) as error:
            raise CheckpointError(
                f"{path} is not a readable PyTorch checkpoint ({_first_line(error)})"
            ) from None
    if suffix == ".safetensors":
        try:
            return load_file(str(path))
        except (SafetensorError, OSError, ValueError) as error:
            raise CheckpointError(
                f"{path} is not a readable safetensors file ({_first_line(error)})"
            ) from None
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as archive:
                return {key: archive[key] for key in archive.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as error:
            raise CheckpointError(
                f"{path} is not a readable pickle-free .npz file ({_first_line(error)})"
            ) from None
    raise CheckpointError(
        f"{path}: unsupported checkpoint type {suffix or '(none)'} (use .pth, .pt, .safetensors or .npz)"
    )


def resolve_weights(source: WeightSource, local: str | Path | None = None) -> dict[str, Tensor]:
    """The state_dict of `source`: explicit `local` path > `$source.env` > torch.hub cache > download.

    Hash check of local files: a full sha256 in `source` is always verified; a torchvision-style prefix only
    when the file keeps its original name (a renamed or re-saved copy cannot be expected to match). The hub
    path verifies the prefix itself (`check_hash=True`).
    """
    if local is not None:
        return _load_local(source, Path(local), "given")
    from_env = os.environ.get(source.env, "")
    if from_env:
        return _load_local(source, Path(from_env), f"named by {source.env}")
    log.info("loading %s from the torch.hub cache or %s", source.name, source.url)
    try:
        state = torch.hub.load_state_dict_from_url(
            source.url, map_location="cpu", check_hash=True, weights_only=True, progress=True
        )
    except (OSError, RuntimeError, pickle.UnpicklingError, EOFError, ValueError) as error:
        raise CheckpointError(
            f"{source.name} are not available offline ({_first_line(error)}): {source.how_to_provide()}"
        ) from None
    return _tensor_dict(state, source, source.url)


def _load_local(source: WeightSource, path: Path, how: str) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{source.name}: file {path} ({how}) does not exist; {source.how_to_provide()}")
    full = len(source.sha256) == 64
    if full or path.name == source.filename:
        digest = _sha256(path)
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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _unpickler_reason(text: str) -> str:
    """The informative part of torch's long weights_only refusal ("Unsupported global: GLOBAL x.Y")."""
    marker = "WeightsUnpickler error:"
    reason = text.split(marker, 1)[1] if marker in text else text
    lines = [line.strip() for line in reason.splitlines() if line.strip()]
    return lines[0].split(" was not an allowed global")[0] if lines else "unreadable pickle"


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0]
