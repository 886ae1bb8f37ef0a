"""The measuring commands share one path: eval, report and sweep agree; metrics mod-crops; strict JSON everywhere."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_release, write_pngs
from PIL import Image

from perceptsr.cli.main import main
from perceptsr.cli.measure import cmd_eval, cmd_metrics, cmd_report, cmd_sweep
from perceptsr.conditions import parse_model_spec
from perceptsr.errors import InputError
from perceptsr.evaluation.evaluate import evaluate
from perceptsr.evaluation.protocol import Protocol
from perceptsr.evaluation.strict_json import dumps, from_json, to_json
from perceptsr.evaluation.strict_json import loads as strict_loads
from perceptsr.inference.upscale import DEFAULT_OVERLAP, RunOptions
from perceptsr.zoo.models import load_model

CPU = RunOptions(device="cpu")
MEASURED = ("psnr", "ssim", "lr_psnr", "niqe")


def write_set(folder: Path, sizes: list[tuple[int, int]], seed: int = 0) -> Path:
    return write_pngs(folder, sizes, seed=seed, block=8)


@pytest.fixture(scope="module")
def fxsr_release(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny t-conditioned FxSRNet release (random weights: t changes the output)."""
    return tiny_release(tmp_path_factory.mktemp("fx") / "fx.safetensors", "fxsr", 4, seed=1)


def test_eval_report_and_sweep_give_identical_numbers(fxsr_release: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture) -> None:
    data = [write_set(tmp_path / "one", [(104, 200), (64, 60)]), write_set(tmp_path / "two", [(100, 108)], seed=1)]
    spec = parse_model_spec(f"{fxsr_release}:t=0.3")
    protocol = Protocol(4)
    common = {"data": data, "protocol": protocol, "run": CPU, "max_images": None, "max_pixels": 10**7, "quiet": True}

    assert cmd_eval(models=[spec], json=True, **common) == 0
    evaluated = strict_loads(capsys.readouterr().out)
    assert evaluated["protocol"]["description"] == "Y, crop 4, HR mod-cropped to 4"
    assert evaluated["run"]["tile_overlap"] == DEFAULT_OVERLAP and evaluated["run"]["path"] == "fast"

    lpips = {"lpips_net": "alex", "lpips_weights": None, "no_lpips": True, "overwrite": False}
    assert cmd_report(models=[spec], output=tmp_path / "report", **common, **lpips) == 0
    report = strict_loads((tmp_path / "report" / "results.json").read_text())
    model_id = report["models"][0]["id"]

    assert cmd_sweep(models=[spec, parse_model_spec(f"{fxsr_release}:label=second")], t_values="0.3,0.9",
                     output=tmp_path / "sweep", save_images=False, **common, **lpips) == 0
    sweep = strict_loads((tmp_path / "sweep" / "sweep.json").read_text())
    assert [(r["model"], r["dataset"], r["t"]) for r in sweep["rows"]] == [
        (label, dataset, t) for label in ("fx (t=0.3)", "second") for dataset in ("one", "two") for t in (0.3, 0.9)]

    for dataset in ("one", "two"):
        row = next(r for r in sweep["rows"] if (r["model"], r["dataset"], r["t"]) == (spec.label, dataset, 0.3))
        for metric in MEASURED:
            values = {evaluated["results"][dataset][spec.label][metric], report["results"][dataset][model_id]["mean"]
                      [metric], row[metric]}
            assert len(values) == 1, (dataset, metric, values)  # identical, not merely close
        assert report["results"][dataset][model_id]["images"] == sweep["images"][spec.label][dataset]["0.3"]
    # t matters, and the second label ran the same model: its t=0.3 rows equal the first's
    rows = {(r["model"], r["dataset"], r["t"]): r for r in sweep["rows"]}
    assert rows[(spec.label, "one", 0.3)]["psnr"] != rows[(spec.label, "one", 0.9)]["psnr"]
    assert {k: v for k, v in rows[("second", "one", 0.9)].items() if k != "model"} == {
        k: v for k, v in rows[(spec.label, "one", 0.9)].items() if k != "model"}
    # the undefined NIQE of the small image is null in every file, and left out of the means
    assert report["results"]["one"][model_id]["images"]["im1"]["niqe"] is None
    assert sweep["images"][spec.label]["one"]["0.3"]["im1"]["niqe"] is None
    assert sweep["protocol"] == report["protocol"]  # eval's names fewer metric conventions (no LPIPS column there)
    assert {k: v for k, v in evaluated["protocol"].items() if k != "metrics"} == {
        k: v for k, v in report["protocol"].items() if k != "metrics"}
    header = next(csv.reader((tmp_path / "sweep" / "sweep.csv").open()))
    assert header == ["model", "dataset", "t", *MEASURED]


