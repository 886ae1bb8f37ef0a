"""`perceptsr report`: every model on every dataset through the one measurement path, SR images and numbers cached.

Numbers come from `evaluation.evaluate.run_evaluation` (the protocol, the SR path of `upscale`, the metrics table),
so they equal `eval`'s and `sweep`'s for the same model, data, protocol and run options. The cache lives in its
own folder, OUTDIR/report_files/ (index.html shows its images), so it never mixes with other files in OUTDIR; a re-run
only computes what is new:

    report_files/hr/<dataset>/<stem>.png|.json        HR as measured (mod-cropped), its file's sha256, scale and NIQE
    report_files/sr/<model id>/<dataset>/<stem>.png   the measured SR pixels; <model id> hashes weights, scale,
                                                      options and run options
    report_files/sr/<model id>/<dataset>/<stem>.json  the HR sha256 and protocol they were measured with, the numbers
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path

from torch import Tensor, nn

from perceptsr.conditions import ModelSpec, options_for
from perceptsr.errors import InputError
from perceptsr.evaluation.evaluate import (
    DEFAULT_METRICS,
    Sample,
    dataset_samples,
    measure,
    protocol_record,
    run_evaluation,
    run_record,
)
from perceptsr.evaluation.protocol import Protocol
from perceptsr.evaluation.report.specs import Metric, check_labels, metric_columns, model_id, source_digest
from perceptsr.evaluation.strict_json import dumps, from_json
from perceptsr.inference.fast import unwrap
from perceptsr.inference.upscale import RunOptions, load_prepared
from perceptsr.io.images import atomic_output, read_image, write_image
from perceptsr.metrics.lpips import LPIPS
from perceptsr.zoo.weights import file_sha256

log = logging.getLogger(__name__)
FORMAT = "perceptsr-report"
CACHE = "report_files"  # OUTDIR/<CACHE>/hr and /sr: the report's own folder (like a saved page's NAME_files)


def write_text(path: Path, text: str) -> None:
    with atomic_output(path, overwrite=True) as temp:
        temp.write_text(text, encoding="utf-8")


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


class _Model:
    """A loaded model, prepared once for the run, with its spec and cache identity."""

    def __init__(self, spec: ModelSpec, protocol: Protocol, run: RunOptions) -> None:
        self.spec = spec
        self.digest = source_digest(spec.source)
        self.id = model_id(spec, self.digest, protocol.scale, run)
        self.module: nn.Module = load_prepared(spec.source, scale=protocol.scale, run=run)[0]
        self.options = options_for(self.module, spec)
        wanted = self.module.condition_scales
        if (self.options.t is not None or self.options.t_map is not None) and "t" not in wanted:
            raise InputError(f"model {spec.label}: options t / t_map apply only to FxSR-style models")
        if (self.options.seg is not None or self.options.seg_model is not None) and "seg" not in wanted:
            raise InputError(f"model {spec.label}: options seg / seg_model apply only to SFTGAN-style models")
        if self.module.scale != protocol.scale:
            raise InputError(f"model {spec.label} upscales x{self.module.scale}, but the report asks for "
                             f"x{protocol.scale}")
        self.arch = getattr(unwrap(self.module), "release_metadata", {}).get("arch", spec.source)

    def describe(self) -> dict:
        return {"id": self.id, "label": self.spec.label, "source": self.spec.source,
                "options": self.spec.option_text(), "arch": self.arch, "weights_sha256": self.digest}


class _Cache:
    """The report's `SampleCache` for one model on one dataset: report_files/sr/<model id>/<dataset>/<stem>.*"""

    def __init__(self, folder: Path, digests: dict[str, str], protocol: Protocol, lpips_net: str | None, *,
                 refresh: bool = False) -> None:
        self.folder, self.digests, self.lpips_net, self.refresh = folder, digests, lpips_net, refresh
        self.protocol = protocol.to_dict()

    def load(self, stem: str) -> tuple[Callable[[], Tensor] | None, dict[str, float]]:
        png, meta = self.folder / f"{stem}.png", self.folder / f"{stem}.json"
        cached = {} if self.refresh else _read_json(meta)
        if cached.get("hr_sha256") != self.digests[stem] or not png.is_file():
            return None, {}
        sr = lambda: read_image(png).rgb  # noqa: E731
        if cached.get("protocol") != self.protocol or not isinstance(cached.get("metrics"), dict):
            return sr, {}
        try:
            values = {k: from_json(v) for k, v in cached["metrics"].items()}
        except (TypeError, ValueError):
            return sr, {}
        if cached.get("lpips_net") != self.lpips_net:
            values.pop("lpips", None)
        return sr, values

    def store(self, stem: str, sr: Tensor, values: dict[str, float], *, new_sr: bool) -> None:
        if new_sr:
            write_image(self.folder / f"{stem}.png", sr, overwrite=True)
        record = {"hr_sha256": self.digests[stem], "protocol": self.protocol,
                  "lpips_net": self.lpips_net if "lpips" in values else None, "metrics": values}
        write_text(self.folder / f"{stem}.json", dumps(record))


