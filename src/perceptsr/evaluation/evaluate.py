"""Dataset evaluation with the paper protocol in one place (methods.md §0.1, §0.2).

Per HR image: read, mod-crop to the scale, LR = `resize.degrade` (MATLAB bicubic 1/s, rounded to 8 bit as
an LR file is), SR = model(LR) (tiled if asked), SR clamped and rounded to 8 bit as a saved PNG would be, then
the metrics of `metrics.METRICS`. Full-reference metrics use `y_channel` and `crop_border` (default: the
scale, as SRGAN/NatSR/ESRGAN report); NIQE uses the MATLAB Y channel with the same border crop.

Undefined values: a metric that cannot be computed on an image (it raises InputError, e.g. NIQE needs two
96x96 blocks) or that returns NaN (NIQE of a flat image) is NaN for that image, logged, and left out of the
mean. The mean is over the images where the metric is defined (NaN if none); `protocol["undefined"]` names
the images left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm import tqdm

from perceptsr.data.datasets import ValItem, load_pair
from perceptsr.errors import InputError
from perceptsr.inference.tile import tiled_forward
from perceptsr.io.images import list_images, write_image
from perceptsr.metrics import METRICS

logger = logging.getLogger(__name__)

ConditionsFn = Callable[[Tensor, Tensor], Mapping[str, Tensor]]


@dataclass
class EvalResult:
    """Per-image and mean metrics of one model on one dataset, with the protocol that produced them."""

    dataset: str
    model: str
    images: dict[str, dict[str, float]]
    mean: dict[str, float]
    protocol: dict


def _check(model: nn.Module, scale: int, metrics: Sequence[str]) -> None:
    unknown = [m for m in metrics if m not in METRICS]
    if unknown:
        raise InputError(f"unknown metric {unknown[0]!r} (known: {', '.join(METRICS)})")
    model_scale = getattr(model, "scale", None)
    if model_scale is not None and model_scale != scale:
        raise InputError(f"the model upscales x{model_scale}, but the evaluation asks for x{scale}")


def upscale_quantised(
    model: nn.Module,
    lr: Tensor,
    hr: Tensor,
    *,
    scale: int,
    device: torch.device,
    tile: int | None,
    overlap: int,
    conditions_fn: ConditionsFn | None,
) -> Tensor:
    """SR (1,3,H,W) float32 on the CPU, clamped and rounded to the 8-bit grid (what a saved PNG holds)."""
    conditions = dict(conditions_fn(lr, hr)) if conditions_fn is not None else None
    sr = tiled_forward(
        model, lr, scale=scale, tile=tile, overlap=overlap, conditions=conditions, device=device
    )
    return sr.clamp(0, 1).mul(255).round().div(255)


def score(
    sr: Tensor, hr: Tensor, *, metrics: Sequence[str], y_channel: bool, crop_border: int
) -> dict[str, float]:
    """Metric values of one (sr, hr) pair; an InputError from a metric (image too small) gives NaN."""
    values = {}
    for name in metrics:
        spec = METRICS[name]
        try:
            if spec.needs_reference:
                values[name] = float(spec.function(sr, hr, crop_border=crop_border, y_channel=y_channel))
            else:
                values[name] = float(spec.function(sr, crop_border=crop_border))
        except InputError as error:
            logger.warning("%s is undefined for a %dx%d image: %s", name, *sr.shape[-2:], error)
            values[name] = math.nan
    return values


def _mean(rows: Sequence[Mapping[str, float]], metrics: Sequence[str]) -> dict[str, float]:
    """Mean of each metric over the rows where it is not NaN (inf stays inf: PSNR of a perfect image)."""
    mean = {}
    for name in metrics:
        defined = [row[name] for row in rows if not math.isnan(row[name])]
        mean[name] = sum(defined) / len(defined) if defined else math.nan
    return mean


def _protocol(scale: int, y_channel: bool, crop_border: int, metrics: Sequence[str]) -> dict:
    return {
        "scale": scale,
        "y_channel": y_channel,
        "crop_border": crop_border,
        "degradation": "matlab-bicubic",
        "quantised": "8-bit",
        "modcrop": scale,
        "metrics": list(metrics),
        "niqe_channel": "y",
    }


def evaluate(
    model: nn.Module,
    folder: Path,
    *,
    scale: int,
    metrics: Sequence[str] = ("psnr", "ssim", "niqe"),
    y_channel: bool = True,
    crop_border: int | None = None,
    device: torch.device | str = "cpu",
    tile: int | None = None,
    overlap: int = 16,
    max_images: int | None = None,
    progress: bool = True,
    model_name: str = "",
    conditions_fn: ConditionsFn | None = None,
    sr_dir: Path | None = None,
) -> EvalResult:
    """Evaluate `model` on every HR image in `folder` (sorted; the first `max_images` if given).

    The model is moved to `device` and run in eval mode under torch.inference_mode() (its training flag is
    restored afterwards). `conditions_fn(lr, hr)` returns the condition maps of a conditional model (e.g.
    FxSR's t, SFTGAN's segmentation), passed as `model(lr, **conditions)`. With `sr_dir`, each quantised SR is
    written there as <stem>.png (RGB, the exact pixels that were measured; existing files are replaced).
    """
    metrics = list(metrics)
    _check(model, scale, metrics)
    crop = scale if crop_border is None else crop_border
    device = torch.device(device)
    paths = list_images([folder])
    if max_images is not None:
        paths = paths[:max_images]
    rows: dict[str, dict[str, float]] = {}
    was_training = model.training
    model.to(device).eval()
    try:
        with torch.inference_mode():
            for path in tqdm(
                paths, desc=f"{model_name or 'model'} on {Path(folder).name}", disable=not progress
            ):
                hr, lr = load_pair(path, scale)
                sr = upscale_quantised(
                    model,
                    lr,
                    hr,
                    scale=scale,
                    device=device,
                    tile=tile,
                    overlap=overlap,
                    conditions_fn=conditions_fn,
                )
                rows[path.stem] = score(sr, hr, metrics=metrics, y_channel=y_channel, crop_border=crop)
                if sr_dir is not None:
                    write_image(Path(sr_dir) / f"{path.stem}.png", sr, overwrite=True)
    finally:
        model.train(was_training)
    protocol = _protocol(scale, y_channel, crop, metrics)
    protocol.update(tile=tile, overlap=overlap if tile is not None else None, images=len(rows))
    protocol["undefined"] = {m: [s for s, row in rows.items() if math.isnan(row[m])] for m in metrics}
    return EvalResult(
        dataset=Path(folder).name,
        model=model_name,
        images=rows,
        mean=_mean(list(rows.values()), metrics),
        protocol=protocol,
    )


def evaluate_items(
    model: nn.Module,
    items: Sequence[ValItem],
    *,
    scale: int,
    device: torch.device | str = "cpu",
    metrics: Sequence[str] = ("psnr", "ssim"),
    y_channel: bool = True,
    crop_border: int | None = None,
    tile: int | None = None,
    overlap: int = 16,
    conditions_fn: ConditionsFn | None = None,
) -> dict[str, float]:
    """Mean metrics on preloaded validation pairs (training's validation: Y PSNR/SSIM, crop = scale).

    Same protocol as `evaluate`; the caller's model stays on its device and its train/eval flag is restored.
    """
    metrics = list(metrics)
    _check(model, scale, metrics)
    crop = scale if crop_border is None else crop_border
    device = torch.device(device)
    rows = []
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for item in items:
                sr = upscale_quantised(
                    model,
                    item.lr,
                    item.hr,
                    scale=scale,
                    device=device,
                    tile=tile,
                    overlap=overlap,
                    conditions_fn=conditions_fn,
                )
                rows.append(score(sr, item.hr, metrics=metrics, y_channel=y_channel, crop_border=crop))
    finally:
        model.train(was_training)
    return _mean(rows, metrics)
