"""results.json, results.csv and results.md from the report document (`run.compute_report`).

Every table names its conventions (Y vs RGB, crop, LPIPS network), since papers disagree (methods.md §0.2,
§7.8). In results.md the best value per column is bold; undefined values are "–".
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

from perceptsr.evaluation.evaluate import describe_run, nanmean
from perceptsr.evaluation.report.run import write_text
from perceptsr.evaluation.strict_json import dumps

DECIMALS = {"psnr": 2, "lr_psnr": 2, "ssim": 4, "niqe": 3, "lpips": 4}
FORMULA_START = ("=", "+", "-", "@")


def fmt(key: str, value: float) -> str:
    if math.isnan(value):
        return "–"
    if math.isinf(value):
        return "∞" if value > 0 else "-∞"
    return f"{value:.{DECIMALS.get(key, 4)}f}"


def write_json(doc: dict, path: Path) -> None:
    write_text(path, dumps(doc, indent=1) + "\n")


def csv_text(text: str) -> str:
    """A text cell a spreadsheet will not run: one starting with = + - @ gets a leading apostrophe."""
    text = str(text)
    return f"'{text}" if text.startswith(FORMULA_START) else text


def csv_number(value: float) -> str:
    """A number cell: exact (repr), empty when undefined, `inf` for a perfect PSNR."""
    return "" if math.isnan(value) else repr(float(value))


def write_csv(doc: dict, path: Path) -> None:
    """One row per (dataset, model, image), then a row per (dataset, model) with image = "mean"."""
    keys = [c["key"] for c in doc["columns"]]
    labels = {m["id"]: m["label"] for m in doc["models"]}
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["dataset", "model", "image", *keys])
    for dataset, per_model in doc["results"].items():
        for mid, result in per_model.items():
            rows = [*result["images"].items(), ("mean", result["mean"])]
            for image, values in rows:
                cells = [csv_number(values[k]) for k in keys]
                writer.writerow([csv_text(dataset), csv_text(labels[mid]), csv_text(image), *cells])
    write_text(path, buffer.getvalue())


def _best(values: list[float], higher: bool) -> float | None:
    defined = [v for v in values if not math.isnan(v)]
    if len(defined) < 2:
        return None
    return max(defined) if higher else min(defined)


def conventions(doc: dict) -> str:
    """One line naming every column's convention (and why LPIPS is missing, if it is)."""
    parts = [f"{c['header']}: {c['convention']}" for c in doc["columns"]]
    if not doc["lpips"]["available"]:
        parts.append(f"LPIPS: unavailable ({doc['lpips']['note'] or 'not requested'})")
    return "; ".join(parts) + "."


def markdown(doc: dict) -> str:
    """A README-ready table per dataset, best value per column in bold, conventions under the heading."""
    columns = doc["columns"]
    scale = doc["scale"]
    lines = [f"# perceptsr report (x{scale})", "",
             f"Protocol: {doc['protocol']['description']}. LR = MATLAB bicubic x1/{scale} of the HR, 8-bit; SR "
             f"rounded to 8 bit; models run on the {describe_run(doc['run'])}. "
             "↑ higher is better, ↓ lower is better; **bold** = best in the column.", ""]
    for model in doc["models"]:
        where = "" if model["source"] == "bicubic" else f", sha256 {model['weights_sha256'][:12]}"
        options = f", options {model['options']}" if model["options"] else ""
        lines.append(f"- `{model['label']}`: {model['source']} ({model['arch']}{where}{options})")
    for dataset in doc["datasets"]:
        per_model = doc["results"][dataset["name"]]
        lines += ["", f"## {dataset['name']} (x{scale}, {len(dataset['images'])} images)", "",
                  f"Conventions: {conventions(doc)}", ""]
        header = " | ".join(f"{c['header']} {'↑' if c['higher_is_better'] else '↓'}" for c in columns)
        lines += [f"| model | {header} |", "|---|" + "---:|" * len(columns)]
        best = {c["key"]: _best([r["mean"][c["key"]] for r in per_model.values()], c["higher_is_better"])
                for c in columns}
        for model in doc["models"]:
            mean = per_model[model["id"]]["mean"]
            cells = []
            for c in columns:
                text = fmt(c["key"], mean[c["key"]])
                cells.append(f"**{text}**" if best[c["key"]] is not None and mean[c["key"]] == best[c["key"]]
                             else text)
            lines.append(f"| {model['label']} | " + " | ".join(cells) + " |")
        niqe = nanmean(i["hr_niqe"] for i in dataset["images"])
        if not math.isnan(niqe):
            lines += ["", f"HR (ground truth) NIQE, for reference: {niqe:.3f}."]
    return "\n".join(lines) + "\n"


def write_markdown(doc: dict, path: Path) -> None:
    write_text(path, markdown(doc))
