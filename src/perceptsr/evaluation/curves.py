"""Training curves of a run (`perceptsr plot RUN`): one PNG of what `RUN/log.jsonl` recorded, over iterations.

A log is read as it is, even while its run writes it: a line that is not a JSON object (the torn last line of a
write in progress, a foreign line) is skipped. A resumed run may log steps again that the interrupted one had
logged (when its log was not trimmed, or a copy was joined): a record whose step is lower than one before it starts
over from that step, dropping the earlier records at or past it, and for a key logged twice at one step the later
value wins. So the picture is always that of the run as it continued.

Panels, each drawn only when the log has its values: generator loss terms (`g_*`, log scale, with a moving average
over the noisy per-step values), discriminator terms (`d_*`), validation PSNR with SSIM on a second axis, the
learning rate, NatSR's curriculum (σ, α) and its NMD's validation accuracies, FxSR's mean t, and any other number
the method logged. Phase boundaries are dotted vertical lines labelled with the next phase's name.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from perceptsr.errors import InputError, PerceptsrError
from perceptsr.evaluation.strict_json import from_json, loads
from perceptsr.io.images import atomic_output

if TYPE_CHECKING:
    from matplotlib.axes import Axes

LOG_NAME = "log.jsonl"
# Record fields that are bookkeeping, not curves.
NOT_CURVES = frozenset({"step", "phase", "time", "elapsed_s"})
WIDTH_IN = 11.0  # figure width in inches
PANEL_IN = 2.3  # height of one panel in inches
TITLE_IN = 0.5  # room for the title
DPI = 100
STYLES = ("-", "--", "-.", (0, (5, 1, 1, 1, 1, 1)))  # one per key when runs are overlaid (dotted: phases)


@dataclass
class Panel:
    """One subplot: the keys on its left axis (and right axis), how they are drawn."""

    title: str
    keys: list[str]
    right: list[str] = field(default_factory=list)
    log: bool = False  # log scale when every value is positive (symlog otherwise)
    smooth: bool = False  # raw values faint, their moving average on top
    steps: bool = False  # a value held until the next one (a schedule)
    markers: bool = False  # few points (validation): show each
    unit: str = ""


@dataclass
class RunLog:
    """What one run logged: key -> (steps, values) sorted by step, and its phases in order."""

    name: str
    method: str | None
    series: dict[str, tuple[np.ndarray, np.ndarray]]
    phases: list[tuple[str, int, int]]  # (phase, first logged step, last logged step)

    @property
    def label(self) -> str:
        return f"{self.name} ({self.method})" if self.method else self.name


def log_path(run: Path) -> Path:
    """`run/log.jsonl`, or `run` itself when it is a log file; a missing run or log is an InputError."""
    if run.is_file():
        return run
    if not run.exists():
        raise InputError(f"run folder {run} does not exist")
    path = run / LOG_NAME
    if not path.is_file():
        raise InputError(f"{run} has no {LOG_NAME} (is it a run folder written by `perceptsr train`?)")
    return path


def read_records(path: Path) -> list[dict]:
    """The JSON-object lines of `path` that carry an integer step, in file order; any other line is skipped."""
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    records = []
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            record = loads(line.decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            continue  # a torn last line of a log being written, or a line that is not ours
        if isinstance(record, dict) and isinstance(record.get("step"), int) and not isinstance(record["step"], bool):
            records.append(record)
    return records


def continued(records: list[dict]) -> list[dict]:
    """The records of the run as it continued: a step lower than one logged before it (a resume) drops the
    earlier records at or past that step."""
    kept: list[dict] = []
    last = -math.inf
    for record in records:
        step = record["step"]
        if step < last:
            kept = [r for r in kept if r["step"] < step]
        kept.append(record)
        last = max(r["step"] for r in kept)
    return kept


def number(value: object) -> float | None:
    """A logged value as a float (null -> NaN, "inf" -> inf), or None for anything that is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)) or value is None or value in ("inf", "-inf"):
        return from_json(value)
    return None


def load_run(run: Path) -> RunLog:
    """Read `run` (a run folder or its log file) into curves; a log without records is an InputError."""
    path = log_path(run)
    records = continued(read_records(path))
    if not records:
        raise InputError(f"{path} holds no records yet")
    values: dict[str, dict[int, float]] = {}
    phases: list[tuple[str, int, int]] = []
    for record in records:
        step = record["step"]
        for key, raw in record.items():
            value = number(raw)
            if key not in NOT_CURVES and value is not None:
                values.setdefault(key, {})[step] = value  # later rows win
        phase = str(record.get("phase", ""))
        if phases and phases[-1][0] == phase:
            phases[-1] = (phase, phases[-1][1], max(phases[-1][2], step))
        else:
            phases.append((phase, step, step))
    series = {}
    for key, by_step in values.items():
        steps = np.array(sorted(by_step), dtype=np.int64)
        series[key] = (steps, np.array([by_step[s] for s in steps], dtype=np.float64))
    folder = path.parent
    return RunLog(name=folder.resolve().name, method=run_method(folder), series=series, phases=phases)


