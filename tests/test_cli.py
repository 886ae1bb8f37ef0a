"""The spine's command-line contracts end to end: degrade, metrics, upscale, the API, and the bad-input corpus.

A few commands run through a real subprocess (exit codes, stderr, nothing else printed); the bad-input corpus goes
through `cli.main` in-process (the same code path, without paying a torch import per file).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import ROOT
from conftest import run_cli as run
from PIL import Image
from tolerance import assert_paths_close

import perceptsr
from perceptsr.cli.main import build_parser, main
from perceptsr.data.resize import degrade, imresize
from perceptsr.io.images import read_image, write_image, write_png
from perceptsr.metrics import psnr


def photo(height: int = 24, width: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 6, y * 8, (x + y) * 3], axis=-1) % 256
    return np.clip(base + rng.integers(0, 30, (height, width, 3)), 0, 255).astype(np.uint8)


def test_degrade_matches_the_library_and_keeps_bit_depth(tmp_path: Path) -> None:
    Image.fromarray(photo(27, 34)).save(tmp_path / "a.png")
    deep = (photo(16, 20, seed=1).astype(np.uint16) * 257 + 7)
    with open(tmp_path / "b.png", "wb") as handle:
        write_png(handle, deep)
    result = run("degrade", str(tmp_path / "a.png"), str(tmp_path / "b.png"), "-o", str(tmp_path / "lr"),
                 "--scale", "4")
    assert result.returncode == 0, result.stderr
    lr = read_image(tmp_path / "lr" / "a.png")
    assert lr.rgb.shape == (1, 3, 6, 8) and lr.bit_depth == 8
    expected = degrade(read_image(tmp_path / "a.png").rgb, 4)
    assert torch.equal(lr.rgb, expected)
    lr16 = read_image(tmp_path / "lr" / "b.png")
    assert lr16.bit_depth == 16 and lr16.rgb.shape == (1, 3, 4, 5)
    assert torch.allclose(lr16.rgb, degrade(read_image(tmp_path / "b.png").rgb, 4, bit_depth=16), atol=1e-7)


def test_metrics_json_contract(tmp_path: Path) -> None:
    gt, sr = tmp_path / "gt", tmp_path / "sr"
    for i in range(2):
        image = photo(40, 48, seed=i)
        noisy = np.clip(image.astype(int) + np.random.default_rng(i).integers(-6, 7, image.shape), 0, 255)
        write_image(gt / f"im{i}.png", torch.from_numpy(image).permute(2, 0, 1)[None] / 255.0)
        write_image(sr / f"im{i}.png", torch.from_numpy(noisy.astype(np.uint8)).permute(2, 0, 1)[None] / 255.0)
    result = run("metrics", "--gt", str(gt), "--sr", str(sr), "--crop-border", "4", "--y-channel", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert set(data) >= {"images", "mean", "protocol"} and set(data["images"]) == {"im0", "im1"}
    assert set(data["mean"]) == {"psnr", "ssim"}
    direct = psnr(read_image(sr / "im0.png").rgb, read_image(gt / "im0.png").rgb, crop_border=4, y_channel=True)
    assert data["images"]["im0"]["psnr"] == pytest.approx(direct, abs=1e-9)
    assert data["mean"]["psnr"] == pytest.approx((data["images"]["im0"]["psnr"] + data["images"]["im1"]["psnr"]) / 2)


def test_metrics_pairing_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    gt, sr = tmp_path / "gt", tmp_path / "sr"
    write_image(gt / "a.png", torch.rand(1, 3, 8, 8))
    write_image(sr / "b.png", torch.rand(1, 3, 8, 8))
    assert main(["metrics", "--gt", str(gt), "--sr", str(sr)]) == 2
    assert "has no ground truth" in capsys.readouterr().err
    write_image(sr / "a.png", torch.rand(1, 3, 9, 8))
    (sr / "b.png").unlink()
    assert main(["metrics", "--gt", str(gt), "--sr", str(sr)]) == 2
    err = capsys.readouterr().err
    assert "8x9" in err and err.count("\n") == 1


def test_upscale_bicubic_default_gray_rgba_and_no_overwrite(tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(photo()).save(src / "rgb.png")
    Image.fromarray(photo()[..., 0]).save(src / "gray.png")
    rgba = np.dstack([photo(), np.linspace(0, 255, 24 * 32).reshape(24, 32).astype(np.uint8)])
    Image.fromarray(rgba, "RGBA").save(src / "alpha.png")
    out = tmp_path / "out"
    result = run("upscale", str(src), "-o", str(out), "--model", "bicubic", "--scale", "2")
    assert result.returncode == 0, result.stderr
    with Image.open(out / "gray.png") as image:
        assert image.mode in ("L", "I;16") and image.size == (64, 48)
    with Image.open(out / "alpha.png") as image:
        assert image.mode == "RGBA" and image.size == (64, 48)
    rgb = read_image(out / "rgb.png").rgb
    expected = imresize(read_image(src / "rgb.png").rgb, 2).clamp(0, 1)
    assert (rgb - expected).abs().max() <= 0.5 / 255 + 1e-6
    before = (out / "rgb.png").read_bytes()
    again = run("upscale", str(src / "rgb.png"), "-o", str(out), "--model", "bicubic", "--scale", "2")
    assert again.returncode == 2 and "exists" in again.stderr and again.stderr.count("\n") == 1
    assert (out / "rgb.png").read_bytes() == before


def test_python_api(tmp_path: Path) -> None:
    model = perceptsr.load_model("bicubic", scale=3)
    assert model.scale == 3 and not model.training
    lr = torch.rand(1, 3, 10, 12)
    raw = model(lr)
    assert raw.shape == (1, 3, 30, 36)
    # the fast path (channels-last, inference.fast) vs the eager model: equal up to float32 summation order
    assert_paths_close(perceptsr.upscale(lr, model), raw.clamp(0, 1), depth=12, what="upscale vs eager bicubic")
    hr = torch.rand(1, 3, 21, 30)
    assert torch.equal(perceptsr.degrade(hr, 4), degrade(hr, 4))
    with pytest.raises(perceptsr.errors.InputError):
        perceptsr.load_model("no-such-model")


def png_header_only(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    body = chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")
    return b"\x89PNG\r\n\x1a\n" + body


def encoded(fmt: str, mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(photo(64, 64)).convert(mode).save(buffer, format=fmt)
    return buffer.getvalue()


BAD = {
    "truncated.png": encoded("PNG")[:200],
    "truncated.jpg": encoded("JPEG")[:300],
    "empty.png": b"",
    "text.png": b"this is not an image\n",
    "bomb.png": png_header_only(60000, 60000),
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_inputs_are_one_line_errors_and_leave_nothing(tmp_path: Path, name: str,
                                                          capsys: pytest.CaptureFixture) -> None:
    path = tmp_path / name
    path.write_bytes(BAD[name])
    out = tmp_path / "out"
    for command in (["upscale", str(path), "-o", str(out), "--model", "bicubic"],
                    ["degrade", str(path), "-o", str(out), "--scale", "4"]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert err.startswith("perceptsr: error:") and err.count("\n") == 1 and "Traceback" not in err
        assert not out.exists() or not any(out.iterdir())


GOOD = {
    "gray16.png": lambda p: p.write_bytes(_png16_gray()),
    "palette.png": lambda p: Image.fromarray(photo()).convert("P").save(p),
    "cmyk.jpg": lambda p: Image.fromarray(photo()).convert("CMYK").save(p),
    "one.png": lambda p: Image.fromarray(photo(1, 1)).save(p),
    "rotated.jpg": lambda p: _rotated_jpeg(p),
    "rgba.png": lambda p: Image.fromarray(np.dstack([photo(), photo()[..., 0]]), "RGBA").save(p),
}


def _png16_gray() -> bytes:
    buffer = io.BytesIO()
    write_png(buffer, (np.arange(24 * 32).reshape(24, 32, 1) * 80).astype(np.uint16))
    return buffer.getvalue()


def _rotated_jpeg(path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo(24, 32)).save(path, exif=exif.tobytes())


@pytest.mark.parametrize("name", sorted(GOOD))
def test_odd_but_valid_inputs_upscale(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    GOOD[name](path)
    out = tmp_path / "out"
    assert main(["upscale", str(path), "-o", str(out), "--model", "bicubic", "--scale", "2"]) == 0
    source = read_image(path)
    result = read_image(out / f"{path.stem}.png")
    assert result.rgb.shape[-2:] == (source.rgb.shape[-2] * 2, source.rgb.shape[-1] * 2)
    assert result.bit_depth == source.bit_depth and result.grayscale == source.grayscale
    assert (result.alpha is None) == (source.alpha is None)


def test_output_paths_that_cannot_be_written(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = tmp_path / "a.png"
    Image.fromarray(photo()).save(image)
    (tmp_path / "out" / "a.png").mkdir(parents=True)
    assert main(["upscale", str(image), "-o", str(tmp_path / "out"), "--model", "bicubic"]) == 2
    assert "existing directory" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert main(["upscale", str(image), "-o", str(tmp_path / "file"), "--model", "bicubic"]) == 2
    assert "existing file" in capsys.readouterr().err
    assert (tmp_path / "file").read_text() == "x"


def test_wrong_scale_for_a_model_is_an_error(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", "x.png", "-o", str(tmp_path), "--scale", "0"])
    assert exit_info.value.code == 2
    assert "scale must be between" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["eval", "report"])
def test_repeated_and_listed_data_folders_all_count(command: str) -> None:
    from perceptsr.cli.main import build_parser

    extra = ["-o", "out"] if command == "report" else []
    args = build_parser().parse_args([command, "--model", "bicubic", "--data", "a", "b", "--data", "c",
                                      "--scale", "4", *extra])
    assert [str(p) for p in args.data] == ["a", "b", "c"]


# ---- the command grammar (issue 15) and one exit for every user-caused failure (issue 16) ----

def subcommands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


def visible_options(command: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in command._actions for s in a.option_strings
            if a.help != argparse.SUPPRESS and s not in ("-h", "--help")}


def test_version_is_the_package_version() -> None:
    import tomllib

    done = run("--version")
    assert done.returncode == 0 and done.stderr == ""
    assert done.stdout == f"perceptsr {perceptsr.__version__}\n"
    assert tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"] == perceptsr.__version__


def test_every_command_has_a_description_and_every_flag_a_help() -> None:
    commands = subcommands()
    assert set(commands) >= {"upscale", "degrade", "metrics", "eval", "report", "sweep", "demo", "segment", "train",
                             "export", "convert", "models", "bench"}
    for name, command in commands.items():
        assert command.description and len(command.description) > 20, name
        for action in command._actions:
            if action.help == argparse.SUPPRESS:
                assert action.option_strings, f"{name}: a hidden positional"
                continue
            assert action.help and action.help.strip(), f"{name} {action.option_strings or action.dest} has no help"


def signature(action: argparse.Action) -> tuple:
    return type(action).__name__, action.dest, action.type, action.choices, action.nargs, action.const


# Options whose default or requiredness legitimately differs by command; their spelling and type may not.
PER_COMMAND_DEFAULTS = {"-o", "--output", "--scale", "--model", "--crop-border", "--seg-model"}


def test_the_same_option_is_spelled_and_typed_the_same_on_every_command() -> None:
    seen: dict[str, tuple[str, tuple, object]] = {}
    for name, command in subcommands().items():
        for option, action in visible_options(command).items():
            if option == "--model" and name in ("upscale", "bench"):
                continue  # single on upscale; architectures on bench (both documented exceptions)
            if option == "--seg-model" and name == "segment":
                continue
            default = None if option in PER_COMMAND_DEFAULTS else action.default
            first = seen.setdefault(option, (name, signature(action), default))
            assert (signature(action), default) == first[1:], f"{option}: {name} differs from {first[0]}"
    # the shared groups are where the contract puts them
    commands = {name: set(visible_options(c)) for name, c in subcommands().items()}
    writers = ("upscale", "degrade", "report", "sweep", "demo", "segment", "train", "export", "plot", "convert")
    groups = {
        ("-o", "--output"): writers,
        ("--overwrite",): tuple(n for n in writers if n != "train"),
        ("--t", "--t-map", "--seg", "--seg-model"): ("upscale", "eval", "report", "demo"),
        ("--precision", "--tile", "--tile-overlap", "--device", "--max-pixels", "--quiet"):
            ("upscale", "eval", "report", "sweep", "demo"),
        ("--crop-border", "--y-channel", "--rgb", "--no-mod-crop"): ("eval", "report", "sweep", "metrics"),
        ("--data",): ("eval", "report", "sweep"),
        ("--json",): ("eval", "metrics", "bench", "models"),
        ("--model",): ("upscale", "eval", "report", "sweep", "demo", "bench"),
    }
    for options, names in groups.items():
        for name in names:
            assert set(options) <= commands[name], f"{name} lacks some of {options}"
    for name in ("eval", "report", "sweep", "demo", "bench"):
        assert isinstance(visible_options(subcommands()[name])["--model"], argparse._AppendAction), name
    assert all("--out" not in options for options in commands.values())


@pytest.mark.parametrize(("argv", "dest", "value", "line"), [
    (["train", "c.yaml", "--out", "runs/x"], "output", Path("runs/x"), "--out is deprecated; use -o/--output"),
    (["bench", "--models", "msrresnet, rrdb"], "model", ["msrresnet", "rrdb"], "--models is deprecated"),
    (["sweep", "--model", "m", "--data", "d", "-o", "o", "--t", "0:1:0.5"], "t_values", "0:1:0.5",
     "--t is deprecated; use --t-values"),
])
def test_deprecated_spellings_still_work_and_say_so_in_one_line(argv: list[str], dest: str, value: object, line: str,
                                                                 capsys: pytest.CaptureFixture) -> None:
    args = build_parser().parse_args(argv)
    assert getattr(args, dest) == value
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("perceptsr: ") and line in err


def test_old_train_spelling_end_to_end() -> None:
    done = run("train", "no-such-config.yaml", "--out", "runs/never")
    assert done.returncode == 2 and "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert lines[0] == "perceptsr: --out is deprecated; use -o/--output"
    assert len(lines) == 2 and lines[1].startswith("perceptsr: error:")


def sample_argv(name: str) -> list[str]:
    return {
        "upscale": ["upscale", "a.png", "-o", "out", "--model", "fx.safetensors:label=b", "--t", "0.5"],
        "degrade": ["degrade", "a.png", "-o", "out", "--scale", "4"],
        "metrics": ["metrics", "--gt", "hr", "--sr", "sr", "--scale", "4", "--rgb", "--metrics", "psnr,niqe"],
        "eval": ["eval", "--model", "bicubic", "--data", "a", "--scale", "4", "--crop-border", "0"],
        "report": ["report", "--model", "bicubic", "--data", "a", "--scale", "4", "-o", "out"],
        "sweep": ["sweep", "--model", "bicubic", "--data", "a", "-o", "out", "--t-values", "0,1"],
        "demo": ["demo", "a.png", "--model", "bicubic"],
        "segment": ["segment", "a.png", "-o", "out"],
        "train": ["train", "c.yaml", "-o", "runs/x", "--set", "a.b=1"],
        "export": ["export", "runs/x", "-o", "x.safetensors"],
        "plot": ["plot", "runs/x", "runs/y", "-o", "curves.png", "--smooth", "5"],
        "convert": ["convert", "x.pth", "-o", "x.safetensors"],
        "models": ["models", "--json"],
        "bench": ["bench", "--model", "msrresnet", "--quick"],
        "app": ["app", "--models-dir", "models", "--port", "8000", "--device", "cpu"],
    }[name]


@pytest.mark.parametrize("name", sorted(subcommands()))
def test_every_parser_calls_its_command_with_typed_arguments(name: str) -> None:
    import inspect

    from perceptsr.conditions import ModelSpec
    from perceptsr.evaluation.protocol import Protocol
    from perceptsr.inference.upscale import RunOptions

    args = build_parser().parse_args(sample_argv(name))
    function, kwargs = args.bind(args)
    inspect.signature(function).bind(**kwargs)  # every keyword the parser gives is one the function takes
    assert not any(isinstance(v, argparse.Namespace) for v in kwargs.values())
    if "run" in kwargs and name != "export":
        assert isinstance(kwargs["run"], RunOptions)
    if "protocol" in kwargs:
        assert isinstance(kwargs["protocol"], Protocol)
    if "models" in kwargs and name != "bench":
        assert all(isinstance(m, ModelSpec) for m in kwargs["models"])
    if name == "metrics":
        assert kwargs["protocol"].border == 4 and not kwargs["protocol"].y_channel and kwargs["metrics"] == [
            "psnr", "niqe"]
    if name == "upscale":
        assert kwargs["model"].label == "b" and kwargs["model"].options.t == 0.5
    if name == "eval":
        assert kwargs["protocol"].border == 0 and kwargs["protocol"].scale == 4


def test_parser_defaults_agree_with_the_typed_defaults() -> None:
    from perceptsr.inference.upscale import RunOptions
    from perceptsr.io.images import DEFAULT_MAX_PIXELS

    args = build_parser().parse_args(["upscale", "a.png", "-o", "out"])
    assert args.bind(args)[1]["run"] == RunOptions()
    assert args.max_pixels == DEFAULT_MAX_PIXELS
    metrics = build_parser().parse_args(["metrics", "--sr", "x"])
    protocol = metrics.bind(metrics)[1]["protocol"]
    assert protocol.border == 0 and protocol.y_channel  # no --scale: nothing cropped


def test_cli_modules_do_not_import_each_other_in_a_cycle() -> None:
    import ast

    cli = ROOT / "src" / "perceptsr" / "cli"
    imports: dict[str, set[str]] = {}
    for path in cli.glob("*.py"):
        names = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("perceptsr.cli"):
                names |= {node.module.removeprefix("perceptsr.cli").lstrip(".") or a.name for a in node.names}
        imports[path.stem] = names
    for module in ("commands", "measure"):
        assert not imports.get(module, set()) & {"main", "parser"}, f"{module} imports the parser"
    assert "main" not in imports["parser"]


def test_a_newline_in_a_file_name_stays_on_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "evil\nperceptsr: wrote 1 image(s).png"
    bad.write_bytes(b"not an image")
    done = run("upscale", str(bad), "-o", str(tmp_path / "out"), "--model", "bicubic")
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("perceptsr: error:") and "evil\\nperceptsr" in done.stderr


def test_usage_errors_are_one_line(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["upscale", "a.png", "-o", "out", "--precision", "fp64"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and "fp64" in err and "--help" in err


def one_image(tmp_path: Path) -> Path:
    path = tmp_path / "a.png"
    Image.fromarray(photo()).save(path)
    return path


@pytest.mark.parametrize("command", [["upscale", "--model", "bicubic"], ["degrade", "--scale", "2"],
                                     ["demo", "--model", "bicubic", "--quiet"]])
@pytest.mark.parametrize(("code", "expected"), [(28, "no space left on device"), (13, "Permission denied")])
def test_os_errors_are_one_line_naming_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture, code: int, expected: str,
                                                command: list[str]) -> None:
    import perceptsr.io.images as images

    target = tmp_path / "out" / "a\n.png"

    def failing(path: object, *args: object, **kwargs: object) -> None:
        raise OSError(code, os.strerror(code), str(target))

    monkeypatch.setattr(images, "write_image", failing)
    monkeypatch.setattr(images, "write_samples", failing)  # upscale's writer thread encodes converted samples
    assert main([command[0], str(one_image(tmp_path)), "-o", str(tmp_path / "out"), *command[1:]]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("perceptsr: error:") and expected in err
    assert "a\\n.png" in err


def test_an_os_error_without_a_file_name_names_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    import perceptsr.io.images as images

    def failing(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")  # as a write() to an open handle raises it

    monkeypatch.setattr(images, "write_samples", failing)  # upscale's writer thread encodes converted samples
    assert main(["upscale", str(one_image(tmp_path)), "-o", str(tmp_path / "out"), "--model", "bicubic"]) == 2
    err = capsys.readouterr().err
    assert err == f"perceptsr: error: no space left on device (output: {tmp_path / 'out'})\n"


@pytest.mark.parametrize("error", [
    MemoryError(),
    RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried "
                 "to allocate 40000000000000 bytes. Error code 12 (Cannot allocate memory)"),
])
def test_running_out_of_memory_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture, error: BaseException) -> None:
    import perceptsr.inference.upscale as upscale

    def failing(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(upscale, "upscale_image", failing)
    assert main(["upscale", str(one_image(tmp_path)), "-o", str(tmp_path / "out"), "--model", "bicubic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not enough memory for `perceptsr upscale`" in err and "--tile" in err
    assert isinstance(error, MemoryError) or "(tried to allocate 40000.0 GB)" in err
    assert not (tmp_path / "out" / "a.png").exists()


def test_a_bug_keeps_its_traceback_and_ctrl_c_exits_130(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                         capsys: pytest.CaptureFixture) -> None:
    import perceptsr.inference.upscale as upscale

    argv = ["upscale", str(one_image(tmp_path)), "-o", str(tmp_path / "out"), "--model", "bicubic"]
    monkeypatch.setattr(upscale, "upscale_image", lambda *a, **k: (_ for _ in ()).throw(RuntimeError("a bug")))
    with pytest.raises(RuntimeError, match="a bug"):
        main(argv)
    monkeypatch.setattr(upscale, "upscale_image", lambda *a, **k: (_ for _ in ()).throw(KeyboardInterrupt()))
    assert main(argv) == 130
    assert capsys.readouterr().err.endswith("perceptsr: interrupted\n")


def test_warnings_print_as_one_line_without_source(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture) -> None:
    import warnings

    from perceptsr.cli import commands

    def warn(**kwargs: object) -> int:
        warnings.warn("RANDOM VGG weights\nin use", stacklevel=2)
        return 0

    monkeypatch.setattr(commands, "cmd_models", warn)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        assert main(["models"]) == 0
    err = capsys.readouterr().err
    assert err == "perceptsr: warning: RANDOM VGG weights\\nin use\n"


def test_demo_checks_every_output_before_writing_any(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    image = one_image(tmp_path)
    out = tmp_path / "demo"
    (out).mkdir()
    (out / "comparison.png").write_bytes(b"keep")
    argv = ["demo", str(image), "-o", str(out), "--model", "bicubic", "--model", "bicubic:label=again", "--quiet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "comparison.png already exists" in err and err.count("\n") == 1
    assert sorted(p.name for p in out.rglob("*")) == ["comparison.png"]
    assert (out / "comparison.png").read_bytes() == b"keep"
    assert main([*argv, "--overwrite"]) == 0
    assert (out / "bicubic" / "a.png").is_file() and (out / "again" / "a.png").is_file()
    assert read_image(out / "comparison.png").rgb.shape[-1] > 3 * 4 * 32
    # a condition flag no model takes is refused, as are two models writing to one folder
    assert main(["demo", str(image), "-o", str(tmp_path / "d2"), "--model", "bicubic", "--t", "0.5"]) == 2
    assert main(["demo", str(image), "-o", str(tmp_path / "d3"), "--model", "bicubic", "--model", "bicubic"]) == 2
    assert not (tmp_path / "d2").exists() and not (tmp_path / "d3").exists()


def test_demo_default_models_include_every_bundled_one() -> None:
    from perceptsr.cli.commands import demo_model_names
    from perceptsr.conditions import parse_model_spec
    from perceptsr.zoo.models import BUNDLED, bundled_path, default_model

    names = demo_model_names()
    assert names[0] == "bicubic" and default_model() in names
    assert {n for n in BUNDLED if bundled_path(n)} <= {name.split(":")[0] for name in names}
    assert len(set(names)) == len(names)
    for name in names:  # every default column parses as a model spec (a controllable model's t settings too)
        assert parse_model_spec(name).source in {"bicubic", *BUNDLED}


@pytest.mark.parametrize("extra", [["--model", "bicubic:t=0.3"], ["--model", "bicubic", "--t", "0.3"],
                                   ["--seg", "auto"]])
def test_conditions_on_upscale_are_refused_for_a_model_that_cannot_use_them(tmp_path: Path, extra: list[str],
                                                                           capsys: pytest.CaptureFixture) -> None:
    assert main(["upscale", str(one_image(tmp_path)), "-o", str(tmp_path / "out"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ("FxSR" in err or "SFTGAN" in err)
    assert not (tmp_path / "out").exists()


def test_degrade_upscale_metrics_pipeline_on_odd_sizes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    hr = tmp_path / "hr"
    hr.mkdir()
    Image.fromarray(photo(321, 481)).save(hr / "odd.png")  # BSD100's size: not a multiple of 4
    assert main(["degrade", str(hr), "-o", str(tmp_path / "lr"), "--scale", "4", "--quiet"]) == 0
    assert main(["upscale", str(tmp_path / "lr"), "-o", str(tmp_path / "sr"), "--model", "bicubic", "--scale", "4",
                 "--quiet"]) == 0
    capsys.readouterr()
    assert main(["metrics", "--gt", str(hr), "--sr", str(tmp_path / "sr"), "--scale", "4", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert 15 < data["mean"]["psnr"] < 60


def test_a_closed_pipe_is_quiet(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    from perceptsr.cli import commands

    def closed(**kwargs: object) -> int:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(commands, "cmd_models", closed)
    assert main(["models"]) == 1
    assert capsys.readouterr().err == ""


def readme_commands() -> list[str]:
    import re
    import shlex

    text = (ROOT / "README.md").read_text()
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"^OMP_NUM_THREADS=\d+ ", "", re.sub(r"\s#\s.*", "", line).strip())
            if line.startswith("perceptsr "):  # optional parts in [brackets] left out
                lines.append(" ".join(shlex.split(re.sub(r"\[[^]]*\]", "", line))[1:]))
    for inline in re.findall(r"`((?:OMP_NUM_THREADS=\d+ )?perceptsr [a-z]+ [^`]*)`", text):
        lines.append(re.sub(r"^(OMP_NUM_THREADS=\d+ )?perceptsr ", "", inline))
    return lines


def test_every_readme_command_parses_in_the_current_grammar(capsys: pytest.CaptureFixture) -> None:
    import shlex

    commands = readme_commands()
    assert len(commands) > 30
    parser = build_parser()
    for line in commands:
        words = shlex.split(line)
        if words[0] not in subcommands():
            continue
        try:
            parser.parse_args(words)
        except SystemExit:
            pytest.fail(f"README: `perceptsr {line}` does not parse: {capsys.readouterr().err}")
        assert "deprecated" not in capsys.readouterr().err, line


def test_condition_flags_are_defaults_for_the_models_that_take_them() -> None:
    from perceptsr.conditions import ConditionOptions, options_for, parse_model_spec
    from perceptsr.zoo.models import load_model

    defaults = ConditionOptions(t=0.3, seg="auto")
    bicubic = parse_model_spec("bicubic", defaults)
    assert bicubic.label == "bicubic" and bicubic.defaulted == {"t", "seg"}
    assert bicubic.options == ConditionOptions() == options_for(load_model("bicubic"), bicubic)
    own = parse_model_spec("bicubic:t=0.5", defaults)
    assert own.defaulted == {"seg"} and options_for(load_model("bicubic"), own) == ConditionOptions(t=0.5)

    class TakesT(torch.nn.Module):
        condition_scales = {"t": 1}  # noqa: RUF012

    fx = parse_model_spec("fx.safetensors", defaults)
    assert fx.label == "fx (seg=auto,t=0.3)" and options_for(TakesT(), fx) == ConditionOptions(t=0.3)


def test_models_says_where_to_get_each_release_and_how_to_convert_it(capsys: pytest.CaptureFixture) -> None:
    assert main(["models", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert listing["releases"]
    for release in listing["releases"]:
        assert release["download"] and release["repository"].startswith("https://github.com/")
        for conversion in release["conversions"]:
            command = conversion["command"]
            assert command == f"perceptsr convert {conversion['file']} -o {conversion['output']}"
            assert conversion["output"].endswith(".safetensors")
            args = build_parser().parse_args(command.split()[1:])  # the command as printed is valid
            assert str(args.output) == conversion["output"]
    assert main(["models"]) == 0
    text = capsys.readouterr().out
    for release in listing["releases"]:
        assert all(where in text for where in release["download"])
        assert all(c["command"] in text for c in release["conversions"])


def test_comparison_magnifies_the_most_textured_region() -> None:
    from perceptsr.io.compare import GAP, LABEL_HEIGHT, side_by_side, texture_box

    generator = torch.Generator().manual_seed(0)
    image = torch.full((1, 3, 96, 128), 0.5)
    image[..., 40:60, 80:104] = torch.rand(1, 3, 20, 24, generator=generator)  # fur-like detail
    image[..., 70:, :60] = 1.0  # one strong edge, which plain gradient energy would pick
    top, left, side = texture_box(image, 16)
    assert side == 16 and 40 <= top <= 44 and 80 <= left <= 88
    lr = image[..., ::4, ::4]
    picture = side_by_side([{"LR": lr, "a": image}], scale=4, crop=16, zoom=4)
    assert picture.shape[-2] == 96 + 16 * 4 + 2 * (LABEL_HEIGHT + GAP)
    assert side_by_side([{"LR": lr, "a": image}], scale=4, crop=None).shape[-2] == 96 + LABEL_HEIGHT + GAP
