"""SFTGAN's semantic prior at inference time: run OutdoorSceneSeg, or read a map the user brings.

The map SFTGAN takes is N×8×(4h)×(4w) class probabilities for an h×w LR image (methods.md §3.1), classes
0 background, 1 sky, 2 water, 3 grass, 4 mountain, 5 building, 6 plant, 7 animal. Sources (`--seg`):
- `auto`: the LR image, MATLAB-bicubic ×4, ×255, RGB→BGR, minus the Caffe mean, through OutdoorSceneSeg
  (as `test_segmentation.py`). The network needs sizes that are multiples of 8: the original mod-crops the HR
  image to 8; here the upsampled image is reflect-padded by the remainder (at most 4 pixels, when h or w is
  odd) and the map cropped back, so every pixel gets a probability. Even sizes are exactly the original.
- a probability file: `.npy` (what `perceptsr segment` writes) or the original's `_bic.pth`, 8×H×W; or a
  folder of `<stem>_segprob.npy`, one per input image.
- a label image (PNG…): one class per pixel, OST class indices (255 = void → background) or, with
  `--seg-model MAPPING` (`ade20k` or a YAML file like assets/ade20k_to_ost.yaml), another label set.
A file map is at 4× the LR size (or at the LR size, then each pixel is repeated 4×4).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch import Tensor
from torch.nn import functional as F  # noqa: N812
from tqdm import tqdm

from perceptsr.archs.outdoorseg import CAFFE_MEAN_BGR, STRIDE, OutdoorSceneSeg
from perceptsr.archs.sftgan import SEG_CLASSES
from perceptsr.data.resize import degrade, imresize
from perceptsr.errors import CheckpointError, InputError
from perceptsr.io.arrays import load_npy
from perceptsr.io.images import atomic_output, read_image, write_image
from perceptsr.zoo.weights import load_torch_file

SEG_SCALE = 4  # SFTGAN's map is at 4x the LR size
SEG_MODEL_ENV = "PERCEPTSR_SEG_MODEL"
MAPPINGS = {"ade20k": "ade20k_to_ost.yaml"}  # built-in class mappings (src/perceptsr/assets)
HOW_TO_GET = (
    "the segmentation network is not bundled: download segmentation_OST_bic.pth (links in xinntao/SFTGAN "
    "pretrained_models/README.md), run `perceptsr convert segmentation_OST_bic.pth -o seg.safetensors`, then "
    f"pass --seg-model seg.safetensors or set {SEG_MODEL_ENV}=seg.safetensors (or give --seg MAP_FILE)"
)
_PROBABILITY_SUFFIXES = (".npy", ".pth", ".pt")
MAX_MAP_BYTES = 2 << 30  # 8 float32 maps of 64 megapixels; a header claiming more is refused before reading
# RGB per class (test_segmentation.py's lookup table): background, sky, water, grass, mountain, building, plant,
# animal.
CLASS_COLORS = ((153, 153, 153), (0, 255, 255), (109, 158, 235), (183, 225, 205), (153, 0, 255),
                (17, 85, 204), (106, 168, 79), (224, 102, 102))


def seg_condition(lr: Tensor, seg: str, *, scale: int, seg_model: str | None, stem: str) -> Tensor:
    """The (1,8,scale·h,scale·w) float32 map for LR image `lr` (1,3,h,w) from `--seg` / `--seg-model`."""
    if seg == "auto":
        if seg_model is not None and _is_mapping(seg_model):
            raise InputError(f"--seg-model {seg_model} is a class mapping (for a label image --seg); "
                             f"--seg auto needs the segmentation network")
        return segment_lr(load_seg_model(resolve_seg_model(seg_model)), lr, scale=scale)
    path = Path(seg)
    if path.is_dir():  # a folder of maps by image name, as `perceptsr segment --lr` writes them
        path = path / f"{stem}_segprob.npy"
    if not path.is_file():
        raise InputError(f"--seg {seg}: no such file {path} (give 'auto', a probability .npy, a label image or "
                         f"a folder of <stem>_segprob.npy)")
    if path.suffix.lower() in _PROBABILITY_SUFFIXES:
        if seg_model is not None:
            raise InputError("--seg-model applies to --seg auto (the network) or a label image (its class "
                             f"mapping), not to the probability map {path}")
        probs = read_probabilities(path)
    else:
        probs = one_hot(read_labels(path, seg_model))
    return fit_map(probs, lr, scale=scale, what=f"{path} (for {stem or 'the image'})")


def resolve_seg_model(seg_model: str | None) -> Path:
    """The release file of the segmentation network: `--seg-model`, else $PERCEPTSR_SEG_MODEL."""
    chosen = seg_model or os.environ.get(SEG_MODEL_ENV)
    if not chosen:
        raise InputError(f"--seg auto: {HOW_TO_GET}")
    path = Path(chosen)
    if not path.is_file():
        raise InputError(f"segmentation model {path} does not exist; {HOW_TO_GET}")
    return path


def load_seg_model(path: str | Path) -> OutdoorSceneSeg:
    """The OutdoorSceneSeg of a release file, in eval mode on the best device (cached for the next image)."""
    path = Path(path).resolve()
    return _load_cached(str(path), path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=1)
def _load_cached(path: str, mtime_ns: int) -> OutdoorSceneSeg:
    from perceptsr.inference.upscale import pick_device
    from perceptsr.zoo.release import load_release

    model = load_release(path)
    if not isinstance(model, OutdoorSceneSeg):
        raise InputError(f"{path} holds a {model.release_metadata.get('arch')} model, not the segmentation "
                         f"network (outdoorsceneseg); {HOW_TO_GET}")
    return model.to(pick_device("auto"))


@torch.inference_mode()
def segment_image(model: OutdoorSceneSeg, rgb: Tensor) -> Tensor:
    """Class probabilities (N,C,H,W) float32 on the CPU of an RGB image (N,3,H,W) in [0,1], any size."""
    device = next(model.parameters()).device
    mean = torch.tensor(CAFFE_MEAN_BGR, dtype=torch.float32).view(1, 3, 1, 1)
    x = rgb.float().flip(1) * 255.0 - mean
    height, width = x.shape[-2:]
    pad_h, pad_w = -height % STRIDE, -width % STRIDE
    if pad_h or pad_w:
        mode = "reflect" if pad_h < height and pad_w < width else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return model(x.to(device))[..., :height, :width].float().cpu()


def segment_lr(model: OutdoorSceneSeg, lr: Tensor, *, scale: int = SEG_SCALE) -> Tensor:
    """The map of an LR image (N,3,h,w): segmentation of its MATLAB-bicubic ×scale, (N,C,scale·h,scale·w)."""
    return segment_image(model, imresize(lr.float(), scale))


def segment_hr(model: OutdoorSceneSeg, hr: Tensor, *, scale: int = SEG_SCALE) -> Tensor:
    """The map of an HR image at its size mod-cropped to `scale` (what training pairs use), from its
    unrounded MATLAB-bicubic LR, as the original test_segmentation.py computes it."""
    return segment_lr(model, degrade(hr.float(), scale, bit_depth=None), scale=scale)


def read_probabilities(path: Path) -> Tensor:
    """A probability map file, 8×H×W or 1×8×H×W, as (1,8,H,W) float32."""
    try:
        if path.suffix.lower() == ".npy":
            data = torch.from_numpy(load_npy(path, max_bytes=MAX_MAP_BYTES))
        else:
            data = load_torch_file(path, "segmentation map")
    except CheckpointError as error:
        raise InputError(f"cannot read segmentation map {error}") from None
    except OSError as error:
        raise InputError(f"cannot read segmentation map {path}: {error.strerror or error}") from None
    if not isinstance(data, Tensor) or not data.is_floating_point():
        raise InputError(f"{path} must hold a float array of class probabilities (8×H×W)")
    data = data.unsqueeze(0) if data.dim() == 3 else data
    if data.dim() != 4 or data.shape[0] != 1 or data.shape[1] != len(SEG_CLASSES):
        raise InputError(f"{path} has shape {tuple(data.shape)}: SFTGAN needs {len(SEG_CLASSES)}×H×W "
                         f"probabilities ({', '.join(SEG_CLASSES)})")
    if not torch.isfinite(data).all():
        raise InputError(f"{path} has NaN or infinite probabilities")
    if bool((data < 0).any()) or bool((data > 1 + 1e-3).any()):
        raise InputError(f"{path} has values outside [0, 1]; a segmentation map holds class probabilities")
    return data.float()


def read_labels(path: Path, mapping: str | None) -> np.ndarray:
    """A label image as (H,W) OST class indices; `mapping` (name or YAML) translates another label set."""
    try:
        with Image.open(path) as image:
            if image.mode not in ("L", "P", "I", "I;16", "I;16B", "I;16L"):
                raise InputError(f"label image {path} is {image.mode}; it must hold one class number per pixel "
                                 f"(8/16-bit grayscale or a palette image)")
            labels = np.asarray(image, dtype=np.int64)
    except InputError:
        raise
    except Exception as error:  # Pillow reports unreadable files with many exception types
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise InputError(f"cannot read label image {path}: {reason}") from None
    if mapping is None:
        unknown = np.setdiff1d(np.unique(labels), [*range(len(SEG_CLASSES)), 255])
        if unknown.size:
            raise InputError(f"label image {path} has value {int(unknown[0])}, not an OST class 0..7 (255 = void); "
                             f"give its class mapping with --seg-model ade20k or --seg-model MAPPING.yaml")
        return np.where(labels == 255, 0, labels)
    table = read_mapping(mapping)
    if labels.min() < 0 or labels.max() >= table.size:
        raise InputError(f"label image {path} has values outside 0..{table.size - 1}")
    return table[labels]


def _is_mapping(spec: str) -> bool:
    return spec in MAPPINGS or Path(spec).suffix.lower() in (".yaml", ".yml")


def read_mapping(spec: str) -> np.ndarray:
    """A lookup table pixel value -> OST class index from a mapping name (`ade20k`) or YAML file."""
    if spec in MAPPINGS:
        text = (resources.files("perceptsr") / "assets" / MAPPINGS[spec]).read_text()
    elif _is_mapping(spec):
        try:
            text = Path(spec).read_text(encoding="utf-8")
        except OSError as error:
            raise InputError(f"cannot read class mapping {spec}: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise InputError(f"class mapping {spec} is not UTF-8 text (byte {error.start})") from None
    else:
        raise InputError(f"--seg-model {spec} is not a class mapping for a label image: give "
                         f"{', '.join(MAPPINGS)} or a .yaml file (see assets/ade20k_to_ost.yaml)")
    try:
        data = yaml.safe_load(text)
        first, default, classes = int(data.get("first_index", 1)), data.get("default", "background"), data["classes"]
        table = np.full(65536, SEG_CLASSES.index(default), dtype=np.int64)
        seen: set[int] = set()
        for name, numbers in classes.items():
            for number in numbers:
                value = int(number) - 1 + first
                if value in seen or not 0 <= value < table.size:
                    raise ValueError(f"class number {number} is repeated or out of range")
                seen.add(value)
                table[value] = SEG_CLASSES.index(name)
    except (yaml.YAMLError, AttributeError, KeyError, TypeError, ValueError, OverflowError) as error:
        mark = getattr(error, "problem_mark", None)
        reason = (f"not valid YAML (line {mark.line + 1})" if mark else "not valid YAML") \
            if isinstance(error, yaml.YAMLError) else (str(error).splitlines() or [type(error).__name__])[0]
        raise InputError(f"class mapping {spec}: {reason} (expected first_index, default and classes: "
                         f"{{OST class: [numbers]}} with OST classes {', '.join(SEG_CLASSES)})") from None
    return table


def one_hot(classes: np.ndarray) -> Tensor:
    """(H,W) class indices -> (1,8,H,W) float32 one-hot probabilities."""
    index = torch.from_numpy(np.ascontiguousarray(classes)).long()
    return F.one_hot(index, len(SEG_CLASSES)).permute(2, 0, 1).unsqueeze(0).float()


def fit_map(probs: Tensor, lr: Tensor, *, scale: int, what: str) -> Tensor:
    """`probs` (1,C,H,W) at scale× the LR size, or at the LR size (repeated scale×scale); else InputError."""
    height, width = lr.shape[-2:]
    size = tuple(probs.shape[-2:])
    if size == (scale * height, scale * width):
        return probs
    if size == (height, width):
        return probs.repeat_interleave(scale, dim=-2).repeat_interleave(scale, dim=-1)
    raise InputError(f"{what}: the map is {size[1]}x{size[0]}, but a {width}x{height} input needs "
                     f"{scale * width}x{scale * height} (x{scale}) or {width}x{height}")


def colorize(probs: Tensor) -> tuple[np.ndarray, Tensor]:
    """The original's two pictures of a map (C,H,W): byte labels (H,W) uint8 (argmax) and the colour
    picture (1,3,H,W) in [0,1] with one colour per class (test_segmentation.py's lookup table)."""
    labels = probs.argmax(dim=0)
    palette = torch.tensor(CLASS_COLORS, dtype=torch.float32) / 255
    return labels.to(torch.uint8).numpy(), palette[labels].permute(2, 0, 1).unsqueeze(0)


def legend(labels: np.ndarray) -> Tensor:
    """A key to a colour picture (1,3,H,W) in [0,1]: per class its colour, index, name and share of the map's
    pixels (classes absent from this map in grey), so a `_colorimg.png` can be read without the palette table."""
    from PIL import ImageDraw, ImageFont

    counts = np.bincount(labels.ravel(), minlength=len(SEG_CLASSES))
    font = ImageFont.load_default(size=14)
    row, swatch = 22, 16
    canvas = Image.new("RGB", (210, row * len(SEG_CLASSES) + 8), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for index, (name, colour) in enumerate(zip(SEG_CLASSES, CLASS_COLORS, strict=True)):
        top = 4 + index * row
        draw.rectangle((6, top + 2, 6 + swatch, top + 2 + swatch), fill=colour, outline=(0, 0, 0))
        share = 100 * counts[index] / max(1, labels.size)
        text = f"{index} {name}" + (f"  {share:.1f}%" if counts[index] else "")
        draw.text((30, top + 2), text, fill=(0, 0, 0) if counts[index] else (150, 150, 150), font=font)
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).unsqueeze(0).float() / 255


def segment_files(paths: Sequence[Path], outdir: Path, *, seg_model: str | None, lr_inputs: bool,
                  overwrite: bool, progress: bool = True) -> None:
    """`perceptsr segment`: per image <stem>_segprob.npy (8×H×W float32), <stem>_colorimg.png and
    <stem>_byteimg.png (class index per pixel), as test_segmentation.py writes them, and <stem>_legend.png (the
    colour key, with each class's share of that map: `legend`). HR inputs (default) get
    maps at their size mod 4, for training; LR inputs (`lr_inputs`) get maps at 4× their size, for upscale.
    Existing outputs are refused before any work unless `overwrite`; each file is written atomically."""
    kinds = ("segprob.npy", "colorimg.png", "byteimg.png", "legend.png")
    targets = [[outdir / f"{path.stem}_{kind}" for kind in kinds] for path in paths]
    for output in (o for outputs in targets for o in outputs):
        if output.exists() and not overwrite:
            raise InputError(f"output {output} already exists (pass --overwrite to replace it)")
    model = load_seg_model(resolve_seg_model(seg_model))
    run = segment_lr if lr_inputs else segment_hr
    for path, (prob_path, color_path, byte_path, legend_path) in tqdm(list(zip(paths, targets, strict=True)),
                                                                      unit="img", disable=not progress):
        probs = run(model, read_image(path).rgb)[0]
        with atomic_output(prob_path, overwrite=overwrite) as temporary, open(temporary, "wb") as handle:
            np.save(handle, probs.numpy())
        labels, color = colorize(probs)
        write_image(color_path, color, overwrite=overwrite)
        write_image(legend_path, legend(labels), overwrite=overwrite)
        with atomic_output(byte_path, overwrite=overwrite) as temporary:
            Image.fromarray(labels).save(temporary, format="PNG")
