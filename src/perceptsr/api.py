"""The Python API behind `perceptsr.upscale`, `perceptsr.save`, `perceptsr.degrade` and `perceptsr.load_model`.

It reads like the CLI: the same models, run options (device, precision, tile) and condition options, through the
same code (`inference.upscale.upscale_image`, `conditions.build_conditions`, `io.images.write_image`). What it adds
is the conversion between the kinds of image a Python caller holds (a path, a PIL image, a numpy array, a tensor)
and the package's canonical form, so each function returns the kind it was given; and error messages worded for
a Python caller (`scale=3`, `overwrite=True`) rather than for the command line.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from perceptsr.errors import InputError, PerceptsrError
from perceptsr.io.images import DEFAULT_MAX_PIXELS, LUMA_WEIGHTS, LoadedImage

ImageLike = Union[str, Path, Image.Image, np.ndarray, Tensor]  # noqa: UP007 (a runtime alias on Python 3.10)
CONDITION_KEYS = ("t", "t_map", "seg", "seg_model")
_CONDITION_KIND = {"t": "t", "t_map": "t", "seg": "seg", "seg_model": "seg"}
_CONDITION_MODELS = {"t": "FxSR", "seg": "SFTGAN"}

# ---- messages for Python callers ----

_FLAG = re.compile(r"--([a-z][a-z0-9-]*)(?: ([^\s,;:)]+))?")
_WORDS = {"or", "and", "to", "is", "was", "are", "apply", "applies", "only", "/", "not", "with", "for", "on", "in",
          "instead", "the", "a"}


def _keyword(match: re.Match[str]) -> str:
    key, value = match.group(1).replace("-", "_"), match.group(2)
    if key == "overwrite":
        return "overwrite=True" + (f" {value}" if value else "")
    if value is None or value in _WORDS:
        return key + (f" {value}" if value else "")
    return f"{key}={value}"


def python_wording(message: str) -> str:
    """A CLI message as a Python caller reads it: `--scale 3` -> `scale=3`, `--overwrite` -> `overwrite=True`."""
    return _FLAG.sub(_keyword, message)


@contextmanager
def for_python() -> Iterator[None]:
    """Re-raise a user error from the shared code with its flags worded as keyword arguments (same type)."""
    try:
        yield
    except PerceptsrError as error:
        text = str(error)
        worded = python_wording(text)
        if worded == text:
            raise
        raise type(error)(worded) from error


# ---- images in: every kind -> LoadedImage ----


@dataclass(frozen=True)
class Given:
    """What kind of image the caller gave, so the result can be returned as the same kind."""

    kind: str  # "path", "pil", "numpy" or "tensor"
    dtype: Any = None  # numpy / torch dtype of the input
    channels: int = 3  # 0: a numpy H x W array; else C of H x W x C (numpy) or N x C x H x W (tensor)
    batched: bool = True  # tensor: N x C x H x W (True) or C x H x W
    device: torch.device | None = None


def _from_samples(pixels: np.ndarray | Tensor, bit_depth: int, name: str) -> LoadedImage:
    """float (C,H,W) in [0,1], C in 1..4 (gray, gray+alpha, RGB, RGBA) -> LoadedImage."""
    tensor = torch.as_tensor(pixels, dtype=torch.float32).unsqueeze(0)
    channels = tensor.shape[1]
    gray = channels in (1, 2)
    color = tensor[:, :1].expand(-1, 3, -1, -1) if gray else tensor[:, :3]
    alpha = tensor[:, -1:].clone() if channels in (2, 4) else None
    return LoadedImage(rgb=color.contiguous(), alpha=alpha, grayscale=gray, bit_depth=bit_depth, path=Path(name))


def _float_array(array: np.ndarray, name: str) -> tuple[np.ndarray, int]:
    """An integer or float numpy image as float32 in [0,1] and its bit depth."""
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255, 8
    if array.dtype == np.uint16:
        return array.astype(np.float32) / 65535, 16
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise InputError(f"{name} has NaN or infinite pixel values")
        return np.clip(array.astype(np.float32), 0, 1), 16
    raise InputError(f"{name} has dtype {array.dtype}; use uint8, uint16 or float in [0, 1]")


def to_images(image: ImageLike, *, what: str = "image", max_pixels: int = DEFAULT_MAX_PIXELS
              ) -> tuple[list[LoadedImage], Given]:
    """Any image kind -> canonical images (one per batch entry) and what was given."""
    from perceptsr.io.images import read_image

    if isinstance(image, (str, Path)):
        with for_python():
            return [read_image(image, max_pixels=max_pixels)], Given("path")
    if isinstance(image, Image.Image):
        from perceptsr.io.images import _decode  # the decoder read_image uses, on an image already open

        name = getattr(image, "filename", "") or "the PIL image"
        with for_python():
            pixels, depth, _ = _decode(image, Path(name))
        return [_from_samples(pixels.transpose(2, 0, 1), depth, name)], Given("pil")
    if isinstance(image, np.ndarray):
        array = image[..., None] if image.ndim == 2 else image
        if array.ndim != 3 or array.shape[-1] not in (1, 2, 3, 4) or min(array.shape[:2]) < 1:
            raise InputError(f"a numpy {what} must be H x W or H x W x C with C in 1..4, got shape {image.shape}")
        pixels, depth = _float_array(array, f"the numpy {what}")
        given = Given("numpy", dtype=image.dtype, channels=0 if image.ndim == 2 else array.shape[-1])
        return [_from_samples(pixels.transpose(2, 0, 1), depth, f"the numpy {what}")], given
    if isinstance(image, Tensor):
        batch = image.unsqueeze(0) if image.dim() == 3 else image
        if batch.dim() != 4 or batch.shape[1] not in (1, 2, 3, 4) or batch.shape[0] < 1:
            raise InputError(f"a tensor {what} must be N x C x H x W or C x H x W with C in 1..4 (RGB in [0, 1]), "
                             f"got shape {tuple(image.shape)}")
        if not batch.is_floating_point():
            raise InputError(f"a tensor {what} must be float in [0, 1], not {batch.dtype}")
        if not bool(torch.isfinite(batch).all()):
            raise InputError(f"the tensor {what} has NaN or infinite values")
        samples = batch.detach().to("cpu", torch.float32).clamp(0, 1)
        given = Given("tensor", dtype=image.dtype, channels=batch.shape[1], batched=image.dim() == 4,
                      device=image.device)
        return [_from_samples(sample, 16, f"the tensor {what}") for sample in samples], given
    raise InputError(f"{what} must be a path, a PIL image, a numpy array or a tensor, not {type(image).__name__}")


# ---- results out: canonical -> the kind given ----


def _float_channels(rgb: Tensor, alpha: Tensor | None, grayscale: bool) -> Tensor:
    """(1,C,H,W) float in [0,1]: the luma (as write_image writes it) or RGB, with alpha appended."""
    channels = rgb.detach().to("cpu", torch.float32).clamp(0, 1)
    if grayscale:
        channels = (channels * torch.tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)).sum(1, keepdim=True)
    if alpha is not None:
        channels = torch.cat([channels, alpha.to("cpu", torch.float32).reshape(1, 1, *alpha.shape[-2:])], dim=1)
    return channels


def _pil(rgb: Tensor, alpha: Tensor | None, image: LoadedImage) -> Image.Image:
    """A PIL image in the input's mode: L / I;16 (16-bit gray) / LA / RGB / RGBA (Pillow holds no 16-bit colour)."""
    from perceptsr.io.images import _to_samples  # the sample conversion write_image uses

    bits = 16 if image.grayscale and alpha is None and image.bit_depth == 16 else 8
    samples = _to_samples(rgb, alpha, image.grayscale, bits)
    return Image.fromarray(samples[..., 0] if samples.shape[-1] == 1 else samples)