def run_method(folder: Path) -> str | None:
    """The method named in the run's config.yaml, or None when there is no readable one (a title detail only)."""
    config = folder / "config.yaml"
    if not config.is_file():
        return None
    from perceptsr.config import read_yaml

    try:
        method = read_yaml(config).get("method")
    except (PerceptsrError, AttributeError):
        return None
    return method if isinstance(method, str) else None


def panels_for(runs: list[RunLog]) -> list[Panel]:
    """The panels that have data (a finite value) in at least one run, in reading order."""
    keys = list(dict.fromkeys(k for run in runs for k, (_, v) in run.series.items() if np.isfinite(v).any()))
    wanted = [
        Panel("generator loss terms", [k for k in keys if k.startswith("g_")], log=True, smooth=True),
        Panel("discriminator loss terms", [k for k in keys if k.startswith("d_")], smooth=True),
        Panel("validation", [k for k in keys if k == "val_psnr"], right=[k for k in keys if k == "val_ssim"],
              markers=True, unit="PSNR (dB)"),
        Panel("learning rate", [k for k in keys if k == "lr"], log=True),
        Panel("NatSR curriculum: NMD noise σ and blend α", [k for k in keys if k in ("nmd_sigma", "nmd_alpha")],
              steps=True),
        Panel("NMD validation accuracy", [k for k in keys if k.startswith("nmd_val_")], markers=True, unit="%"),
        Panel("FxSR: mean t of the batch", [k for k in keys if k == "t"], smooth=True),
    ]
    claimed = {k for panel in wanted for k in panel.keys + panel.right}
    wanted.append(Panel("other logged values", [k for k in keys if k not in claimed and not k.startswith("val_")]))
    wanted.append(Panel("other validation values",
                        [k for k in keys if k not in claimed and k.startswith("val_")], markers=True))
    return [panel for panel in wanted if panel.keys or panel.right]


def default_window(count: int) -> int:
    """A light moving average: about 1/20 of the points, odd so it stays centred; 1 (none) for short logs."""
    window = count // 20
    return window + 1 if window % 2 == 0 else window if window > 1 else 1


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over `window` points, of the finite ones only (edges average fewer); NaN where none is."""
    finite = np.isfinite(values)
    kernel = np.ones(window)
    sums = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
    counts = np.convolve(finite.astype(np.float64), kernel, mode="same")
    out = np.full_like(values, np.nan)
    np.divide(sums, counts, out=out, where=counts > 0)
    return out


def short_name(key: str) -> str:
    """`g_l1` -> `l1`, `nmd_val_noise_accuracy` -> `noise accuracy`: the legend already says which panel."""
    for prefix in ("g_", "d_", "nmd_val_", "nmd_", "val_"):
        if key.startswith(prefix):
            key = key[len(prefix):]
            break
    return {"sigma": "σ", "alpha": "α", "psnr": "PSNR", "ssim": "SSIM"}.get(key, key.replace("_", " "))


def figure_pixels(panels: int) -> tuple[int, int]:
    """(width, height) in pixels of a figure with `panels` panels."""
    return round(WIDTH_IN * DPI), round((TITLE_IN + PANEL_IN * panels) * DPI)


def plot_runs(runs: list[RunLog], output: Path, *, overwrite: bool = False, smooth: int | None = None) -> list[str]:
    """Draw `runs` (overlaid when several) into the PNG `output`, written atomically; return the panel titles.

    `smooth`: moving-average window in logged points for the noisy panels (None: `default_window`; 0 or 1: off).
    """
    panels = panels_for(runs)
    if not panels:
        raise InputError(f"nothing to plot: {', '.join(run.name for run in runs)} logged no numbers")
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    width, height = figure_pixels(len(panels))
    fig, axes = plt.subplots(len(panels), 1, sharex=True, squeeze=False, figsize=(width / DPI, height / DPI),
                             dpi=DPI, layout="constrained")
    try:
        for panel, ax in zip(panels, axes[:, 0], strict=True):
            draw_panel(ax, panel, runs, smooth)
        for index, run in enumerate(runs):
            color = "0.35" if len(runs) == 1 else f"C{index}"
            for row, ax in enumerate(axes[:, 0]):
                draw_phases(ax, run, color, names=row == 0, row=index)
        axes[-1, 0].set_xlim(left=0)
        axes[-1, 0].set_xlabel("iteration")
        title = " vs ".join(run.label for run in runs)
        fig.suptitle(title, fontsize=12, fontweight="bold")
        with atomic_output(output, overwrite=overwrite) as temp:
            fig.savefig(temp, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return [panel.title for panel in panels]


def draw_panel(ax: Axes, panel: Panel, runs: list[RunLog], smooth: int | None) -> None:
    """One panel: a line per (run, key). One run: a colour per key. Several: a colour per run (the same in every
    panel, as its phase lines) and a line style per key, the run's name in the legend."""
    several = len(runs) > 1
    right = ax.twinx() if panel.right else None
    left_values: list[np.ndarray] = []
    longest = max(len(run.series[k][0]) for run in runs for k in panel.keys + panel.right if k in run.series)
    window = (default_window(longest) if smooth is None else max(1, smooth)) if panel.smooth else 1
    for index, run in enumerate(runs):
        keys = [(ax, k) for k in panel.keys] + [(right, k) for k in panel.right]
        for position, (side, key) in enumerate(keys):
            if key not in run.series:
                continue
            steps, values = run.series[key]
            values = np.where(np.isfinite(values), values, np.nan)  # an infinite value is a gap, as NaN is
            if side is ax:
                left_values.append(values)
            label = f"{run.name}: {short_name(key)}" if several else short_name(key)
            color = f"C{(index if several else position) % 10}"
            style = STYLES[position % len(STYLES)] if several or side is right else "-"
            draw_series(side, steps, values, panel, window, label=label, color=color, style=style)
    if panel.log:
        scale_log(ax, np.concatenate(left_values) if left_values else np.array([]))
    note = f"  (faint: as logged; bold: moving mean of {window} points)" if window > 1 else ""
    ax.set_title(panel.title + note, fontsize=10, loc="left")
    ax.grid(True, alpha=0.3, which="major")
    ax.tick_params(which="both", labelsize=8)
    ax.tick_params(axis="x", labelbottom=True)
    if panel.unit:
        ax.set_ylabel(panel.unit, fontsize=9)
    handles, labels = ax.get_legend_handles_labels()
    if right is not None:
        right.set_ylabel("SSIM", fontsize=9)
        right.tick_params(which="both", labelsize=8)
        more = right.get_legend_handles_labels()
        handles, labels = handles + more[0], labels + more[1]
    if handles:
        ax.legend(handles, labels, fontsize=8, loc="upper left", bbox_to_anchor=(1.06 if right else 1.01, 1),
                  borderaxespad=0, frameon=False)


