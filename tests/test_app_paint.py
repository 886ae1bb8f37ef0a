"""The app's rules without a browser or Gradio: brushes -> condition maps, the model catalog, runs, downloads.

(The page itself, in Chromium, is tests/browser/test_app.py.)
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from perceptsr.app import paint, runner, server
from perceptsr.archs import ARCHS, PRIORS
from perceptsr.archs.sftgan import SEG_CLASSES
from perceptsr.conditions.seg import CLASS_COLORS
from perceptsr.errors import InputError, PerceptsrError
from perceptsr.inference.upscale import RunOptions
from perceptsr.io.images import LoadedImage, read_image
from perceptsr.zoo.release import save_release

RUN = RunOptions(device="cpu")


def layer(height: int, width: int, color: tuple[int, int, int], *, columns: slice, alpha: int = 153) -> np.ndarray:
    """An RGBA layer painted in `color` (at the brush's opacity) over `columns`, transparent elsewhere."""
    out = np.zeros((height, width, 4), np.uint8)
    out[:, columns, :3] = color
    out[:, columns, 3] = alpha
    return out


def tiny_release(path: Path, arch: str, table: dict = ARCHS) -> Path:
    torch.manual_seed(0)
    spec = table[arch]
    model = spec.module(spec.tiny(1 if table is PRIORS else 4))
    save_release(path, arch=arch, config=model.config, state_dict=model.state_dict())
    return path


def loaded(height: int = 12, width: int = 16, bit_depth: int = 8) -> LoadedImage:
    rgb = torch.rand(1, 3, height, width, generator=torch.Generator().manual_seed(0))
    return LoadedImage(rgb=rgb, alpha=None, grayscale=False, bit_depth=bit_depth, path=Path("photo.png"))


# ---- paint ----

def test_t_colors_are_distinct_and_decode_to_their_level() -> None:
    assert len(set(paint.T_COLORS)) == len(paint.T_LEVELS)
    assert paint.T_BRUSH_COLORS[0] == "#440154" and paint.T_BRUSH_COLORS[-1] == "#fde725"
    for level, color in zip(paint.T_LEVELS, paint.T_COLORS, strict=True):
        t_map = paint.t_map_from_layers([layer(2, 2, color, columns=slice(None))], (2, 2), base_t=0.55)
        assert np.allclose(t_map, level)


def test_painted_half_gets_the_brush_t_and_the_rest_the_global_t() -> None:
    painted = layer(20, 40, paint.t_color(1.0), columns=slice(0, 20))
    t_map = paint.t_map_from_layers([painted], (10, 20), base_t=0.0)  # preview 2x the LR size
    assert t_map.shape == (10, 20) and t_map.dtype == np.float32
    assert np.all(t_map[:, :10] == 1.0) and np.all(t_map[:, 10:] == 0.0)


def test_faint_or_erased_pixels_are_not_painted_and_later_layers_win() -> None:
    faint = layer(4, 4, paint.t_color(1.0), columns=slice(None), alpha=paint.PAINTED_ALPHA - 1)
    assert np.all(paint.t_map_from_layers([faint], (4, 4), base_t=0.3) == np.float32(0.3))
    under = layer(4, 4, paint.t_color(1.0), columns=slice(None))
    over = layer(4, 4, paint.t_color(0.2), columns=slice(0, 2))
    t_map = paint.t_map_from_layers([under, over], (4, 4), base_t=0.0)
    assert np.allclose(t_map[:, :2], 0.2) and np.all(t_map[:, 2:] == 1.0)


def test_t_overlay_is_the_image_size_and_tinted_by_t() -> None:
    image = np.full((6, 8, 3), 128, np.uint8)
    t_map = np.zeros((3, 4), np.float32)
    t_map[:, 2:] = 1.0
    out = paint.t_overlay(image, t_map)
    assert out.shape == (6, 8, 3) and out.dtype == np.uint8
    assert not np.array_equal(out[:, :4], out[:, 4:])
    assert tuple(out[0, 7]) == tuple(round(128 * (1 - paint.OVERLAY_OPACITY) + c * paint.OVERLAY_OPACITY)
                                     for c in paint.t_color(1.0))


def test_class_brush_repaints_only_where_painted() -> None:
    probs = np.random.default_rng(0).random((1, len(SEG_CLASSES), 8, 8)).astype(np.float32)
    probs /= probs.sum(1, keepdims=True)
    water = SEG_CLASSES.index("water")
    out = paint.repaint_seg(probs, [layer(4, 4, CLASS_COLORS[water], columns=slice(0, 2), alpha=255)])
    assert out.shape == probs.shape
    assert np.all(out[0, :, :, :4] == np.eye(len(SEG_CLASSES), dtype=np.float32)[water][:, None, None])
    assert np.array_equal(out[..., 4:], probs[..., 4:])
    assert np.array_equal(paint.seg_labels(out)[:, :4], np.full((8, 4), water))
    assert paint.seg_colors(paint.seg_labels(out)).shape == (8, 8, 3)
    assert all(name in paint.legend_html() for name in SEG_CLASSES)


def test_resize_nearest_keeps_values() -> None:
    labels = np.arange(6).reshape(2, 3)
    assert np.array_equal(paint.resize_nearest(labels, (4, 6)), labels.repeat(2, 0).repeat(2, 1))
    assert np.array_equal(paint.resize_nearest(labels.repeat(2, 0).repeat(2, 1), (2, 3)), labels)


# ---- runner ----

def test_catalog_lists_folder_files_first_and_keeps_the_seg_network_apart(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERCEPTSR_SEG_MODEL", raising=False)
    tiny_release(tmp_path / "b_fxsr.safetensors", "fxsr")
    tiny_release(tmp_path / "seg.safetensors", "outdoorsceneseg", PRIORS)
    (tmp_path / "a_broken.safetensors").write_bytes(b"junk")
    (tmp_path / "c.onnx").write_bytes(b"junk")
    (tmp_path / "notes.txt").write_text("not a model")
    catalog = runner.build_catalog(tmp_path)
    folder = [label for label in catalog.models if label.endswith((".safetensors", ".onnx"))]
    assert folder == ["a_broken.safetensors", "b_fxsr.safetensors", "c.onnx"]
    assert list(catalog.models)[:3] == folder
    assert catalog.seg_model == tmp_path / "seg.safetensors"
    with pytest.raises(InputError, match="unknown model"):
        catalog.entry(str(tmp_path / "seg.safetensors"))  # a path is not a label: the page cannot name files
    with pytest.raises(PerceptsrError, match="not a readable safetensors file"):  # one line, shown on the page
        runner.load_entry(catalog.entry("a_broken.safetensors"), RUN)
    with pytest.raises(InputError, match="no such folder"):
        runner.build_catalog(tmp_path / "missing")


def test_fxsr_run_follows_the_painted_map_and_can_be_cancelled(tmp_path: Path) -> None:
    catalog = runner.build_catalog(tmp_path if tiny_release(tmp_path / "fx.safetensors", "fxsr") else None)
    model = runner.load_entry(catalog.entry("fx.safetensors"), RUN)
    assert runner.model_kind(model) == "t" and model.scale == 4
    image = loaded()
    half = layer(12, 16, paint.t_color(1.0), columns=slice(0, 8))
    conditions = runner.conditions_for(model, image, t=0.0, t_layers=[half], seg=None, seg_layers=[])
    assert conditions["t"].shape == (1, 1, 12, 16)
    assert conditions["t"][0, 0, :, :8].eq(1).all() and conditions["t"][0, 0, :, 8:].eq(0).all()
    sr, alpha = runner.run_model(model, image, conditions, RUN)
    assert sr.shape == (1, 3, 48, 64) and alpha is None
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(runner.CancelledError):
        runner.run_model(model, image, conditions, RUN, cancel=cancel)
    assert runner.run_model(model, image, conditions, RUN)[0].shape == sr.shape  # the flag is per run
    with pytest.raises(InputError, match="t must be between 0 and 1"):
        runner.conditions_for(model, image, t=1.5, t_layers=[], seg=None, seg_layers=[])


def test_sftgan_runs_on_the_automatic_map_with_repainted_classes(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERCEPTSR_SEG_MODEL", raising=False)
    tiny_release(tmp_path / "sft.safetensors", "sftgan")
    model = runner.load_entry(runner.build_catalog(tmp_path).entry("sft.safetensors"), RUN)
    image = loaded(8, 8)
    with pytest.raises(InputError, match="No segmentation network"):
        runner.conditions_for(model, image, t=0.8, t_layers=[], seg=None, seg_layers=[])
    tiny_release(tmp_path / "seg.safetensors", "outdoorsceneseg", PRIORS)
    catalog = runner.build_catalog(tmp_path)
    seg = runner.auto_segmentation(catalog, image.rgb)
    assert seg.shape == (1, len(SEG_CLASSES), 32, 32)
    sky = layer(8, 8, CLASS_COLORS[1], columns=slice(0, 4), alpha=255)
    conditions = runner.conditions_for(model, image, t=0.8, t_layers=[], seg=seg, seg_layers=[sky])
    assert conditions["seg"][0, 1, :, :16].eq(1).all()
    sr, _ = runner.run_model(model, image, conditions, RUN)
    assert sr.shape == (1, 3, 32, 32)


def test_download_keeps_16_bit_and_names_each_run(tmp_path: Path) -> None:
    image = loaded(bit_depth=16)
    sr = torch.rand(1, 3, 24, 32)
    first = runner.save_result(tmp_path, image, sr, None, "fx.safetensors", 1)
    second = runner.save_result(tmp_path, image, sr, None, "fx.safetensors", 2)
    assert first.name == "photo_fx_1.png" and first != second
    again = read_image(first)
    assert again.bit_depth == 16 and torch.allclose(again.rgb, sr, atol=1 / 65535)
    assert read_image(runner.save_result(tmp_path, loaded(), sr, None, "x", 3)).bit_depth == 8


def test_upload_errors_are_one_line_and_respect_max_pixels(tmp_path: Path) -> None:
    corrupt = tmp_path / "corrupt.png"
    corrupt.write_bytes(b"\x89PNG\r\n\x1a\n" + b"junk" * 10)
    with pytest.raises(InputError, match="cannot read image") as error:
        runner.load_upload(corrupt, 10**6)
    assert "\n" not in str(error.value)
    small = tmp_path / "small.png"
    from perceptsr.io.images import write_image

    write_image(small, torch.rand(1, 3, 10, 10))
    with pytest.raises(InputError, match="over the limit of 99"):
        runner.load_upload(small, 99)


# ---- server ----

def test_without_gradio_the_command_names_the_extra(monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(server, "gradio_available", lambda: False)
    with pytest.raises(InputError, match=r"pip install perceptsr\[app\]"):
        server.cmd_app(models_dir=None, host=None, port=None, max_pixels=10, run=RUN)
    from perceptsr.cli.main import main

    assert main(["app", "--port", "7999"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "pip install perceptsr[app]" in lines[0]


def test_only_a_non_local_host_warns() -> None:
    assert server.host_warning(None) is None and server.host_warning("127.0.0.1") is None
    warning = server.host_warning("0.0.0.0")
    assert warning and "0.0.0.0" in warning and "\n" not in warning


def test_an_onnx_file_in_the_folder_runs_like_its_release(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime")
    from perceptsr.inference.onnx import export_onnx
    from perceptsr.zoo.models import load_model

    source = tiny_release(tmp_path / "fx.safetensors", "fxsr")
    export_onnx(load_model(str(source)), tmp_path / "fx.onnx", arch="fxsr")
    catalog = runner.build_catalog(tmp_path)
    image = loaded()
    half = layer(12, 16, paint.t_color(1.0), columns=slice(0, 8))
    results = []
    for label in ("fx.onnx", "fx.safetensors"):
        model = runner.load_entry(catalog.entry(label), RUN)
        assert runner.model_kind(model) == "t"
        conditions = runner.conditions_for(model, image, t=0.0, t_layers=[half], seg=None, seg_layers=[])
        results.append(runner.run_model(model, image, conditions, RUN)[0])
    assert torch.allclose(results[0], results[1], atol=1e-4)