def from_images(results: list[tuple[Tensor, Tensor | None]], images: list[LoadedImage], given: Given) -> Any:
    """Results (rgb (1,3,H,W), alpha) as the kind the caller gave (a path gives a PIL image)."""
    if given.kind in ("path", "pil"):
        (rgb, alpha), = results
        return _pil(rgb, alpha, images[0])
    if given.kind == "numpy":
        (rgb, alpha), = results
        image = images[0]
        if np.issubdtype(given.dtype, np.floating):
            array = _float_channels(rgb, alpha, image.grayscale)[0].permute(1, 2, 0).numpy().astype(given.dtype)
        else:
            from perceptsr.io.images import _to_samples

            array = _to_samples(rgb, alpha, image.grayscale, 16 if given.dtype == np.uint16 else 8)
        return array[..., 0] if given.channels == 0 else array
    out = torch.cat([_float_channels(rgb, alpha, image.grayscale)
                     for (rgb, alpha), image in zip(results, images, strict=True)])
    out = out.to(given.device, given.dtype)
    return out if given.batched else out[0]


# ---- models and run options ----


def resolve_model(model: nn.Module | str | Path, *, scale: int | None = None) -> nn.Module:
    from perceptsr.zoo.models import load_model

    if isinstance(model, nn.Module):
        if not hasattr(model, "scale"):
            raise InputError(f"model {type(model).__name__} has no `.scale`: load it with perceptsr.load_model")
        return model
    if not isinstance(model, (str, Path)):
        raise InputError(f"model must be a name, a release file or a loaded model, not {type(model).__name__}")
    with for_python():
        return load_model(model, scale=scale)