def _datasets(folders: Sequence[Path], protocol: Protocol, max_images: int | None,
              max_pixels: int | None) -> list[tuple[str, Path, list[Sample]]]:
    found, names = [], set()
    for folder in folders:
        folder = Path(folder)
        if folder.name in names:
            raise InputError(f"two dataset folders are both named {folder.name!r}; rename one")
        names.add(folder.name)
        found.append((folder.name, folder, dataset_samples(folder, protocol, max_images=max_images,
                                                           max_pixels=max_pixels)))
    return found


def _hr_entry(out: Path, dataset: str, sample: Sample, digest: str, protocol: Protocol, refresh: bool) -> dict:
    """Write the HR as measured, for the viewer, once, with its NIQE (a reference for the NIQE column)."""
    folder = out / CACHE / "hr" / dataset
    png, meta = folder / f"{sample.stem}.png", folder / f"{sample.stem}.json"
    cached = {} if refresh else _read_json(meta)
    key = {"sha256": digest, "protocol": protocol.to_dict()}
    if any(cached.get(k) != v for k, v in key.items()) or not png.is_file():
        hr = sample.pair()[0]
        write_image(png, hr, overwrite=True)
        niqe = measure(hr, hr=hr, lr=None, protocol=protocol, metrics=("niqe",))["niqe"]
        cached = {**key, "width": int(hr.shape[-1]), "height": int(hr.shape[-2]), "niqe": niqe}
        write_text(meta, dumps(cached))
    return {"name": sample.stem, "hr": f"{CACHE}/hr/{dataset}/{sample.stem}.png", "width": cached["width"],
            "height": cached["height"], "hr_niqe": from_json(cached.get("niqe"))}


def compute_report(
    *,
    models: Sequence[ModelSpec],
    data: Sequence[Path],
    protocol: Protocol,
    out: Path,
    run: RunOptions | None = None,
    lpips: LPIPS | None = None,
    lpips_note: str = "",
    max_images: int | None = None,
    max_pixels: int | None = None,
    progress: bool = True,
    refresh: bool = False,
) -> dict:
    """Run (or read from the cache) every model on every dataset; return the results document.

    `lpips` is a loaded LPIPS (None: the column is left out and `lpips_note` says why); `refresh` ignores the cache
    (every SR image and number is computed again and replaces the cached one).
    """
    if not models:
        raise InputError("give at least one --model")
    check_labels(list(models))
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"output directory {out} is an existing file")
    run = run or RunOptions()
    datasets = _datasets(data, protocol, max_images, max_pixels)
    loaded = [_Model(spec, protocol, run) for spec in models]
    lpips_net = lpips.net if lpips is not None else None
    columns = metric_columns(protocol, lpips_net)
    metrics = [c.key for c in columns]
    results: dict[str, dict[str, dict]] = {}
    dataset_entries = []
    for name, folder, samples in datasets:
        digests = {s.stem: file_sha256(path) for s, path in zip(samples, _paths(folder, samples), strict=True)}
        entry = {"name": name, "folder": str(folder),
                 "images": [_hr_entry(out, name, s, digests[s.stem], protocol, refresh) for s in samples]}
        dataset_entries.append(entry)
        results[name] = {}
        for model in loaded:
            cache = _Cache(out / CACHE / "sr" / model.id / name, digests, protocol, lpips_net, refresh=refresh)
            result = run_evaluation(samples, protocol=protocol, metrics=metrics, model=model.module, run=run,
                                    conditions=model.options, lpips=lpips, cache=cache, dataset=name,
                                    name=model.spec.label, progress=progress)
            results[name][model.id] = {"mean": result.mean, "images": result.images}
    return _document(protocol, run, columns, lpips, lpips_note, loaded, dataset_entries, results)


def _paths(folder: Path, samples: list[Sample]) -> list[Path]:
    from perceptsr.io.images import list_images

    by_stem = {p.stem: p for p in list_images([folder])}
    return [by_stem[s.stem] for s in samples]


def _document(protocol: Protocol, run: RunOptions, columns: Sequence[Metric], lpips: LPIPS | None, lpips_note: str,
              loaded: Sequence[_Model], datasets: list[dict], results: dict) -> dict:
    return {
        "format": FORMAT,
        "scale": protocol.scale,
        "protocol": protocol_record(protocol, [c.key for c in columns], lpips_net=lpips.net if lpips else None),
        "run": run_record(run),
        "columns": [{"key": c.key, "header": c.header, "higher_is_better": c.higher_is_better,
                     "convention": c.convention} for c in columns],
        "lpips": {"available": lpips is not None, "net": lpips.net if lpips is not None else None,
                  "note": lpips_note},
        "models": [m.describe() for m in loaded],
        "datasets": datasets,
        "results": results,
    }


__all__ = ["CACHE", "DEFAULT_METRICS", "FORMAT", "compute_report", "write_text"]
