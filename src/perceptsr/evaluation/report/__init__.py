"""`perceptsr report`: numbers, plots and a comparison viewer for models on datasets, in one folder.

`run_report` computes (or reads from the cache) every model on every dataset and writes OUTDIR/results.json,
results.csv, results.md, pd_niqe.png (pd_lpips.png with LPIPS) and index.html.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from perceptsr.conditions import ModelSpec, parse_model_spec
from perceptsr.evaluation.report.plots import plot_pd
from perceptsr.evaluation.report.run import compute_report
from perceptsr.evaluation.report.tables import write_csv, write_json, write_markdown
from perceptsr.evaluation.report.viewer import write_viewer

__all__ = ["ModelSpec", "compute_report", "parse_model_spec", "run_report", "write_outputs"]


def write_outputs(doc: dict, out: Path) -> list[Path]:
    """Write the tables, the plots and the viewer for a computed report; return the files written."""
    out = Path(out)
    write_json(doc, out / "results.json")
    write_csv(doc, out / "results.csv")
    write_markdown(doc, out / "results.md")
    plots = plot_pd(doc, out)
    links = ["results.md", "results.csv", "results.json", *[p.name for p in plots]]
    viewer = write_viewer(doc, out, links)
    return [out / "results.json", out / "results.csv", out / "results.md", *plots, viewer]


def run_report(*, out: Path, **options: Any) -> tuple[dict, list[Path]]:
    """`compute_report(out=out, **options)` (cached SR images and numbers are reused), then every output file."""
    doc = compute_report(out=out, **options)
    return doc, write_outputs(doc, out)
