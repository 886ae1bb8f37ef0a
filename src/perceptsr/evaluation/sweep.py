"""The perception-distortion curve of t-conditioned models (FxSR): dataset metrics for each model, dataset and t.

Each (model, dataset, t) is one `evaluation.evaluate.run_evaluation` with the model's condition options at that t
(a constant t map, as `upscale --t` makes it): the same SR path and protocol as `eval` and `report`, so a sweep's
row at t equals their numbers for MODEL:t=t. Outputs: sweep.csv (a row per model, dataset and t), sweep.json
(those rows, the per-image values, the protocol and how the models ran) and sweep.png (PSNR against NIQE, a curve per
model and dataset, labelled by t).
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from torch import nn

from perceptsr.conditions import ModelSpec, options_for
from perceptsr.conditions.tmap import check_t
from perceptsr.errors import InputError
from perceptsr.evaluation.evaluate import (
    DEFAULT_METRICS,
    dataset_samples,
    describe_run,
    protocol_record,
    run_evaluation,
    run_record,
)
from perceptsr.evaluation.protocol import Protocol
from perceptsr.evaluation.strict_json import dumps
from perceptsr.inference.upscale import RunOptions
from perceptsr.io.images import atomic_output

OUTPUTS = ("sweep.csv", "sweep.json", "sweep.png")
FORMAT = "perceptsr-sweep"
MAX_T_VALUES = 1000


def parse_t_values(spec: str) -> list[float]:
    """'start:stop:step' (stop included, e.g. 0:1:0.1 gives 11 values), 'a,b,c', or one value; all in [0,1]."""
    text = spec.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if not all(math.isfinite(v) for v in parts) or step <= 0 or stop < start:
                raise InputError(f"t values {spec!r}: need finite start <= stop and a step > 0")
            count = math.floor((stop - start) / step + 1e-9) + 1
            if count > MAX_T_VALUES:
                raise InputError(f"t values {spec!r}: {count} values is too many (at most {MAX_T_VALUES})")
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"t values {spec!r}: expected start:stop:step, a comma list or one number") from None
    if not values:
        raise InputError(f"t values {spec!r}: no t values")
    if len(values) > MAX_T_VALUES:
        raise InputError(f"t values {spec!r}: {len(values)} values is too many (at most {MAX_T_VALUES})")
    return [check_t(v) for v in values]


@dataclass
class SweepResult:
    """Rows {model, dataset, t, metric means} in sweep order, per-image values (images[model][dataset][t][stem]),
    the protocol and run records, and notes (e.g. why LPIPS is left out)."""

    rows: list[dict]
    images: dict[str, dict[str, dict[str, dict[str, dict[str, float]]]]]
    metrics: list[str]
    protocol: dict
    run: dict
    models: list[dict]
    datasets: list[str]
    notes: list[str] = field(default_factory=list)


def check_sweepable(spec: ModelSpec, module: nn.Module) -> None:
    if "t" not in getattr(module, "condition_scales", {}):
        raise InputError(f"model {spec.label} takes no t (sweep needs an FxSR model)")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-")[:60] or "model"


def run_sweep(models: Sequence[tuple[ModelSpec, nn.Module]], data: Sequence[Path], *, protocol: Protocol,
              ts: Sequence[float], run: RunOptions | None = None, lpips: nn.Module | None = None,
              lpips_note: str = "", max_images: int | None = None, max_pixels: int | None = None,
              image_dir: Path | None = None, progress: bool = False) -> SweepResult:
    """Evaluate every model on every HR folder once per t (LPIPS too when `lpips` is given).

    With `image_dir`, SR images go to image_dir/<model>/<dataset>/t<t>/<stem>.png.
    """
    for spec, module in models:
        check_sweepable(spec, module)
    metrics = [*DEFAULT_METRICS, *(["lpips"] if lpips is not None else [])]
    datasets = [(Path(folder).name, dataset_samples(folder, protocol, max_images=max_images, max_pixels=max_pixels))
                for folder in data]
    rows: list[dict] = []
    images: dict = {}
    for spec, module in models:
        for name, samples in datasets:
            for t in ts:
                sr_dir = image_dir / slug(spec.label) / name / f"t{t:.3f}" if image_dir is not None else None
                result = run_evaluation(samples, protocol=protocol, metrics=metrics, model=module, run=run,
                                        conditions=replace(options_for(module, spec), t=t, t_map=None), lpips=lpips,
                                        sr_dir=sr_dir, dataset=name, name=f"{spec.label} t={t:g}", progress=progress)
                rows.append({"model": spec.label, "dataset": name, "t": t, **result.mean})
                images.setdefault(spec.label, {}).setdefault(name, {})[f"{t:g}"] = result.images
    return SweepResult(rows=rows, images=images, metrics=metrics,
                       protocol=protocol_record(protocol, metrics, lpips_net=getattr(lpips, "net", None)),
                       run=run_record(run), models=[{"label": s.label, "source": s.source,
                                                     "options": s.option_text()} for s, _ in models],
                       datasets=[name for name, _ in datasets], notes=[lpips_note] if lpips_note else [])


def check_outputs(outdir: Path, *, overwrite: bool, save_images: bool = False) -> None:
    """Refuse before any work when an output exists (unless overwrite) or outdir is a file."""
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output directory {outdir} is an existing file")
    names = [*OUTPUTS, *(["images"] if save_images else [])]
    for name in names:
        if (outdir / name).exists() and not overwrite:
            raise InputError(f"output {outdir / name} already exists (pass --overwrite to replace it)")


def document(result: SweepResult) -> dict:
    """sweep.json's content (strict JSON once through `strict_json.dumps`)."""
    return {"format": FORMAT, "models": result.models, "datasets": result.datasets,
            "model": result.models[0]["label"] if len(result.models) == 1 else None,
            "protocol": result.protocol, "run": result.run, "notes": result.notes, "metrics": result.metrics,
            "rows": result.rows, "images": result.images}