def scale_log(ax: Axes, values: np.ndarray) -> None:
    """Log scale for positive values (symlog when some are not), ticks written as plain numbers (0.04, 1e-05)."""
    from matplotlib.ticker import LogFormatterSciNotation

    class Plain(LogFormatterSciNotation):
        """matplotlib's choice of which ticks to label, in `%g` rather than 4×10⁻² mathtext."""

        def __call__(self, x: float, pos: int | None = None) -> str:
            return f"{x:g}" if super().__call__(x, pos) else ""

    finite = values[np.isfinite(values)]
    if not len(finite):
        return
    if finite.min() > 0:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(Plain())
        ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False))
    else:  # a term that goes negative (WGAN, relativistic): linear near 0, below most terms' typical magnitude
        magnitudes = np.abs(finite[finite != 0])
        ax.set_yscale("symlog", linthresh=float(np.percentile(magnitudes, 5)) if len(magnitudes) else 1.0)


def draw_series(ax: Axes, steps: np.ndarray, values: np.ndarray, panel: Panel, window: int, *, label: str,
                color: str, style: object) -> None:
    """One curve; with a moving-average `window` > 1, the logged values faint and their mean bold on top."""
    if window > 1 and len(values) > 1:
        ax.plot(steps, values, color=color, alpha=0.3, lw=0.8, ls=style)
        ax.plot(steps, moving_average(values, window), color=color, lw=1.6, ls=style, label=label)
        return
    ax.plot(steps, values, color=color, lw=1.4, ls=style, label=label, drawstyle="steps-post" if panel.steps else
            "default", marker="o" if panel.markers and len(values) <= 60 or len(values) == 1 else None, ms=3)


def draw_phases(ax: Axes, run: RunLog, color: str, *, names: bool, row: int = 0) -> None:
    """A dotted line where each phase ends and the next begins (at the last logged step of the one ending);
    on the top panel (`names`) each phase's name at its start, on text line `row` (one per overlaid run)."""
    start = 0
    for index, (phase, _, last) in enumerate(run.phases):
        if names and phase:
            ax.annotate(phase, xy=(start, 1), xycoords=("data", "axes fraction"), xytext=(3, -3 - 11 * row),
                        textcoords="offset points", ha="left", va="top", fontsize=8, color=color,
                        fontstyle="italic", bbox={"fc": "white", "ec": "none", "alpha": 0.75, "pad": 0.5})
        if index < len(run.phases) - 1:
            ax.axvline(last, color=color, ls=":", lw=1.2)
        start = last
