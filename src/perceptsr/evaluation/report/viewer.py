"""index.html: a self-contained comparison viewer (inline CSS/JS, no CDN, opens from disk).

Per image, HR and every model side by side with synchronised zoom/pan (wheel, drag; pixelated when magnified),
a single-model view switched by keys at a fixed zoom (HandyViewer-style), and a wipe between any two panels.
The templates viewer.html / viewer.css / viewer.js are package data; images are referenced relative to OUTDIR.
"""

from __future__ import annotations

import html
import json
import re
from importlib import resources
from pathlib import Path

from perceptsr.evaluation.evaluate import describe_run
from perceptsr.evaluation.report.run import write_text
from perceptsr.evaluation.report.tables import DECIMALS, conventions
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
                src[model["id"]] = f"sr/{model['id']}/{dataset['name']}/{stem}.png"
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
        "protocol": f"{doc['protocol']['description']}; models on the {describe_run(doc['run'])}. {conventions(doc)}",
    })


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
