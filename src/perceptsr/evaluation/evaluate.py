"""The one measurement path (methods.md §0.1, §0.2): training validation, `eval`, `report`, `sweep` and `metrics`.

`run_evaluation` measures a list of `Sample`s. Per image: the HR is read and mod-cropped to the scale, the LR is
`resize.degrade(HR)` (MATLAB bicubic 1/s on the 8-bit grid; both from `data.load_pair`); the SR is the model run on
the LR through the same path as `perceptsr upscale` (`inference.upscale.upscale_tensor`: the fused fast path of
`inference.fast.prepare` at the run's precision, tiled with the run's overlap, the same condition options), clamped
and rounded to 8 bit as a saved PNG holds it — or, for `metrics`, the SR file as it is. Then the metrics of
`metrics.METRICS` under the `Protocol` (channel, border crop, mod-crop), which every result carries with it.

Training validation runs the raw generator eagerly in fp32 (`eager=True`) through the same function: preparing a
fused copy at every validation would cost more than it saves on a few small images, and the two differ only by float
rounding.

Undefined values: a metric that cannot be computed on an image (it raises InputError, e.g. NIQE needs two 96x96
blocks) or that returns NaN (NIQE of a flat image) is NaN for that image, logged, and left out of the mean
(`nanmean`); `EvalResult.undefined` names the images left out.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol as Interface

import torch
from torch import Tensor, nn
from tqdm import tqdm

from perceptsr.conditions import ConditionOptions, build_conditions
from perceptsr.data.datasets import ValItem, load_pair
from perceptsr.errors import InputError
from perceptsr.evaluation.protocol import Protocol
from perceptsr.inference.fast import FastModel, prepare
from perceptsr.inference.tile import tiled_forward
from perceptsr.inference.upscale import RunOptions, pick_device, upscale_tensor
from perceptsr.io.images import list_images, write_image
from perceptsr.metrics import METRICS, MetricInputs, check_metrics

logger = logging.getLogger(__name__)

DEFAULT_METRICS = ("psnr", "ssim", "lr_psnr", "niqe")  # + "lpips" where its network is loaded
EVAL_METRICS = (*DEFAULT_METRICS, "lattice")  # `eval` adds the lattice-artifact column: one FFT per image
DEGRADATION = "MATLAB bicubic x1/s of the HR, rounded to 8 bit"
SR_FORM = "clamped and rounded to 8 bit"

ConditionsFn = Callable[[Tensor, Tensor | None], Mapping[str, Tensor]]


@dataclass
class Sample:
    """One image to measure: its name, `load()` -> (hr, lr) (read when first needed) and, for SR files, `sr()`."""

    stem: str
    load: Callable[[], tuple[Tensor | None, Tensor | None]]
    sr: Callable[[], Tensor] | None = None
    _pair: tuple[Tensor | None, Tensor | None] | None = field(default=None, repr=False)

    def pair(self) -> tuple[Tensor | None, Tensor | None]:
        if self._pair is None:
            self._pair = self.load()
        return self._pair


class SampleCache(Interface):
    """What `report` keeps between runs: an image's SR (to read back) and the numbers already measured on it."""

    def load(self, stem: str) -> tuple[Callable[[], Tensor] | None, dict[str, float]]: ...

    def store(self, stem: str, sr: Tensor, values: dict[str, float], *, new_sr: bool) -> None: ...


@dataclass
class EvalResult:
    """Per-image and mean metrics of one model (or one SR folder) on one dataset, with how they were measured."""

    dataset: str
    model: str
    images: dict[str, dict[str, float]]
    mean: dict[str, float]
    protocol: dict
    run: dict | None
    undefined: dict[str, list[str]]


