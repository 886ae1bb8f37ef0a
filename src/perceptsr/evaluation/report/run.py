"""`perceptsr report`: every model on every dataset, the paper protocol, with SR images and numbers cached.

Protocol (engine/evaluate.py, methods.md §0.1-0.2): HR mod-cropped to the scale, LR = MATLAB bicubic x1/s on
the 8-bit grid (`data.load_pair`), SR clamped and rounded to 8 bit (`upscale_quantised`), then the columns of
`specs.metric_columns`. Cache layout under OUTDIR (a re-run only computes what is new):

    hr/<dataset>/<stem>.png|.json          mod-cropped HR, its source file's sha256 and NIQE
    sr/<model id>/<dataset>/<stem>.png     the measured SR pixels; <model id> hashes weights, scale, options
    sr/<model id>/<dataset>/<stem>.json    the HR sha256 they were measured against and the numbers
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from tqdm import tqdm

from perceptsr.conditions import ModelSpec, build_conditions
from perceptsr.data.datasets import load_pair
from perceptsr.data.resize import degrade
from perceptsr.errors import InputError
from perceptsr.evaluation.evaluate import score, upscale_quantised
from perceptsr.evaluation.report.specs import (
    Metric,
    check_labels,
    file_sha256,
    metric_columns,
    model_id,
    source_digest,
)
from perceptsr.io.images import atomic_output, list_images, read_image, write_image
from perceptsr.metrics import psnr
from perceptsr.metrics.lpips import LPIPS, lpips_distance

log = logging.getLogger(__name__)
FORMAT = "perceptsr-report"


def to_json(value: Any) -> Any:
    """Strict-JSON form: NaN (undefined) -> null, ±inf (a perfect PSNR) -> "inf" / "-inf"."""
    if isinstance(value, float) and not math.isfinite(value):
        return None if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: to_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    return value


def from_json(value: Any) -> float:
    if value is None:
        return math.nan
    return float(value) if not isinstance(value, str) else float(value.replace("inf", "Infinity"))


def write_text(path: Path, text: str) -> None:
    with atomic_output(path, overwrite=True) as temp:
        temp.write_text(text, encoding="utf-8")


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _mean(rows: Sequence[dict[str, float]], keys: Sequence[str]) -> dict[str, float]:
    """Mean per key over the rows where it is defined (NaN if none); inf stays inf."""
    mean = {}
    for key in keys:
        defined = [row[key] for row in rows if key in row and not math.isnan(row[key])]
        mean[key] = sum(defined) / len(defined) if defined else math.nan
    return mean


def _measure(sr: Tensor, hr: Tensor, lr: Tensor, *, scale: int, wanted: set[str], lpips: LPIPS | None) -> dict:
    """The numbers in `wanted` for one quantised SR image (an undefined one is NaN, logged by `score`)."""
    values: dict[str, float] = {}
    if wanted & {"psnr_y", "ssim_y", "niqe"}:
        y = score(sr, hr, metrics=("psnr", "ssim", "niqe"), y_channel=True, crop_border=scale)
        values.update(psnr_y=y["psnr"], ssim_y=y["ssim"], niqe=y["niqe"])
    if wanted & {"psnr_rgb", "ssim_rgb"}:
        rgb = score(sr, hr, metrics=("psnr", "ssim"), y_channel=False, crop_border=scale)
        values.update(psnr_rgb=rgb["psnr"], ssim_rgb=rgb["ssim"])
    if "lr_psnr" in wanted:
        values["lr_psnr"] = psnr(degrade(sr, scale), lr)
    if "lpips" in wanted and lpips is not None:
        try:
            values["lpips"] = lpips_distance(sr, hr, lpips, crop_border=scale)
        except InputError as error:
            log.warning("lpips is undefined for a %dx%d image: %s", *sr.shape[-2:], error)
            values["lpips"] = math.nan
    return {k: v for k, v in values.items() if k in wanted}


class _Model:
    """A loaded model with its spec and cache identity."""

    def __init__(self, spec: ModelSpec, scale: int, device: torch.device) -> None:
        from perceptsr.zoo.models import load_model

        self.spec = spec
        self.digest = source_digest(spec.source)
        self.id = model_id(spec, self.digest, scale)
        self.module: nn.Module = load_model(spec.source, scale=scale).to(device)
        wanted = getattr(self.module, "condition_scales", {})
        if (spec.options.t is not None or spec.options.t_map is not None) and "t" not in wanted:
            raise InputError(f"model {spec.label}: options t / t_map apply only to FxSR-style models")
        if (spec.options.seg is not None or spec.options.seg_model is not None) and "seg" not in wanted:
            raise InputError(f"model {spec.label}: options seg / seg_model apply only to SFTGAN-style models")
        self.arch = getattr(self.module, "release_metadata", {}).get("arch", spec.source)

    def describe(self) -> dict:
        return {"id": self.id, "label": self.spec.label, "source": self.spec.source,
                "options": self.spec.option_text(), "arch": self.arch, "weights_sha256": self.digest}


def _datasets(folders: Sequence[Path], max_images: int | None) -> list[tuple[str, Path, list[Path]]]:
    found, names = [], set()
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise InputError(f"dataset folder {folder} does not exist")
        if folder.name in names:
            raise InputError(f"two dataset folders are both named {folder.name!r}; rename one")
        names.add(folder.name)
        paths = list_images([folder])
        found.append((folder.name, folder, paths[:max_images] if max_images else paths))
    return found


def _hr_entry(out: Path, dataset: str, path: Path, pair: Callable[[], tuple[Tensor, Tensor]], digest: str,
              scale: int) -> dict:
    """Write the mod-cropped HR for the viewer once, with its NIQE (a reference for the NIQE column)."""
    png, meta = out / "hr" / dataset / f"{path.stem}.png", out / "hr" / dataset / f"{path.stem}.json"
    cached = _read_json(meta)
    if cached.get("sha256") != digest or cached.get("scale") != scale or not png.is_file():
        hr = pair()[0]
        write_image(png, hr, overwrite=True)
        niqe = score(hr, hr, metrics=("niqe",), y_channel=True, crop_border=scale)["niqe"]
        cached = {"sha256": digest, "scale": scale, "width": int(hr.shape[-1]), "height": int(hr.shape[-2]),
                  "niqe": to_json(niqe)}
        write_text(meta, json.dumps(cached))
    return {"name": path.stem, "hr": f"hr/{dataset}/{path.stem}.png", "width": cached["width"],
            "height": cached["height"], "hr_niqe": from_json(cached.get("niqe"))}


def compute_report(
    *,
    models: Sequence[ModelSpec],
    data: Sequence[Path],
    scale: int,
    out: Path,
    lpips: LPIPS | None = None,
    lpips_note: str = "",
    device: str = "auto",
    tile: int | None = None,
    overlap: int = 16,
    max_images: int | None = None,
    progress: bool = True,
) -> dict:
    """Run (or read from the cache) every model on every dataset; return the results document.

    `lpips` is a loaded LPIPS (None: the column is left out and `lpips_note` says why).
    """
    from perceptsr.inference.upscale import pick_device

    if not models:
        raise InputError("give at least one --model")
    check_labels(list(models))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output directory {out} is an existing file")
    target = pick_device(device)
    datasets = _datasets(data, max_images)
    loaded = [_Model(spec, scale, target) for spec in models]
    columns = metric_columns(scale, lpips.net if lpips is not None else None)
    keys = [c.key for c in columns]
    results: dict[str, dict[str, dict]] = {}
    dataset_entries = []
    total = len(loaded) * sum(len(paths) for _, _, paths in datasets)
    with tqdm(total=total, desc="report", unit="sr", disable=not progress) as bar:
        for name, folder, paths in datasets:
            entry = {"name": name, "folder": str(folder), "images": []}
            rows: dict[str, dict[str, dict[str, float]]] = {m.id: {} for m in loaded}
            for path in paths:
                pair = functools.cache(functools.partial(load_pair, path, scale))  # read only if needed
                digest = file_sha256(path)
                entry["images"].append(_hr_entry(out, name, path, pair, digest, scale))
                for model in loaded:
                    bar.set_postfix_str(f"{model.spec.label} / {name} / {path.stem}", refresh=False)
                    rows[model.id][path.stem] = _image(model, out, name, path.stem, pair, digest, scale=scale,
                                                       keys=keys, lpips=lpips, device=target, tile=tile,
                                                       overlap=overlap)
                    bar.update()
            dataset_entries.append(entry)
            results[name] = {m.id: {"mean": _mean(list(rows[m.id].values()), keys), "images": rows[m.id]}
                             for m in loaded}
    return _document(scale, columns, lpips, lpips_note, loaded, dataset_entries, results)


def _document(scale: int, columns: Sequence[Metric], lpips: LPIPS | None, lpips_note: str,
              loaded: Sequence[_Model], datasets: list[dict], results: dict) -> dict:
    return {
        "format": FORMAT,
        "scale": scale,
        "protocol": {"degradation": "MATLAB bicubic x1/s, 8-bit (resize.degrade)", "modcrop": scale,
                     "sr": "clamped and rounded to 8 bit", "crop_border": scale,
                     "columns": {c.key: c.convention for c in columns}},
        "columns": [{"key": c.key, "header": c.header, "higher_is_better": c.higher_is_better,
                     "convention": c.convention} for c in columns],
        "lpips": {"available": lpips is not None, "net": lpips.net if lpips is not None else None,
                  "note": lpips_note},
        "models": [m.describe() for m in loaded],
        "datasets": datasets,
        "results": results,
    }


def _image(model: _Model, out: Path, dataset: str, stem: str, pair: Callable[[], tuple[Tensor, Tensor]],
           digest: str, *, scale: int, keys: Sequence[str], lpips: LPIPS | None, device: torch.device, tile: int | None,
           overlap: int) -> dict[str, float]:
    """Numbers of one model on one image: cached ones reused, missing ones (and a missing SR) computed."""
    folder = out / "sr" / model.id / dataset
    png, meta = folder / f"{stem}.png", folder / f"{stem}.json"
    cached = _read_json(meta)
    values: dict[str, float] = {}
    if cached.get("hr_sha256") == digest and png.is_file():
        values = {k: from_json(v) for k, v in cached.get("metrics", {}).items()}
        if cached.get("lpips_net") != (lpips.net if lpips is not None else None):
            values.pop("lpips", None)
        sr = None
    else:
        hr, lr = pair()
        sr = upscale_quantised(model.module, lr, hr, scale=scale, device=device, tile=tile, overlap=overlap,
                               conditions_fn=lambda x, _hr: build_conditions(model.module, x, model.spec.options,
                                                                             stem=stem))
        write_image(png, sr, overwrite=True)
    missing = {k for k in keys if k not in values}
    if missing:
        if sr is None:
            sr = read_image(png).rgb
        hr, lr = pair()
        values.update(_measure(sr, hr, lr, scale=scale, wanted=missing, lpips=lpips))
        lpips_net = lpips.net if lpips is not None else cached.get("lpips_net")
        write_text(meta, json.dumps({"hr_sha256": digest, "lpips_net": lpips_net, "metrics": to_json(values)}))
    return {k: values[k] for k in keys}
