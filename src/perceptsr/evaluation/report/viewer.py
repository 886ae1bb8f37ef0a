"""index.html: a self-contained comparison viewer (inline CSS/JS, no CDN, opens from disk).

Per image, HR and every model side by side with synchronised zoom/pan (wheel, drag; pixelated when magnified),
a single-model view switched by keys at a fixed zoom (HandyViewer-style), a wipe between any two panels, and a
scores view: the mean of every column per dataset (best in bold), the protocol stated once and the column
conventions behind a toggle. The templates viewer.html / viewer.css / viewer.js are package data; images are
referenced relative to OUTDIR (they live in OUTDIR/report_files/).
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path

from perceptsr.evaluation.evaluate import describe_run, nanmean
from perceptsr.evaluation.report.run import CACHE, write_text
from perceptsr.evaluation.report.tables import DECIMALS
from perceptsr.evaluation.strict_json import to_json


def _asset(name: str) -> str:
    return (resources.files("perceptsr.evaluation.report") / name).read_text(encoding="utf-8")


def viewer_data(doc: dict, links: list[str]) -> dict:
    """The JSON the page reads: panels (HR first), per-image sources and metrics, columns, links."""
    panels = [{"id": "hr", "label": "HR"}] + [{"id": m["id"], "label": m["label"]} for m in doc["models"]]
    images = []
    for dataset in doc["datasets"]:
        per_model = doc["results"][dataset["name"]]
        for image in dataset["images"]:
            stem = image["name"]
            src = {"hr": image["hr"]}
            metrics = {"hr": {"niqe": image["hr_niqe"]}}
            for model in doc["models"]:
                src[model["id"]] = f"{CACHE}/sr/{model['id']}/{dataset['name']}/{stem}.png"
                metrics[model["id"]] = per_model[model["id"]]["images"][stem]
            images.append({"dataset": dataset["name"], "name": stem, "width": image["width"],
                           "height": image["height"], "src": src, "metrics": metrics})
    columns = [{**c, "decimals": DECIMALS.get(c["key"], 4)} for c in doc["columns"]]
    return to_json({
        "title": f"perceptsr report x{doc['scale']}",
        "scale": doc["scale"],
        "panels": panels,
        "images": images,
        "columns": columns,
        "links": [{"href": name, "text": name} for name in links],
        "protocol": f"{doc['protocol']['description']}. LR = MATLAB bicubic x1/{doc['scale']} of the HR, 8-bit; SR "
                    f"rounded to 8 bit; models on the {describe_run(doc['run'])}.",
        "conventions": column_conventions(doc),
        "means": means(doc),
    })


def column_conventions(doc: dict) -> list[str]:
    """One line per column ("PSNR-Y: ..."), and why LPIPS is missing, if it is."""
    lines = [f"{c['header']}: {c['convention']}" for c in doc["columns"]]
    if not doc["lpips"]["available"]:
        lines.append(f"LPIPS: unavailable ({doc['lpips']['note'] or 'not requested'})")
    return lines


def means(doc: dict) -> list[dict]:
    """Per dataset: the mean of every column per model (the page marks the best), and the HR's own NIQE."""
    tables = []
    for dataset in doc["datasets"]:
        per_model = doc["results"][dataset["name"]]
        rows = [{"panel": index + 1, "label": model["label"], "mean": per_model[model["id"]]["mean"]}
                for index, model in enumerate(doc["models"])]
        tables.append({"dataset": dataset["name"], "count": len(dataset["images"]), "rows": rows,
                       "hr_niqe": nanmean(image["hr_niqe"] for image in dataset["images"])})
    return tables


def render(doc: dict, links: list[str]) -> str:
    """The page as one string; `</script>` can never close the data block early (every '<' is escaped)."""
    data = json.dumps(viewer_data(doc, links), ensure_ascii=False, allow_nan=False).replace("<", "\\u003c")
    values = {"CSS": _asset("viewer.css"), "JS": _asset("viewer.js"),
              "TITLE": html.escape(f"perceptsr report x{doc['scale']}"), "DATA": data}
    return re.sub(r"\{\{(CSS|JS|TITLE|DATA)\}\}", lambda match: values[match.group(1)], _asset("viewer.html"))


def write_viewer(doc: dict, out: Path, links: list[str]) -> Path:
    path = Path(out) / "index.html"
    write_text(path, render(doc, links))
    return path