def nanmean(values: Iterable[float]) -> float:
    """Mean of the values that are not NaN (NaN if none); inf stays inf (PSNR of a perfect image)."""
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def mean_rows(rows: Iterable[Mapping[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """`nanmean` of each key over the rows that have it."""
    rows = list(rows)
    return {key: nanmean(row[key] for row in rows if key in row) for key in keys}


def quantise(sr: Tensor) -> Tensor:
    """SR clamped to [0,1] and rounded to the 8-bit grid: the pixels a saved PNG holds."""
    return sr.clamp(0, 1).mul(255).round().div(255)


def measure(sr: Tensor, *, hr: Tensor | None, lr: Tensor | None, protocol: Protocol, metrics: Sequence[str],
            lpips: nn.Module | None = None) -> dict[str, float]:
    """The values of `metrics` for one image under `protocol` (NaN, logged, where one is undefined)."""
    inputs = MetricInputs(sr=sr, hr=hr, lr=lr, scale=protocol.scale, crop_border=protocol.border,
                          y_channel=protocol.y_channel, lpips=lpips)
    values = {}
    for name in metrics:
        try:
            values[name] = METRICS[name].compute(inputs)
        except InputError as error:
            logger.warning("%s is undefined for a %dx%d image: %s", name, sr.shape[-1], sr.shape[-2], error)
            values[name] = math.nan
    return values


def protocol_record(protocol: Protocol, metrics: Sequence[str], *, lpips_net: str | None = None) -> dict:
    """The protocol as stored beside every result: its fields, one line, and each metric's convention under it."""
    return {**protocol.to_dict(), "description": protocol.describe(), "degradation": DEGRADATION, "sr": SR_FORM,
            "metrics": {name: METRICS[name].describe(scale=protocol.scale, crop_border=protocol.border,
                                                     y_channel=protocol.y_channel, lpips_net=lpips_net)
                        for name in metrics}}


def run_record(run: RunOptions | None, *, eager: bool = False) -> dict:
    """How the models ran, as stored beside every result."""
    run = run or RunOptions()
    if eager:
        return {"path": "eager", "precision": "fp32", "tile": run.tile, "tile_overlap": run.tile_overlap}
    return {"path": "fast", "precision": run.precision, "tile": run.tile, "tile_overlap": run.tile_overlap,
            "device": run.device}


def describe_run(record: dict) -> str:
    """One line for a run record, e.g. `fast path, fp32, tile auto, overlap 32`."""
    tile = record["tile"] if record["tile"] is not None else "auto" if record["path"] == "fast" else "none"
    return f"{record['path']} path, {record['precision']}, tile {tile}, overlap {record['tile_overlap']}"


class _Runner:
    """SR of one LR image by a model: the fast path of `upscale` (or the eager model), quantised to 8 bit."""

    def __init__(self, model: nn.Module, *, scale: int, run: RunOptions | None, eager: bool) -> None:
        model_scale = getattr(model, "scale", None)
        if model_scale is not None and model_scale != scale:
            raise InputError(f"the model upscales x{model_scale}, but the evaluation asks for x{scale}")
        self.run, self.eager, self.scale, self.source = run or RunOptions(), eager, scale, model
        if eager:
            self.device = next((p.device for p in model.parameters()), torch.device("cpu"))
            self.model = model
        else:
            self.device = pick_device(self.run.device)
            reuse = isinstance(model, FastModel) and (run is None or model.requested == self.run.precision)
            self.model = model if reuse else prepare(model, precision=self.run.precision, device=self.device,
                                                     compile=self.run.compile)

    def __call__(self, lr: Tensor, conditions: Mapping[str, Tensor]) -> Tensor:
        if self.eager:
            sr = tiled_forward(self.model, lr, scale=self.scale, tile=self.run.tile, overlap=self.run.tile_overlap,
                               conditions=conditions, device=self.device)
        else:
            sr = upscale_tensor(self.model, lr, tile=self.run.tile, overlap=self.run.tile_overlap, device=self.device,
                                conditions=conditions, precision=self.model.requested)
        return quantise(sr)


def _conditions(model: nn.Module, conditions: ConditionOptions | ConditionsFn | None, lr: Tensor,
                hr: Tensor | None, stem: str) -> dict[str, Tensor]:
    if conditions is None:
        return {}
    if isinstance(conditions, ConditionOptions):
        return build_conditions(model, lr, conditions, stem=stem)
    return dict(conditions(lr, hr))


def run_evaluation(
    samples: Sequence[Sample],
    *,
    protocol: Protocol,
    metrics: Sequence[str] = DEFAULT_METRICS,
    model: nn.Module | None = None,
    run: RunOptions | None = None,
    conditions: ConditionOptions | ConditionsFn | None = None,
    lpips: nn.Module | None = None,
    eager: bool = False,
    cache: SampleCache | None = None,
    sr_dir: Path | None = None,
    dataset: str = "",
    name: str = "",
    progress: bool = False,
) -> EvalResult:
    """Measure every sample under `protocol`: the SR comes from `model` (run as `upscale` runs it, or eagerly) or,
    without a model, from each sample's `sr()`.

    `conditions`: the model's condition options (ConditionOptions, built per image as `upscale` builds them) or a
    function (lr, hr) -> condition maps; None passes none. `cache` supplies SR images and numbers already measured
    and keeps new ones; with `sr_dir`, each measured SR is written there as <stem>.png. A model's train/eval flag is
    restored afterwards.
    """
    metrics = check_metrics(list(metrics))
    if "lpips" in metrics and lpips is None:
        raise InputError("lpips needs its network: load it with metrics.lpips.load_lpips")
    if model is None and any(sample.sr is None for sample in samples):
        raise InputError("no model and no SR image to measure")
    was_training = model.training if model is not None else False  # before prepare() puts it in eval mode
    runner = _Runner(model, scale=protocol.scale, run=run, eager=eager) if model is not None else None
    if model is not None:
        model.eval()
    rows: dict[str, dict[str, float]] = {}
    try:
        with torch.inference_mode():
            for sample in tqdm(samples, desc=f"{name or 'model'} on {dataset or 'images'}", disable=not progress,
                               unit="img"):
                rows[sample.stem] = _one(sample, runner, protocol=protocol, metrics=metrics, conditions=conditions,
                                         lpips=lpips, cache=cache, sr_dir=sr_dir)
    finally:
        if model is not None:
            model.train(was_training)
    return EvalResult(
        dataset=dataset, model=name, images=rows, mean=mean_rows(rows.values(), metrics),
        protocol=protocol_record(protocol, metrics, lpips_net=getattr(lpips, "net", None)),
        run=run_record(run, eager=eager) if model is not None else None,
        undefined={m: [stem for stem, row in rows.items() if math.isnan(row[m])] for m in metrics})


def _one(sample: Sample, runner: _Runner | None, *, protocol: Protocol, metrics: list[str],
         conditions: ConditionOptions | ConditionsFn | None, lpips: nn.Module | None, cache: SampleCache | None,
         sr_dir: Path | None) -> dict[str, float]:
    """The numbers of one sample: cached ones reused, the SR made (or read) only when something needs it."""
    cached_sr, values = cache.load(sample.stem) if cache is not None else (None, {})
    values = dict(values)
    missing = [m for m in metrics if m not in values]
    known_sr = cached_sr or sample.sr
    new_sr = known_sr is None
    sr = None
    if new_sr:
        hr, lr = sample.pair()
        sr = runner(lr, _conditions(runner.source, conditions, lr, hr, sample.stem))
    elif missing or sr_dir is not None:
        sr = known_sr()
    if missing:
        hr, lr = sample.pair()
        if hr is not None and sr.shape[-2:] != hr.shape[-2:]:
            raise InputError(f"{sample.stem}: the SR is {sr.shape[-1]}x{sr.shape[-2]} but the HR is "
                             f"{hr.shape[-1]}x{hr.shape[-2]}")
        values.update(measure(sr, hr=hr, lr=lr, protocol=protocol, metrics=missing, lpips=lpips))
    if cache is not None and (new_sr or missing):
        cache.store(sample.stem, sr, values, new_sr=new_sr)
    if sr_dir is not None:
        write_image(Path(sr_dir) / f"{sample.stem}.png", sr, overwrite=True)
    return {m: values[m] for m in metrics}


def dataset_samples(folder: Path, protocol: Protocol, *, max_images: int | None = None,
                    max_pixels: int | None = None) -> list[Sample]:
    """One Sample per HR image of `folder` (sorted; the first `max_images`), pairs made by `data.load_pair`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"dataset folder {folder} does not exist")
    paths = list_images([folder])[:max_images] if max_images else list_images([folder])

    def loader(path: Path) -> Callable[[], tuple[Tensor, Tensor]]:
        return lambda: load_pair(path, protocol.scale, max_pixels=max_pixels, mod_crop=protocol.mod_crop)

    return [Sample(path.stem, loader(path)) for path in paths]


def evaluate(
    model: nn.Module,
    folder: Path,
    *,
    scale: int | None = None,
    protocol: Protocol | None = None,
    metrics: Sequence[str] = DEFAULT_METRICS,
    run: RunOptions | None = None,
    conditions: ConditionOptions | ConditionsFn | None = None,
    lpips: nn.Module | None = None,
    max_images: int | None = None,
    max_pixels: int | None = None,
    eager: bool = False,
    sr_dir: Path | None = None,
    model_name: str = "",
    progress: bool = False,
) -> EvalResult:
    """`run_evaluation` of `model` on the HR images of `folder` (protocol: `protocol`, or the paper's at `scale`)."""
    if protocol is None:
        if scale is None:
            raise InputError("evaluate needs a scale or a protocol")
        protocol = Protocol(scale)
    samples = dataset_samples(folder, protocol, max_images=max_images, max_pixels=max_pixels)
    return run_evaluation(samples, protocol=protocol, metrics=metrics, model=model, run=run, conditions=conditions,
                          lpips=lpips, eager=eager, sr_dir=sr_dir, dataset=Path(folder).name, name=model_name,
                          progress=progress)


def evaluate_items(
    model: nn.Module,
    items: Sequence[ValItem],
    *,
    scale: int,
    metrics: Sequence[str] = ("psnr", "ssim"),
    conditions: ConditionOptions | ConditionsFn | None = None,
) -> dict[str, float]:
    """Training validation: mean metrics (the paper protocol: Y, crop = scale) on preloaded pairs, the generator run
    eagerly on its own device (its train/eval flag is restored)."""
    samples = [Sample(item.stem, (lambda item=item: (item.hr, item.lr))) for item in items]
    return run_evaluation(samples, protocol=Protocol(scale), metrics=metrics, model=model, conditions=conditions,
                          eager=True).mean
