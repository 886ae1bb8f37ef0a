"""`perceptsr plot`: training curves from a run's log.jsonl (evaluation/curves.py), on logs this file writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli
from PIL import Image

from perceptsr.cli.main import main
from perceptsr.evaluation.curves import continued, figure_pixels, load_run, moving_average, plot_runs


def write_log(run: Path, records: list[dict], *, method: str | None = None, tail: str = "") -> Path:
    """`run/log.jsonl` with one JSON object per line (and `tail` after them: a torn line), and config.yaml."""
    run.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(r) + "\n" for r in records) + tail
    (run / "log.jsonl").write_text(text, encoding="utf-8")
    if method:
        (run / "config.yaml").write_text(f"method: {method}\nmodel: {{}}\n", encoding="utf-8")
    return run


def natsr_records(seed: int = 0) -> list[dict]:
    """NatSR's three phases: the NMD with its σ/α curriculum, the L1 pretraining, the GAN; validation rows."""
    rng = np.random.default_rng(seed)
    records = []
    sigma, alpha = 0.1, 0.5
    for step in range(10, 310, 10):
        if step % 100 == 0:
            sigma, alpha = sigma * 0.8, min(0.8, alpha + 0.1)
        records.append({"step": step, "phase": "nmd", "time": 1.0, "d_nmd": 0.7 * math.exp(-step / 200) + 0.05 *
                        rng.random(), "nmd_sigma": sigma, "nmd_alpha": alpha,
                        "nmd_val_noise_accuracy": 60 + step / 10, "nmd_val_blur_accuracy": 55 + step / 12,
                        "lr": 1e-4, "elapsed_s": step / 10})
    for step in range(310, 610, 10):
        records.append({"step": step, "phase": "pretrain", "time": 2.0, "g_l1": 0.05 * math.exp(-(step - 300) / 150)
                        + 0.01 * rng.random(), "lr": 1e-4 * (1 - (step - 300) / 400), "elapsed_s": step / 10})
        if step % 100 == 0:
            records.append({"step": step, "phase": "pretrain", "time": 2.0, "val_psnr": 20 + step / 100,
                            "val_ssim": 0.5 + step / 3000})
    for step in range(610, 910, 10):
        records.append({"step": step, "phase": "gan", "time": 3.0, "g_l1": 0.02 + 0.01 * rng.random(),
                        "g_naturalness": 1e-3 * (1 + rng.random()), "g_adversarial": 1e-3 * (1 + rng.random()),
                        "d_adversarial": 0.6 + 0.2 * rng.random(), "lr": 1e-4, "elapsed_s": step / 10})
        if step % 100 == 0:
            records.append({"step": step, "phase": "gan", "time": 3.0, "val_psnr": 24 - step / 300,
                            "val_ssim": 0.7 - step / 6000})
    return records


def srgan_records() -> list[dict]:
    records = []
    for step in range(1, 41):
        phase = "pretrain" if step <= 20 else "gan"
        row = {"step": step, "phase": phase, "g_mse": 0.01 / step, "lr": 1e-4}
        if phase == "gan":
            row.update({"g_perceptual": 0.05, "g_adversarial": 1e-3 * step, "d_adversarial": 0.7})
        records.append(row)
        if step % 10 == 0:
            records.append({"step": step, "phase": phase, "val_psnr": 25 + step / 10, "val_ssim": 0.7})
    return records


def drawn(png: Path) -> np.ndarray:
    return np.asarray(Image.open(png).convert("RGB"))


def assert_picture(png: Path, panels: int) -> None:
    """The PNG has the size of `panels` panels and is not blank: ink, and lines in matplotlib's first colour."""
    pixels = drawn(png)
    assert (pixels.shape[1], pixels.shape[0]) == figure_pixels(panels)
    ink = (pixels < 200).any(axis=-1).mean()
    assert 0.01 < ink < 0.5, ink
    blue = (np.abs(pixels.astype(int) - [31, 119, 180]).sum(axis=-1) < 40).sum()  # C0, the first line's colour
    assert blue > 500, blue


def test_natsr_run_through_the_cli_default_output(tmp_path: Path) -> None:
    run = write_log(tmp_path / "natsr_x4", natsr_records(), method="natsr")
    done = run_cli("plot", run)
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    assert (run / "curves.png").is_file() and not list(run.glob(".*.tmp"))
    for title in ("generator loss terms", "discriminator loss terms", "validation", "learning rate", "NatSR curriculum",
                  "NMD validation accuracy"):
        assert title in done.stderr
    assert "FxSR" not in done.stderr and "other" not in done.stderr
    assert_picture(run / "curves.png", panels=6)


def test_srgan_run_has_no_curriculum_panels(tmp_path: Path) -> None:
    run = load_run(write_log(tmp_path / "srgan", srgan_records(), method="srgan"))
    assert run.label == "srgan (srgan)"
    assert [p[0] for p in run.phases] == ["pretrain", "gan"] and run.phases[0][2] == 20
    panels = plot_runs([run], tmp_path / "srgan.png")
    assert panels == ["generator loss terms", "discriminator loss terms", "validation", "learning rate"]
    assert_picture(tmp_path / "srgan.png", panels=4)


