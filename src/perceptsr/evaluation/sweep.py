"""The perception-distortion curve of a t-conditioned model (FxSR): dataset metrics for each t of a sweep.

Per t, `engine.evaluate.evaluate` runs the paper protocol (mod-crop, MATLAB-bicubic LR on the 8-bit grid, SR
rounded to 8 bit) with a constant t map, giving PSNR/SSIM (Y, crop = scale) and NIQE (Y, crop = scale). Then
from the same 8-bit SR images: LR-PSNR (NTIRE21, FxSR Table 1) = PSNR(MATLAB-bicubic 1/s of SR, LR) on RGB,
unrounded downscale, no crop; and LPIPS (crop = scale) when its weights are given. Outputs: sweep.csv,
sweep.json (means per t, per-image values, protocol) and sweep.png (PSNR against NIQE, labelled by t).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from perceptsr.conditions.tmap import check_t, t_condition
from perceptsr.data.datasets import load_pair
from perceptsr.data.resize import degrade
from perceptsr.errors import InputError
from perceptsr.evaluation.evaluate import evaluate
from perceptsr.io.images import atomic_output, list_images, read_image
from perceptsr.metrics import psnr

OUTPUTS = ("sweep.csv", "sweep.json", "sweep.png")
METRIC_ORDER = ("psnr", "ssim", "lr_psnr", "niqe", "lpips")


def parse_t_values(spec: str) -> list[float]:
    """'start:stop:step' (stop included, e.g. 0:1:0.1 gives 11 values), 'a,b,c', or one value; all in [0,1]."""
    text = spec.strip()
    try:
        if ":" in text:
            parts = [float(p) for p in text.split(":")]
            if len(parts) != 3:
                raise ValueError
            start, stop, step = parts
            if step <= 0 or stop < start:
                raise InputError(f"--t {spec!r}: need start <= stop and a step > 0")
            count = math.floor((stop - start) / step + 1e-9) + 1
            values = [round(start + i * step, 10) for i in range(count)]
        else:
            values = [float(p) for p in text.split(",") if p.strip()]
    except ValueError:
        raise InputError(f"--t {spec!r}: expected start:stop:step, a comma list or one number") from None
    if not values:
        raise InputError(f"--t {spec!r}: no t values")
    if len(values) > 1000:
        raise InputError(f"--t {spec!r}: {len(values)} values is too many (at most 1000)")
    return [check_t(v) for v in values]


@dataclass
class SweepResult:
    """Mean metrics per t (rows, in sweep order), per-image values per t, and how they were measured."""

    rows: list[dict[str, float]]
    images: dict[str, dict[str, dict[str, float]]]
    protocol: dict
    notes: list[str] = field(default_factory=list)


def load_lpips_or_note(*, enabled: bool, net: str = "alex", weights: str | Path | None = None
                       ) -> tuple[nn.Module | None, str]:
    """LPIPS hook: (the network, "") when its weights are present, else (None, why it is left out).

    Weights come from `weights` / $PERCEPTSR_LPIPS_WEIGHTS (then a failure is an error: they were asked for)
    or the torch.hub cache / a download (a failure there only leaves LPIPS out).
    """
    if not enabled:
        return None, "LPIPS disabled with --no-lpips"
    from perceptsr.errors import CheckpointError
    from perceptsr.metrics.lpips import FOLDER_ENV, load_lpips

    try:
        return load_lpips(net, folder=weights), ""
    except CheckpointError as error:
        if weights is not None or os.environ.get(FOLDER_ENV):
            raise
        return None, f"LPIPS left out: {error}"


def _extra_metrics(sr_dir: Path, pairs: dict[str, tuple[Tensor, Tensor]], scale: int,
                   lpips_net: nn.Module | None) -> dict[str, dict[str, float]]:
    """LR-PSNR (and LPIPS) per image from the 8-bit SR files evaluate wrote."""
    values = {}
    for stem, (hr, lr) in pairs.items():
        sr = read_image(sr_dir / f"{stem}.png").rgb
        row = {"lr_psnr": psnr(degrade(sr, scale, bit_depth=None), lr, crop_border=0, y_channel=False)}
        if lpips_net is not None:
            from perceptsr.metrics.lpips import lpips_distance

            row["lpips"] = lpips_distance(sr, hr, lpips_net, crop_border=scale)
        values[stem] = row
    return values


def run_sweep(model: nn.Module, folder: Path, *, scale: int, ts: list[float], device: torch.device | str = "cpu",
              tile: int | None = None, max_images: int | None = None, lpips_net: nn.Module | None = None,
              lpips_note: str = "", image_dir: Path | None = None, progress: bool = True) -> SweepResult:
    """Evaluate `model` on the HR images of `folder` once per t (LPIPS too when `lpips_net` is given).

    With `image_dir`, SR images go to image_dir/t<t>/<stem>.png (else to a temporary folder: LR-PSNR and
    LPIPS are measured on those 8-bit files)."""
    if "t" not in getattr(model, "condition_scales", {}):
        raise InputError("this model takes no t (sweep needs an FxSR model)")
    paths = list_images([folder])[:max_images]
    pairs = {path.stem: load_pair(path, scale) for path in paths}
    notes = [lpips_note] if lpips_note else []
    metrics = ["psnr", "ssim", "niqe"]
    rows, images, protocol = [], {}, {}
    with tempfile.TemporaryDirectory() as scratch:
        for t in ts:
            sr_dir = (image_dir if image_dir is not None else Path(scratch)) / f"t{t:.3f}"
            result = evaluate(model, folder, scale=scale, metrics=metrics, device=device, tile=tile,
                              max_images=max_images, progress=progress, model_name=f"t={t:g}", sr_dir=sr_dir,
                              conditions_fn=lambda lr, hr, t=t: {"t": t_condition(lr, t=t, t_map=None)})
            extra = _extra_metrics(sr_dir, pairs, scale, lpips_net)
            per_image = {stem: {**values, **extra[stem]} for stem, values in result.images.items()}
            names = [m for m in METRIC_ORDER if m in next(iter(per_image.values()))]
            mean = {m: _nanmean([row[m] for row in per_image.values()]) for m in names}
            rows.append({"t": t, **mean})
            images[f"{t:g}"] = per_image
            protocol = result.protocol
    protocol = {**protocol, "metrics": [m for m in METRIC_ORDER if m in rows[0]],
                "lr_psnr": "RGB, PSNR(MATLAB bicubic 1/s of the 8-bit SR, unrounded; LR), no crop",
                "lpips": f"v0.1 ({getattr(lpips_net, 'net', '?')}), crop {scale}" if lpips_net is not None else None}
    return SweepResult(rows=rows, images=images, protocol=protocol, notes=notes)


def _nanmean(values: list[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return sum(defined) / len(defined) if defined else math.nan


def check_outputs(outdir: Path, *, overwrite: bool) -> None:
    """Refuse before any work when an output exists (unless overwrite) or outdir is a file."""
    if outdir.exists() and not outdir.is_dir():
        raise InputError(f"output directory {outdir} is an existing file")
    for name in OUTPUTS:
        if (outdir / name).exists() and not overwrite:
            raise InputError(f"output {outdir / name} already exists (pass --overwrite to replace it)")


def write_outputs(result: SweepResult, outdir: Path, *, model_name: str, dataset: str, overwrite: bool) -> None:
    """sweep.csv, sweep.json and sweep.png in `outdir`, each written atomically."""
    columns = ["t", *result.protocol["metrics"]]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: row[k] for k in columns} for row in result.rows)
    document = {"model": model_name, "dataset": dataset, "protocol": result.protocol, "notes": result.notes,
                "rows": result.rows, "images": result.images}
    with atomic_output(outdir / "sweep.csv", overwrite=overwrite) as tmp:
        tmp.write_text(table.getvalue())
    with atomic_output(outdir / "sweep.json", overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(document, indent=1, allow_nan=True) + "\n")
    with atomic_output(outdir / "sweep.png", overwrite=overwrite) as tmp:
        _plot(result.rows, tmp, title=f"{model_name} on {dataset}")


def _plot(rows: list[dict[str, float]], path: Path, *, title: str) -> None:
    """PSNR (distortion, up is better) against NIQE (perception, left is better), each point labelled by t."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
    try:
        niqe, value = [r["niqe"] for r in rows], [r["psnr"] for r in rows]
        ax.plot(niqe, value, "o-", color="tab:blue")
        for row in rows:
            ax.annotate(f"t={row['t']:g}", (row["niqe"], row["psnr"]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
        ax.set_xlabel("NIQE (lower = more natural)")
        ax.set_ylabel("PSNR, Y [dB]")
        ax.set_title(title, fontsize=9)
        ax.ticklabel_format(useOffset=False)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, format="png")
    finally:
        plt.close(fig)
