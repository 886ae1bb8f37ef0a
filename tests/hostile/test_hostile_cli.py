"""The hostile inputs above through the command line, in process: exit 2 and one line naming the file, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import save_file

from perceptsr.archs import ARCHS
from perceptsr.cli.main import main
from perceptsr.zoo.release import FORMAT, VERSION, save_release


def release(tmp_path: Path, name: str = "model.safetensors", **config: object) -> Path:
    spec = ARCHS["msrresnet"]
    tiny = spec.tiny(4)
    path = tmp_path / name
    state = spec.module(tiny).state_dict()
    if not config:
        save_release(path, arch="msrresnet", config=tiny, state_dict=state)
        return path
    metadata = {"format": FORMAT, "version": VERSION, "arch": "msrresnet", "scale": "4",
                "config": json.dumps({"scale": 4, "num_feat": 8, "num_block": 2, **config})}
    save_file(state, str(path), metadata=metadata)
    return path


def refused(capsys: pytest.CaptureFixture, *argv: str, needle: str) -> str:
    code = main(list(argv))
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and "Traceback" not in err and needle in err, err
    return err


def test_a_release_claiming_a_billion_blocks(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "in.png")
    bad = release(tmp_path, "huge.safetensors", num_block=10**9)
    refused(capsys, "upscale", str(tmp_path / "in.png"), "--model", str(bad), "-o", str(tmp_path / "out"),
            needle="huge.safetensors")
    assert not (tmp_path / "out" / "in.png").exists()


def test_a_nan_tiff_input(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    values = np.full((8, 8), 0.5, np.float32)
    values[0, 0] = np.nan
    Image.fromarray(values, mode="F").save(tmp_path / "nan.tif")
    refused(capsys, "upscale", str(tmp_path / "nan.tif"), "--model", str(release(tmp_path)), "-o",
            str(tmp_path / "out"), needle="NaN")


def test_convert_of_nan_weights_and_of_a_pickle(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    state = ARCHS["msrresnet"].module(ARCHS["msrresnet"].tiny(4)).state_dict()
    state["conv_last.bias"] = torch.full_like(state["conv_last.bias"], float("nan"))
    torch.save(state, tmp_path / "nan.pth")
    refused(capsys, "convert", str(tmp_path / "nan.pth"), "-o", str(tmp_path / "out.safetensors"), needle="NaN")
    torch.save({"w": Image.new("L", (1, 1))}, tmp_path / "evil.pth")
    err = refused(capsys, "convert", str(tmp_path / "evil.pth"), "-o", str(tmp_path / "out.safetensors"),
                  needle="refusing")
    assert "weights_only=False" not in err and "set to `False`" not in err
    assert not (tmp_path / "out.safetensors").exists()


@pytest.mark.filterwarnings("ignore:RANDOM VGG")
def test_train_resume_of_a_live_run_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import yaml
    from tinyrun import tiny, tiny_data

    from perceptsr.engine.runlock import RunLock

    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(yaml.safe_dump(tiny(*tiny_data(tmp_path / "data"))))
    with RunLock(run):
        refused(capsys, "train", "--resume", str(run), "--quiet", needle="in use by process")
    assert not (run / "checkpoints").exists()
