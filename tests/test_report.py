"""`perceptsr report`: model arguments, the protocol's numbers, the cache, LPIPS on/off, tables, plots, CLI."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from conftest import run_cli, tiny_release, write_pngs
from PIL import Image

from perceptsr.cli import main as cli
from perceptsr.data.resize import degrade
from perceptsr.errors import CheckpointError, InputError
from perceptsr.evaluation import evaluate as evaluate_module
from perceptsr.evaluation.evaluate import evaluate
from perceptsr.evaluation.protocol import Protocol
from perceptsr.evaluation.report import parse_model_spec
from perceptsr.evaluation.report import run_report as _run_report
from perceptsr.evaluation.report.plots import find_sweep, plot_pd, sweep_curves
from perceptsr.evaluation.report.viewer import render
from perceptsr.evaluation.strict_json import loads as strict_loads
from perceptsr.evaluation.strict_json import to_json
from perceptsr.inference.upscale import DEFAULT_OVERLAP, RunOptions
from perceptsr.io.images import read_image
from perceptsr.metrics import psnr
from perceptsr.metrics.lpips import LPIPS
from perceptsr.zoo.models import load_model

CPU = RunOptions(device="cpu")


def run_report(*, scale: int = 4, protocol: Protocol | None = None, **kwargs: object) -> tuple[dict, list[Path]]:
    return _run_report(protocol=protocol or Protocol(scale), run=CPU, progress=False, **kwargs)


def write_set(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    return write_pngs(folder, sizes, seed=seed, block=8)


def smooth_release(path: Path, scale: int = 4) -> Path:
    """A tiny MSRResNet with near-zero weights (output ≈ its bilinear skip): a bicubic-like model file."""
    return tiny_release(path, "msrresnet", scale, weight_scale=0.05)


def random_lpips() -> LPIPS:
    torch.manual_seed(0)
    module = LPIPS("alex")
    for k in range(5):
        head = getattr(module, f"lin{k}").model[1].weight
        head.data = torch.rand_like(head)
    return module


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("report")
    data = write_set(root / "tiny", [(104, 200), (64, 60)])
    model = smooth_release(root / "smooth.safetensors")
    return {"root": root, "data": data, "model": model}


def test_model_arguments() -> None:
    plain = parse_model_spec("bicubic")
    assert (plain.source, plain.label, plain.option_text()) == ("bicubic", "bicubic", "")
    spec = parse_model_spec("runs/fx.safetensors:t=0.3,label=FxSR-0.3")
    assert (spec.source, spec.label, spec.options.t) == ("runs/fx.safetensors", "FxSR-0.3", 0.3)
    assert parse_model_spec("fx.safetensors:t=0.5").label == "fx (t=0.5)"
    assert parse_model_spec(r"C:\models\x.safetensors").source == r"C:\models\x.safetensors"  # no options
    for bad in ("x.safetensors:t=abc", "x.safetensors:colour=red", "x.safetensors:t="):
        with pytest.raises(InputError):
            parse_model_spec(bad)


def test_numbers_follow_the_protocol_and_the_cache_is_reused(setup: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    out = setup["root"] / "out"
    models = [parse_model_spec("bicubic"), parse_model_spec(str(setup["model"]))]
    doc, files = run_report(models=models, data=[setup["data"]], out=out)
    bic, smooth = (m["id"] for m in doc["models"])
    assert [c["key"] for c in doc["columns"]] == ["psnr", "ssim", "lr_psnr", "niqe"]
    assert doc["protocol"]["description"] == "Y, crop 4, HR mod-cropped to 4"
    assert doc["run"]["tile_overlap"] == DEFAULT_OVERLAP
    # the numbers are the shared evaluator's, exactly (same pairs, same SR path, same quantisation)
    for spec, mid in zip(models, (bic, smooth), strict=True):
        ref = evaluate(load_model(spec.source, scale=4), setup["data"], scale=4, run=CPU)
        assert to_json(doc["results"]["tiny"][mid]["images"]) == to_json(ref.images)  # NaN (NIQE) -> None
    # an RGB report follows its protocol
    rgb, _ = run_report(models=models[:1], data=[setup["data"]], out=setup["root"] / "rgb",
                        protocol=Protocol(4, y_channel=False))
    ref = evaluate(load_model("bicubic", scale=4), setup["data"], protocol=Protocol(4, y_channel=False), run=CPU)
    assert rgb["results"]["tiny"][rgb["models"][0]["id"]]["mean"]["psnr"] == ref.mean["psnr"]
    assert rgb["columns"][0]["header"] == "PSNR-RGB" and doc["columns"][0]["header"] == "PSNR-Y"
    images = doc["results"]["tiny"][smooth]["images"]
    sr = read_image(out / "report_files" / "sr" / smooth / "tiny" / "im0.png").rgb
    lr = degrade(read_image(setup["data"] / "im0.png").rgb, 4)
    assert images["im0"]["lr_psnr"] == psnr(degrade(sr, 4), lr)  # the one LR-PSNR: SR downscaled, rounded to 8 bit
    assert 20 < images["im0"]["psnr"] < 60
    assert math.isfinite(images["im0"]["niqe"]) and math.isnan(images["im1"]["niqe"])  # 64x60: too small
    assert doc["results"]["tiny"][smooth]["mean"]["niqe"] == images["im0"]["niqe"]  # NaN left out of the mean
    assert [p.name for p in files] == ["results.json", "results.csv", "results.md", "pd_niqe.png", "index.html"]

    calls = []
    runner = evaluate_module._Runner
    monkeypatch.setattr(runner, "__call__", lambda *a, **k: calls.append(a) or pytest.fail("ran"))
    monkeypatch.setattr(evaluate_module, "measure", lambda *a, **k: pytest.fail("measured"))
    again, _ = run_report(models=models, data=[setup["data"]], out=out)
    assert json.dumps(to_json(again)) == json.dumps(to_json(doc))

    # a changed HR image is recomputed (for every model), the other image is not
    monkeypatch.undo()
    real = runner.__call__
    monkeypatch.setattr(runner, "__call__", lambda *a, **k: calls.append(a) or real(*a, **k))
    changed = setup["root"] / "changed" / "tiny"
    changed.mkdir(parents=True)
    shutil.copyfile(setup["data"] / "im0.png", changed / "im0.png")
    Image.open(setup["data"] / "im1.png").transpose(Image.FLIP_LEFT_RIGHT).save(changed / "im1.png")
    run_report(models=models, data=[changed], out=out)
    assert len(calls) == 2  # im1 for both models
    # another protocol reuses the SR images but measures again
    monkeypatch.setattr(runner, "__call__", lambda *a, **k: calls.append(a) or pytest.fail("ran"))
    cropped, _ = run_report(models=models, data=[changed], out=out, protocol=Protocol(4, crop_border=0))
    assert cropped["results"]["tiny"][bic]["mean"]["psnr"] != doc["results"]["tiny"][bic]["mean"]["psnr"]
    # the cache's meta files are strict JSON
    for meta in (out / "report_files" / "sr").rglob("*.json"):
        strict_loads(meta.read_text())


def test_lpips_column_when_weights_are_loaded(setup: dict) -> None:
    out = setup["root"] / "with_lpips"
    models = [parse_model_spec("bicubic"), parse_model_spec(f"{setup['model']}:label=smooth")]
    doc, _ = run_report(models=models, data=[setup["data"]], out=out, lpips=random_lpips())
    assert doc["columns"][-1]["key"] == "lpips" and doc["lpips"] == {"available": True, "net": "alex", "note": ""}
    values = [doc["results"]["tiny"][m["id"]]["images"]["im0"]["lpips"] for m in doc["models"]]
    assert all(v > 0 for v in values) and values[0] != values[1]
    assert (out / "pd_lpips.png").is_file()
    md = (out / "results.md").read_text()
    assert "LPIPS ↓" in md and "LPIPS v0.1 alex, RGB, crop 4" in md
    # without weights the column is left out, never filled in
    doc, _ = run_report(models=models, data=[setup["data"]], out=out, lpips_note="no weights offline")
    assert "lpips" not in doc["results"]["tiny"][doc["models"][0]["id"]]["mean"]
    assert "LPIPS: unavailable (no weights offline)" in (out / "results.md").read_text()
    assert "lpips" not in (out / "results.csv").read_text()


def test_tables_name_conventions_and_mark_the_best(setup: dict) -> None:
    out = setup["root"] / "out"
    models = [parse_model_spec("bicubic"), parse_model_spec(str(setup["model"]))]
    doc, _ = run_report(models=models, data=[setup["data"]], out=out)
    strict = strict_loads((out / "results.json").read_text())
    assert strict["results"]["tiny"][doc["models"][0]["id"]]["images"]["im1"]["niqe"] is None
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert len(rows) == 2 * (2 + 1) and {r["image"] for r in rows} == {"im0", "im1", "mean"}
    assert float(rows[0]["psnr"]) == doc["results"]["tiny"][doc["models"][0]["id"]]["images"]["im0"]["psnr"]
    md = (out / "results.md").read_text()
    assert "MATLAB Y channel" in md and "on RGB" in md and "crop 4" in md and "Y, crop 4, HR mod-cropped to 4" in md
    assert f"fast path, fp32, tile auto, overlap {DEFAULT_OVERLAP}" in md
    table = [line for line in md.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| model | PSNR-Y ↑ | SSIM-Y ↑ | LR-PSNR ↑ | NIQE ↓")
    for column in range(1, 5):
        cells = [line.split(" | ")[column] for line in table[1:]]
        assert sum(c.startswith("**") for c in cells) >= 1, (column, cells)


def test_sweep_files_are_found_and_plotted(setup: dict, tmp_path: Path) -> None:
    model = {"id": "x", "label": "fx (t=0.8)", "source": str(tmp_path / "fx.safetensors")}
    assert find_sweep(model, tmp_path) is None
    rows = [{"t": t, "psnr": 30 - 3 * t, "ssim": 0.8, "niqe": 8 - 4 * t} for t in (1.0, 0.0, 0.5)]
    sweep = {"model": "other.safetensors", "dataset": "tiny", "protocol": {"y_channel": True}, "rows": rows}
    (tmp_path / "out" / "fx_sweep").mkdir(parents=True)
    (tmp_path / "out" / "fx_sweep" / "sweep.json").write_text(json.dumps(sweep))  # as `perceptsr sweep -o` does
    assert find_sweep(model, tmp_path / "out") is None  # another model's sweep
    sweep["model"] = "fx.safetensors"
    (tmp_path / "out" / "fx_sweep" / "sweep.json").write_text(json.dumps(sweep))
    found = find_sweep(model, tmp_path / "out")
    assert found is not None and sweep_curves(found, "niqe") == {"tiny": [(0.0, 8.0, 30.0), (0.5, 6.0, 28.5),
                                                                          (1.0, 4.0, 27.0)]}
    assert sweep_curves(found, "lpips") == {}  # no LPIPS in this sweep
    assert sweep_curves({**found, "protocol": {"y_channel": False}}, "niqe") == {}  # RGB PSNR: not on this axis
    (tmp_path / "fx.sweep.json").write_text(json.dumps({**sweep, "rows": rows[:1]}))
    assert find_sweep(model, tmp_path / "out")["rows"] == rows[:1]  # beside the model file wins
    doc = {"scale": 4, "protocol": {"y_channel": True, "crop_border": 4}, "columns": [{"key": "psnr"}, {"key": "niqe"}],
           "datasets": [{"name": "tiny"}], "models": [model],
           "results": {"tiny": {"x": {"mean": {"psnr": 29.0, "niqe": 5.0}}}}}
    (tmp_path / "fx.sweep.json").unlink()
    assert [p.name for p in plot_pd(doc, tmp_path / "out")] == ["pd_niqe.png"]
    assert Image.open(tmp_path / "out" / "pd_niqe.png").size[0] > 300


def test_viewer_page_escapes_labels(setup: dict) -> None:
    out = setup["root"] / "out"
    models = [parse_model_spec("bicubic:label=</script><b>x")]
    doc, _ = run_report(models=models, data=[setup["data"]], out=out)
    page = render(doc, ["results.md"])
    assert "</script><b>x" not in page and "{{" not in page
    start = page.index('id="report-data">') + len('id="report-data">')
    data = json.loads(page[start:page.index("</script>", start)])
    assert data["panels"][1]["label"] == "</script><b>x"
    assert data["images"][0]["src"]["hr"] == "report_files/hr/tiny/im0.png"


def test_cli_lpips_unavailable_is_one_line(setup: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture) -> None:
    def offline(net: str, *, folder: Path | None = None) -> LPIPS:
        raise CheckpointError("AlexNet ImageNet weights are not available offline (no network)")

    monkeypatch.setattr("perceptsr.metrics.lpips.load_lpips", offline)
    monkeypatch.delenv("PERCEPTSR_LPIPS_WEIGHTS", raising=False)
    out = tmp_path / "cli"
    code = cli.main(["report", "--model", "bicubic", "--data", str(setup["data"]), "--scale", "4", "-o", str(out),
                     "--quiet", "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 0
    assert [line for line in err.splitlines() if "LPIPS" in line] == [
        "perceptsr: LPIPS left out: AlexNet ImageNet weights are not available offline (no network)"]
    assert "LPIPS: unavailable" in (out / "results.md").read_text()
    # an explicit folder that does not work is an error, not a silent omission
    code = cli.main(["report", "--model", "bicubic", "--data", str(setup["data"]), "--scale", "4", "-o", str(out),
                     "--quiet", "--lpips-weights", str(tmp_path)])
    assert code == 2 and "error" in capsys.readouterr().err


def test_cli_end_to_end(setup: dict, tmp_path: Path) -> None:
    out = tmp_path / "e2e"
    done = run_cli("report", "--data", setup["data"], "--scale", "4", "--no-lpips", "--quiet", "--device", "cpu",
                   "--model", "bicubic", "--model", setup["model"], "-o", out, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"index.html", "results.md", "results.csv", "results.json",
                                               "pd_niqe.png", "report_files"}  # the caches in their own folder
    assert {p.name for p in (out / "report_files").iterdir()} == {"sr", "hr"}


def test_cli_bad_input_is_one_line_and_writes_no_results(setup: dict, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture) -> None:
    base = ["report", "--data", str(setup["data"]), "--scale", "4", "--no-lpips", "--quiet", "--model", "bicubic"]
    for extra, expected in ((["--model", str(tmp_path / "missing.safetensors")], "missing.safetensors"),
                            (["--model", "bicubic:t=0.5"], "FxSR"),
                            (["--model", "bicubic:label=a", "--model", "bicubic:label=a"], "labelled"),
                            (["--model", f"{setup['model']}:seg=auto"], "SFTGAN")):
        code = cli.main([*base, *extra, "-o", str(tmp_path / "bad")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expected in err[0], err
        assert not (tmp_path / "bad" / "results.json").exists()


def test_conditional_model_defaults_and_options(setup: dict) -> None:
    path = tiny_release(setup["root"] / "fx.safetensors", "fxsr", 4, seed=1)
    models = [parse_model_spec(str(path)), parse_model_spec(f"{path}:t=0"), parse_model_spec(f"{path}:t=0.8")]
    doc, _ = run_report(models=models, data=[setup["data"]], out=setup["root"] / "fx")
    default, zero, explicit = (doc["results"]["tiny"][m["id"]]["images"]["im0"] for m in doc["models"])
    assert [m["label"] for m in doc["models"]] == ["fx", "fx (t=0)", "fx (t=0.8)"]
    assert default == explicit and default["psnr"] != zero["psnr"]  # default t = 0.8, as FxSR's test
    assert len({m["id"] for m in doc["models"]}) == 3  # options are part of the cache key


def test_csv_cells_cannot_carry_a_formula(setup: dict) -> None:
    out = setup["root"] / "formula"
    run_report(models=[parse_model_spec("bicubic:label==1+1"), parse_model_spec("bicubic:label=@SUM(A1)")],
               data=[setup["data"]], out=out)
    rows = list(csv.reader((out / "results.csv").open()))
    assert {row[1] for row in rows[1:]} == {"'=1+1", "'@SUM(A1)"}
    assert all(not cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row[:3])
    assert float(rows[1][3]) > 20  # numbers stay numbers