def test_fxsr_t_and_unknown_values_get_their_panels(tmp_path: Path) -> None:
    records = [{"step": s, "phase": "gan", "g_l1": 0.1, "g_adversarial": s / 10 - 1, "t": (s % 7) / 7,
                "d_extra_term": 0.3, "new_value": s,
                "val_psnr": None} for s in range(1, 30)]  # a value that is never finite draws no panel
    run = load_run(write_log(tmp_path / "fx", records))
    assert run.method is None and run.label == "fx"
    panels = plot_runs([run], tmp_path / "fx.png")
    assert panels == ["generator loss terms", "discriminator loss terms", "FxSR: mean t of the batch",
                      "other logged values"]


def test_resumed_log_later_rows_win(tmp_path: Path) -> None:
    first = [{"step": s, "phase": "pretrain", "g_l1": 1.0} for s in range(10, 60, 10)]
    first.append({"step": 50, "phase": "pretrain", "val_psnr": 20.0})
    # killed after step 50, resumed from the checkpoint at 30: steps 40 and 50 are logged again, then 60
    again = [{"step": s, "phase": "pretrain", "g_l1": 2.0} for s in range(40, 70, 10)]
    again.append({"step": 60, "phase": "gan", "val_psnr": 21.0})
    run = load_run(write_log(tmp_path / "resumed", first + again))
    steps, values = run.series["g_l1"]
    assert steps.tolist() == [10, 20, 30, 40, 50, 60]
    assert values.tolist() == [1.0, 1.0, 1.0, 2.0, 2.0, 2.0]
    assert run.series["val_psnr"][0].tolist() == [60]  # the interrupted run's validation at 50 was redone, not kept
    assert run.phases == [("pretrain", 10, 60), ("gan", 60, 60)]


def test_same_step_rows_merge_and_later_value_of_a_key_wins() -> None:
    kept = continued([{"step": 10, "a": 1}, {"step": 10, "b": 2}, {"step": 20, "a": 3}, {"step": 10, "a": 4}])
    assert kept == [{"step": 10, "a": 4}]


def test_partial_last_line_and_non_finite_values(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    records = [{"step": s, "phase": "pretrain", "g_l1": 0.1 if s != 3 else None, "val_psnr": "inf" if s == 4 else 30}
               for s in range(1, 8)]
    run_dir = write_log(tmp_path / "live", records, tail='{"step": 8, "phase": "pretrain", "g_l')
    run = load_run(run_dir)
    steps, values = run.series["g_l1"]
    assert steps[-1] == 7 and math.isnan(values[2])
    assert math.isinf(run.series["val_psnr"][1][3])
    assert main(["plot", str(run_dir), "-o", str(tmp_path / "live.png")]) == 0
    assert (tmp_path / "live.png").is_file()


def test_several_runs_overlay_into_one_picture(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    a = write_log(tmp_path / "a", srgan_records(), method="srgan")
    b = write_log(tmp_path / "b", natsr_records(1), method="natsr")
    out = tmp_path / "both.png"
    assert main(["plot", str(a), str(b / "log.jsonl"), "-o", str(out), "--smooth", "3"]) == 0
    assert_picture(out, panels=6)
    orange = (np.abs(drawn(out).astype(int) - [255, 127, 14]).sum(axis=-1) < 40).sum()  # C1: the second run
    assert orange > 500
    assert "wrote" in capsys.readouterr().err


def test_moving_average_skips_gaps() -> None:
    values = np.array([1.0, np.nan, 3.0, 5.0, np.nan])
    smooth = moving_average(values, 3)
    assert smooth[0] == 1.0 and smooth[1] == 2.0 and smooth[2] == 4.0 and smooth[4] == 5.0


@pytest.mark.parametrize(("make", "argv", "message"), [
    (lambda d: None, [], "does not exist"),
    (lambda d: d.mkdir(), [], "has no log.jsonl"),
    (lambda d: write_log(d, []), [], "holds no records yet"),
    (lambda d: write_log(d, [], tail='{"step": 1, "pha'), [], "holds no records yet"),
    (lambda d: write_log(d, [{"step": 1, "phase": "x"}]), [], "nothing to plot"),
    (lambda d: write_log(d, srgan_records()), ["-o", "{tmp}/curves.jpg"], "plot writes PNG"),
    (lambda d: write_log(d, srgan_records()), ["{run}"], "several runs go into one picture"),
])
def test_user_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, make: object, argv: list[str],
                                  message: str) -> None:
    run = tmp_path / "run"
    make(run)
    args = [a.format(tmp=tmp_path, run=run) for a in argv]
    assert main(["plot", str(run), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and err.startswith("perceptsr: error:")
    assert not list(tmp_path.rglob("*.png")) and not list(tmp_path.rglob("*.tmp"))


def test_existing_output_is_kept_without_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run = write_log(tmp_path / "run", srgan_records())
    (run / "curves.png").write_bytes(b"keep")
    assert main(["plot", str(run)]) == 2
    assert "already exists (pass --overwrite" in capsys.readouterr().err
    assert (run / "curves.png").read_bytes() == b"keep"
    assert main(["plot", str(run), "--overwrite"]) == 0
    assert_picture(run / "curves.png", panels=4)


def test_unwritable_output_is_one_line(tmp_path: Path) -> None:
    run = write_log(tmp_path / "run", srgan_records())
    (tmp_path / "file").write_text("not a folder")
    done = run_cli("plot", run, "-o", tmp_path / "file" / "curves.png")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.count("\n") == 1 and "is an existing file" in done.stderr