def condition_tensors(network: nn.Module, lr: Tensor, given: dict[str, Any], *, name: str) -> dict[str, Tensor]:
    """The model's condition tensors from keyword arguments (t=0.3, t_map=PATH, seg="auto", seg_model=PATH, or a
    ready tensor for t / seg), through `conditions.build_conditions`."""
    from perceptsr.conditions import ConditionOptions, build_conditions

    wanted = getattr(network, "condition_scales", None) or {}
    for key in given:
        if key not in CONDITION_KEYS:
            raise InputError(f"unknown condition {key}=; the conditions are {', '.join(CONDITION_KEYS)}")
        kind = _CONDITION_KIND[key]
        if kind not in wanted:
            takes = ", ".join(wanted) or "no condition"
            raise InputError(f"{key}= applies only to {_CONDITION_MODELS[kind]} models; this model takes {takes}")
    ready = {key: value for key, value in given.items() if isinstance(value, Tensor)}
    options = {key: value for key, value in given.items() if key not in ready}
    if "t" in options and options["t"] is not None:
        options["t"] = float(options["t"])
    for key in ("t_map", "seg", "seg_model"):
        if options.get(key) is not None:
            options[key] = str(options[key])
    with for_python():
        built = build_conditions(network, lr, ConditionOptions(**options), stem=name)
    return {**built, **ready}


def device_name(device: str | torch.device | None) -> str:
    """The RunOptions spelling of a device argument: None -> "auto", torch.device("cuda:0") -> "cuda"."""
    if device is None:
        return "auto"
    return device if isinstance(device, str) else torch.device(device).type


# ---- the public functions ----


def upscale(image: ImageLike, model: nn.Module | str | Path = "default", *, device: str | torch.device | None = None,
            precision: str = "auto", tile: int | None = None, tile_overlap: int | None = None,
            max_pixels: int = DEFAULT_MAX_PIXELS, **conditions: Any) -> Any:
    """Super-resolve `image` with `model`, as `perceptsr upscale` does; returns the kind of image it was given.

    image: a file path (-> a PIL image), a PIL image (-> PIL, same mode: L, I;16, LA, RGB, RGBA), a numpy array
    H x W or H x W x C, C in 1..4, uint8 / uint16 / float in [0,1] (-> the same dtype and layout), or a tensor
    N x C x H x W or C x H x W in [0,1] (-> the same, on its device). Gray stays gray and alpha is upscaled with
    MATLAB bicubic, as on the command line. Pillow holds no 16-bit colour, so a 16-bit colour file gives an 8-bit
    RGB PIL image: pass a uint16 array (or use the CLI) to keep 16 bits.
    model: "default" (the bundled PSNR model, else bicubic), "bicubic", a bundled name, a release file, or a model
    from `load_model`. device: None (auto: CUDA, then MPS, then CPU), "cpu", "cuda"; precision: auto | fp32 | bf16 |
    fp16; tile: LR tile size (None: chosen from free memory); max_pixels: the largest image file read (a
    decompression-bomb guard, as --max-pixels). conditions: t=0.3, t_map=PATH (FxSR); seg="auto" or
    PATH, seg_model=PATH (SFTGAN); t or seg may also be a ready tensor.
    """
    from perceptsr.inference.fast import prepare
    from perceptsr.inference.upscale import DEFAULT_OVERLAP, pick_device, upscale_image

    network = resolve_model(model)
    images, given = to_images(image, max_pixels=max_pixels)
    results = []
    with for_python(), torch.inference_mode():
        run_device = pick_device(device_name(device))
        prepared = prepare(network, precision=precision, device=run_device)
        for loaded in images:
            cond = condition_tensors(network, loaded.rgb, conditions, name=str(loaded.path))
            sr, alpha = upscale_image(prepared, loaded, tile=tile, device=run_device, conditions=cond,
                                      overlap=DEFAULT_OVERLAP if tile_overlap is None else tile_overlap,
                                      precision=precision)
            results.append((sr.clamp(0, 1), alpha))
    results = [(sr.clone(), None if alpha is None else alpha.clone()) for sr, alpha in results]  # normal tensors
    return from_images(results, images, given)


