"""Perception–distortion plots (Blau & Michaeli 2018): PSNR against NIQE, and against LPIPS when present.

One point per (model, dataset): colour = model, marker = dataset; up and to the left is better. PSNR is on the
report's channel (Y or RGB, its protocol). For a model with a style control (FxSR's t), a sweep file adds its curve
over t. A sweep file is the sweep.json that `perceptsr sweep` writes: `{"models": [{"label": .., "source": ..}],
"protocol": {"y_channel": true, ...}, "rows": [{"model": label, "dataset": "Set5", "t": 0.3, "psnr": .., "niqe": ..,
"lpips": ..}, ...]}` (older files name one "model" and rows without it). A sweep measured on another channel than
the report's is not drawn. A model's sweep is looked up, first found wins, at

1. `<release file without suffix>.sweep.json` beside the model file,
2. `sweep.json` beside the model file, then `OUTDIR/sweep.json` and `OUTDIR/*/sweep.json`, when one of its models
   is the model's label, its argument, or the release file's name or stem (given as label or source).
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

log = logging.getLogger(__name__)
MARKERS = "osD^vP*Xh<>"
PERCEPTION = {"niqe": "NIQE (Y) ↓", "lpips": "LPIPS ↓"}


def _names(model: dict) -> set[str]:
    names = {model["label"], model["source"]}
    if model["source"] != "bicubic":
        names |= {Path(model["source"]).name, Path(model["source"]).stem}
    return names


def find_sweep(model: dict, out: Path) -> dict | None:
    """The sweep document of `model` (see the module docstring), or None."""
    source = Path(model["source"])
    candidates: list[tuple[Path, bool]] = []
    if model["source"] != "bicubic" and source.suffix:
        candidates += [(source.with_suffix(".sweep.json"), False), (source.parent / "sweep.json", True)]
    candidates += [(out / "sweep.json", True)] + [(p, True) for p in sorted(out.glob("*/sweep.json"))]
    for path, must_match in candidates:
        if not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            log.warning("ignoring sweep file %s: %s", path, error)
            continue
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            log.warning("ignoring sweep file %s: no 'rows' list", path)
            continue
        if must_match and not sweep_names(doc) & _names(model):
            continue
        return doc
    return None


def sweep_names(doc: dict) -> set[str]:
    """Every name a sweep document gives its models (labels, sources and the sources' file names)."""
    names: set[str] = set()
    entries = doc.get("models") if isinstance(doc.get("models"), list) else []
    for entry in [*entries, {"label": doc.get("model")}]:
        if isinstance(entry, dict):
            for value in (entry.get("label"), entry.get("source")):
                if isinstance(value, str) and value:
                    names |= {value, Path(value).name}
    return names


def _value(point: dict, key: str) -> float:
    value = point.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def sweep_curves(doc: dict, perception: str, *, y_channel: bool = True,
                 model: dict | None = None) -> dict[str, list[tuple[float, float, float]]]:
    """dataset -> [(t, perception value, PSNR)] sorted by t, points with undefined values left out; only rows of
    `model` (when given) and only when the sweep measured PSNR on the same channel."""
    protocol = doc.get("protocol") if isinstance(doc.get("protocol"), dict) else {}
    if protocol.get("y_channel", True) is not y_channel:
        log.warning("sweep of %s measured PSNR on another channel than the report: not drawn", doc.get("model"))
        return {}
    several = len({str(p.get("model")) for p in doc["rows"] if isinstance(p, dict) and "model" in p}) > 1
    names = _names(model) if model is not None and several else None
    curves: dict[str, list[tuple[float, float, float]]] = {}
    for point in doc["rows"]:
        if not isinstance(point, dict):
            continue
        if names is not None and "model" in point and str(point["model"]) not in names:
            continue
        t, x, y = _value(point, "t"), _value(point, perception), _value(point, "psnr")
        if not any(math.isnan(v) for v in (t, x, y)):
            curves.setdefault(str(point.get("dataset", doc.get("dataset", ""))), []).append((t, x, y))
    return {name: sorted(points) for name, points in curves.items()}


def plot_pd(doc: dict, out: Path) -> list[Path]:
    """Write pd_niqe.png (and pd_lpips.png when LPIPS is present); return the files written."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.lines import Line2D

    keys = [c["key"] for c in doc["columns"]]
    datasets = [d["name"] for d in doc["datasets"]]
    colors = plt.get_cmap("tab10")
    sweeps = {m["id"]: find_sweep(m, out) for m in doc["models"]}
    y_channel = bool(doc["protocol"].get("y_channel", True))
    written = []
    for perception in [k for k in PERCEPTION if k in keys]:
        fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
        for i, model in enumerate(doc["models"]):
            color = colors(i % 10)
            for j, dataset in enumerate(datasets):
                mean = doc["results"][dataset][model["id"]]["mean"]
                x, y = mean[perception], mean["psnr"]
                if math.isfinite(x) and math.isfinite(y):
                    ax.scatter([x], [y], color=color, marker=MARKERS[j % len(MARKERS)], s=46, zorder=3)
            sweep = sweeps[model["id"]]
            curves = sweep_curves(sweep, perception, y_channel=y_channel, model=model) if sweep else {}
            for dataset, points in curves.items():
                if dataset and dataset not in datasets:
                    continue
                ax.plot([p[1] for p in points], [p[2] for p in points], color=color, lw=1, alpha=0.7, zorder=2,
                        marker=".", ms=5)
                for t, x, y in (points[0], points[-1]):
                    ax.annotate(f"t={t:g}", (x, y), fontsize=7, color=color, textcoords="offset points",
                                xytext=(4, 4))
        handles = [Line2D([], [], color=colors(i % 10), lw=6, label=m["label"])
                   for i, m in enumerate(doc["models"])]
        handles += [Line2D([], [], color="0.3", marker=MARKERS[j % len(MARKERS)], ls="", label=d)
                    for j, d in enumerate(datasets)]
        ax.legend(handles=handles, fontsize=8, loc="best")
        ax.set_xlabel(PERCEPTION[perception])
        ax.set_ylabel(f"PSNR-{'Y' if y_channel else 'RGB'} (dB, crop {doc['protocol']['crop_border']}) ↑")
        ax.set_title(f"Perception–distortion plane, x{doc['scale']}")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out / f"pd_{perception}.png"
        temp = out / f".pd_{perception}.png.tmp"
        fig.savefig(temp, format="png")
        plt.close(fig)
        temp.replace(path)
        written.append(path)
    return written
