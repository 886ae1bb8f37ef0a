"""Perception–distortion plots (Blau & Michaeli 2018): Y-PSNR against NIQE, and against LPIPS when present.

One point per (model, dataset): colour = model, marker = dataset; up and to the left is better. For a model
with a style control (FxSR's t), a sweep file adds its curve over t. A sweep file is the sweep.json that
`perceptsr sweep` writes: `{"model": "<release file name>", "dataset": "Set5", "protocol": {"y_channel": true,
...}, "rows": [{"t": 0.3, "psnr": .., "niqe": .., "lpips": ..}, ...]}` (PSNR on Y; a file whose protocol says
RGB is not plotted on the Y-PSNR axis). A model's sweep is looked up, first found wins, at

1. `<release file without suffix>.sweep.json` beside the model file,
2. `sweep.json` beside the model file, then `OUTDIR/sweep.json` and `OUTDIR/*/sweep.json`, when its "model"
   is the model's label, its argument, or the release file's name or stem.
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
        named = str(doc.get("model", ""))
        if must_match and not ({named, Path(named).name} & _names(model)):
            continue
        return doc
    return None


def _value(point: dict, key: str) -> float:
    value = point.get(key)
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan


def sweep_curves(doc: dict, perception: str) -> dict[str, list[tuple[float, float, float]]]:
    """dataset -> [(t, perception value, Y-PSNR)] sorted by t, points with undefined values left out."""
    protocol = doc.get("protocol") if isinstance(doc.get("protocol"), dict) else {}
    if protocol.get("y_channel", True) is not True:
        log.warning("sweep of %s measured PSNR on RGB: not drawn on the Y-PSNR axis", doc.get("model"))
        return {}
    curves: dict[str, list[tuple[float, float, float]]] = {}
    for point in doc["rows"]:
        if not isinstance(point, dict):
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
    written = []
    for perception in [k for k in PERCEPTION if k in keys]:
        fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
        for i, model in enumerate(doc["models"]):
            color = colors(i % 10)
            for j, dataset in enumerate(datasets):
                mean = doc["results"][dataset][model["id"]]["mean"]
                x, y = mean[perception], mean["psnr_y"]
                if math.isfinite(x) and math.isfinite(y):
                    ax.scatter([x], [y], color=color, marker=MARKERS[j % len(MARKERS)], s=46, zorder=3)
            sweep = sweeps[model["id"]]
            for dataset, points in (sweep_curves(sweep, perception) if sweep else {}).items():
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
        ax.set_ylabel(f"PSNR-Y (dB, crop {doc['scale']}) ↑")
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