def degrade(image: ImageLike, scale: int, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Any:
    """The LR the papers use: modcrop to a multiple of `scale`, MATLAB bicubic 1/scale, rounded to the image's bit
    depth (8 bit for a tensor); returns the kind it was given, like `upscale`."""
    from perceptsr.data.resize import degrade as degrade_tensor
    from perceptsr.data.resize import imresize, modcrop

    images, given = to_images(image, max_pixels=max_pixels)
    results = []
    with for_python():
        for loaded in images:
            bits = 8 if given.kind == "tensor" else loaded.bit_depth
            alpha = None
            if loaded.alpha is not None:
                alpha = imresize(modcrop(loaded.alpha, scale), 1 / scale).clamp(0, 1)
            results.append((degrade_tensor(loaded.rgb, scale, bit_depth=bits), alpha))
    return from_images(results, images, given)


def save(image: Image.Image | np.ndarray | Tensor, path: str | Path, *, bit_depth: int | None = None,
         overwrite: bool = False) -> Path:
    """Write `image` as `perceptsr upscale` writes its results: atomically, the suffix picking the format.

    Gray (a 1- or 2-channel array/tensor, a PIL L / I;16 / LA image) is written as one channel, alpha (2 or 4
    channels, LA / RGBA) is kept, and uint16 arrays and I;16 images give 16-bit PNGs (`bit_depth` overrides: 8 or
    16). An existing file is refused unless overwrite=True. Returns the path written.
    """
    from perceptsr.io.images import write_image

    if isinstance(image, (str, Path)):
        raise InputError(f"save needs an image (PIL, numpy or tensor), not the path {image}")
    images, given = to_images(image, what="image to save")
    if len(images) != 1:
        raise InputError(f"save writes one image, but the tensor holds a batch of {len(images)}")
    loaded = images[0]
    if bit_depth is None:
        is_16 = (given.kind == "numpy" and given.dtype == np.uint16) or \
            (given.kind == "pil" and loaded.bit_depth == 16 and loaded.grayscale)
        bit_depth = 16 if is_16 else 8
    path = Path(path)
    if path.exists() and not path.is_dir() and not overwrite:
        raise InputError(f"cannot write {path}: the file exists (pass overwrite=True to replace it)")
    with for_python():
        write_image(path, loaded.rgb, alpha=loaded.alpha, grayscale=loaded.grayscale, bit_depth=bit_depth,
                    overwrite=overwrite)
    return path


def load_model(name_or_path: str | Path = "default", *, scale: int | None = None) -> nn.Module:
    """A generator ready for inference (eval mode, no gradients): "default", "bicubic", a bundled name or a release
    file. `forward(lr, **conditions)` takes N x 3 x h x w in [0,1] and returns N x 3 x sH x sW, unclamped; `.scale`
    is its factor. `scale` picks bicubic's factor and is checked against any other model's."""
    return resolve_model(name_or_path, scale=scale)