def test_sweep_refuses_models_without_t_and_existing_outputs(fxsr_release: Path, tmp_path: Path) -> None:
    data = write_set(tmp_path / "set", [(48, 48)])
    kwargs = {"data": [data], "t_values": "0.5", "protocol": Protocol(4), "run": CPU, "max_images": None,
              "max_pixels": 10**7, "save_images": False, "lpips_net": "alex", "lpips_weights": None, "no_lpips": True,
              "overwrite": False, "quiet": True}
    with pytest.raises(InputError, match="takes no t"):
        cmd_sweep(models=[parse_model_spec("bicubic")], output=tmp_path / "a", **kwargs)
    fx = [parse_model_spec(str(fxsr_release))]
    with pytest.raises(InputError, match="between 0 and 1"):
        cmd_sweep(models=fx, output=tmp_path / "b", **{**kwargs, "t_values": "0:2:1"})
    for bad in ("0:inf:1", "0:1:1e-300"):
        with pytest.raises(InputError):
            cmd_sweep(models=fx, output=tmp_path / "c", **{**kwargs, "t_values": bad})
    assert not any((tmp_path / name).exists() for name in "abc")
    assert cmd_sweep(models=[parse_model_spec(str(fxsr_release))], output=tmp_path / "d",
                     **{**kwargs, "save_images": True}) == 0
    assert (tmp_path / "d" / "images" / "fx" / "set" / "t0.500" / "im0.png").is_file()
    with pytest.raises(InputError, match="already exists"):
        cmd_sweep(models=[parse_model_spec(str(fxsr_release))], output=tmp_path / "d", **kwargs)


def test_readme_pipeline_degrade_upscale_metrics_on_set14(shared, tmp_path: Path,  # noqa: ANN001
                                                           capsys: pytest.CaptureFixture) -> None:
    """degrade -> upscale -> metrics --scale 4 works on Set14 (sizes not multiples of 4) and gives eval's numbers."""
    set14 = shared("data/Set14")
    lr, sr = tmp_path / "lr", tmp_path / "sr"
    assert main(["degrade", str(set14), "-o", str(lr), "--scale", "4", "--quiet"]) == 0
    assert main(["upscale", str(lr), "-o", str(sr), "--model", "bicubic", "--scale", "4", "--device", "cpu",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["metrics", "--gt", str(set14), "--sr", str(sr), "--scale", "4", "--metrics", "psnr,ssim,lr_psnr",
                 "--json"]) == 0
    measured = strict_loads(capsys.readouterr().out)
    assert measured["protocol"]["crop_border"] == 4 and measured["protocol"]["mod_crop"] is True
    expected = evaluate(load_model("bicubic", scale=4), set14, scale=4, metrics=("psnr", "ssim", "lr_psnr"), run=CPU)
    assert measured["mean"] == to_json(expected.mean)  # the same path: the same numbers
    # without --scale the shapes differ, and the message says what to do
    assert main(["metrics", "--gt", str(set14), "--sr", str(sr)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--scale" in err[0]


def test_metrics_mod_crops_only_with_scale(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt = write_set(tmp_path / "gt", [(41, 38)])
    hr = np.array(Image.open(gt / "im0.png"))
    (tmp_path / "sr").mkdir()
    Image.fromarray(hr[:40, :36]).save(tmp_path / "sr" / "im0.png")  # the HR mod-cropped to 4: a perfect SR
    kwargs = {"gt": gt, "sr": tmp_path / "sr", "max_pixels": 10**7, "json": True, "quiet": True}
    assert cmd_metrics(metrics=["psnr", "lr_psnr"], protocol=Protocol(4), **kwargs) == 0
    out = strict_loads(capsys.readouterr().out)
    assert out["mean"] == {"psnr": "inf", "lr_psnr": "inf"} and from_json(out["mean"]["psnr"]) == math.inf
    with pytest.raises(InputError, match="is 38x41"):
        cmd_metrics(metrics=["psnr"], protocol=Protocol(4, mod_crop=False), **kwargs)
    with pytest.raises(InputError, match="pass --scale"):
        cmd_metrics(metrics=["psnr"], protocol=Protocol(1, crop_border=0), **kwargs)
    with pytest.raises(InputError, match="lr_psnr needs --scale"):
        cmd_metrics(metrics=["lr_psnr"], protocol=Protocol(1, crop_border=0), **kwargs)
    with pytest.raises(InputError, match="--gt is required"):
        cmd_metrics(metrics=["psnr"], protocol=Protocol(4), **{**kwargs, "gt": None})


def test_undefined_values_are_null_in_json_output(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    small = write_set(tmp_path / "small", [(40, 40)])
    assert cmd_metrics(gt=None, sr=small, metrics=["niqe"], protocol=Protocol(1, crop_border=0), max_pixels=10**7,
                       json=True, quiet=True) == 0
    text = capsys.readouterr().out
    assert strict_loads(text)["mean"] == {"niqe": None} and "NaN" not in text
    assert cmd_eval(models=[], data=[small], protocol=Protocol(4), run=CPU, max_images=None, max_pixels=10**7,
                    json=True, quiet=True) == 0
    assert strict_loads(capsys.readouterr().out)["results"]["small"]["bicubic"]["niqe"] is None
    assert dumps({"a": [math.nan, math.inf, -math.inf, 1.5]}) == '{"a": [null, "inf", "-inf", 1.5]}'
    with pytest.raises(ValueError, match="NaN"):
        strict_loads('{"a": NaN}')