def write_outputs(result: SweepResult, outdir: Path, *, overwrite: bool) -> list[Path]:
    """sweep.csv, sweep.json and sweep.png in `outdir`, each written atomically; return them."""
    from perceptsr.evaluation.report.tables import csv_number, csv_text

    columns = ["model", "dataset", "t", *result.metrics]
    table = io.StringIO()
    writer = csv.writer(table, lineterminator="\n")
    writer.writerow(columns)
    for row in result.rows:
        writer.writerow([csv_text(row["model"]), csv_text(row["dataset"]), repr(float(row["t"])),
                         *[csv_number(row[m]) for m in result.metrics]])
    paths = [outdir / name for name in OUTPUTS]
    with atomic_output(paths[0], overwrite=overwrite) as tmp:
        tmp.write_text(table.getvalue())
    with atomic_output(paths[1], overwrite=overwrite) as tmp:
        tmp.write_text(dumps(document(result), indent=1) + "\n")
    with atomic_output(paths[2], overwrite=overwrite) as tmp:
        _plot(result, tmp)
    return paths


def _plot(result: SweepResult, path: Path) -> None:
    """PSNR (distortion, up is better) against NIQE (perception, left is better): a curve per model and dataset."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=100)
    try:
        for model in result.models:
            for dataset in result.datasets:
                points = [r for r in result.rows if r["model"] == model["label"] and r["dataset"] == dataset
                          and math.isfinite(r["niqe"]) and math.isfinite(r["psnr"])]
                if not points:
                    continue
                label = model["label"] if len(result.datasets) == 1 else f"{model['label']} / {dataset}"
                ax.plot([r["niqe"] for r in points], [r["psnr"] for r in points], "o-", label=label)
                for row in points:
                    ax.annotate(f"t={row['t']:g}", (row["niqe"], row["psnr"]), textcoords="offset points",
                                xytext=(4, 4), fontsize=7)
        channel = "Y" if result.protocol["y_channel"] else "RGB"
        ax.set_xlabel("NIQE (lower = more natural)")
        ax.set_ylabel(f"PSNR-{channel} [dB], crop {result.protocol['crop_border']}")
        ax.set_title(f"{result.protocol['description']}; {describe_run(result.run)}", fontsize=8)
        ax.ticklabel_format(useOffset=False)
        ax.grid(True, alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
