"""ONNX export of every generator and onnxruntime inference (perceptsr.inference.onnx, `perceptsr export -o X.onnx`).

Parity bound, from the issue: |onnxruntime - PyTorch fp32| <= 1e-4 * max(1, max|y|). fp16 exports are checked
loosely, at FP16_TOLERANCE * max(1, max|y|): weights, inputs and every activation rounded to float16 (eps ~1e-3)
move outputs by a few 1e-4 of their scale; a wrong graph moves them by far more.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_cli, tiny_release, write_pngs

from perceptsr.archs import ARCHS
from perceptsr.errors import InputError

if os.environ.get("CI", "").lower() == "true":  # `make test` installs the [onnx] extra: missing fails, not skips
    import onnx
    import onnxruntime  # noqa: F401
else:
    onnx = pytest.importorskip("onnx", reason="pip install perceptsr[onnx]")
    pytest.importorskip("onnxruntime", reason="pip install perceptsr[onnx]")

from perceptsr.inference.onnx import INSTALL_HINT, export_onnx, load_onnx  # noqa: E402

CASES = [(name, scale) for name, spec in ARCHS.items() if name != "bicubic" for scale in spec.scales]
SIZES = [(1, 24, 16), (2, 21, 19)]  # the second: batch 2, not a multiple of 8, larger than the traced example
CHANNELS = {"seg": 8, "t": 1}
FP16_TOLERANCE = 5e-3


def tolerance(expected: torch.Tensor, relative: float = 1e-4) -> float:
    return relative * max(1.0, float(expected.abs().max()))


def build(name: str, scale: int) -> torch.nn.Module:
    """The tiny config; SFT shifts amplified, so that a condition map moves the output far beyond the tolerance
    (at their initial size a tiny net's output moves by ~1e-5 between a uniform and a varied map)."""
    torch.manual_seed(0)
    model = ARCHS[name].module(ARCHS[name].tiny(scale)).eval()
    with torch.no_grad():
        for key, param in model.named_parameters():
            if "SFT_shift_conv1" in key:
                param.mul_(100)
            elif name == "fxsr_msrresnet" and key.startswith(("upconv", "conv_hr", "conv_last")):
                param.mul_(10)  # MSRResNet's tail starts at 0.1 scale (BasicSR's init), damping the SFT's effect
    return model


def conditions(model: torch.nn.Module, n: int, h: int, w: int, *, uniform: bool) -> dict[str, torch.Tensor]:
    """Condition maps of the sizes the model declares: uniform (one value per map) or varied per pixel."""
    generator = torch.Generator().manual_seed(n * 1000 + h)
    out = {}
    for key, factor in model.condition_scales.items():
        shape = (n, CHANNELS[key], h * factor, w * factor)
        value = torch.rand(shape[:2] + (1, 1), generator=generator).expand(shape) if uniform else \
            torch.rand(shape, generator=generator)
        out[key] = (value / value.sum(1, keepdim=True) if key == "seg" else value).contiguous()
    return out


def pytorch(model: torch.nn.Module, lr: torch.Tensor, **cond: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(lr, **cond)


@pytest.mark.parametrize(("name", "scale"), CASES)
def test_onnxruntime_matches_pytorch_for_every_architecture(name: str, scale: int, tmp_path: Path) -> None:
    model = build(name, scale)
    export_onnx(model, tmp_path / "m.onnx", arch=name)
    exported = load_onnx(tmp_path / "m.onnx")
    assert exported.scale == scale and exported.condition_scales == model.condition_scales
    assert exported.config == model.config
    kinds = [True, False] if model.condition_scales else [False]
    for n, h, w in SIZES:
        lr = torch.rand(n, 3, h, w, generator=torch.Generator().manual_seed(h))
        outputs = []
        for uniform in kinds:
            cond = conditions(model, n, h, w, uniform=uniform)
            expected = pytorch(model, lr, **cond)
            got = exported(lr, **cond)
            assert got.shape == expected.shape == (n, 3, h * scale, w * scale)
            error = float((got - expected).abs().max())
            assert error <= tolerance(expected), (name, scale, (n, h, w), uniform, error)
            outputs.append(expected)
        if len(outputs) == 2:  # the maps matter: a graph ignoring them would fail the bound
            assert float((outputs[0] - outputs[1]).abs().max()) > 10 * tolerance(outputs[1])


def test_fxsr_exported_with_a_uniform_t_follows_a_varied_map(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    model = build("fxsr", 4)
    uniform = {"t": torch.full((1, 1, 16, 16), 0.3)}
    export_onnx(model, tmp_path / "fx.onnx", arch="fxsr", conditions=uniform)
    lr = torch.rand(1, 3, 12, 10)
    t_map = torch.linspace(0, 1, 120).reshape(1, 1, 12, 10)
    expected = pytorch(model, lr, t=t_map)
    got = load_onnx(tmp_path / "fx.onnx")(lr, t=t_map)
    assert float((got - expected).abs().max()) <= tolerance(expected)
    # the guard matters: recorded with the shortcut taken, the graph ignores the map (one t for every pixel)
    monkeypatch.setattr("perceptsr.archs.fxsr.recording", lambda: False)
    export_onnx(model, tmp_path / "baked.onnx", arch="fxsr", conditions=uniform)
    baked = load_onnx(tmp_path / "baked.onnx")(lr, t=t_map)
    assert float((baked - expected).abs().max()) > 10 * tolerance(expected)


def test_graph_has_dynamic_axes_named_inputs_opset_and_metadata(tmp_path: Path) -> None:
    from perceptsr.cli.main import main

    release = tiny_release(tmp_path / "sft.safetensors", "sftgan", 4)
    out = tmp_path / "sft.onnx"
    assert main(["export", str(release), "-o", str(out), "--opset", "18"]) == 0
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) == 18
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in proto.graph.input}
    assert list(dims) == ["lr", "seg"]
    assert dims["lr"][1] == 3 and dims["seg"][1] == 8
    assert all(isinstance(d, str) for name in dims for d in (dims[name][0], *dims[name][2:]))  # N, h, w symbolic
    meta = {p.key: p.value for p in proto.metadata_props}
    import hashlib

    assert meta["arch"] == "sftgan" and meta["scale"] == "4" and meta["precision"] == "fp32"
    assert meta["input_range"] == "[0, 1]" and meta["opset"] == "18" and meta["inputs"] == "lr,seg"
    assert meta["source_sha256"] == hashlib.sha256(release.read_bytes()).hexdigest()
    assert '"seg": {"scale": 4, "channels": 8' in meta["conditions"]
    assert not any(n.domain not in ("", "ai.onnx") for n in proto.graph.node)  # plain ONNX ops, nothing fused
    assert "seg: N x 8 x 4h x 4w" in proto.doc_string
    assert main(["export", str(release), "-o", str(tmp_path / "x.onnx"), "--opset", "16"]) == 2


@pytest.mark.parametrize("name", ["msrresnet", "fxsr", "sftgan", "frsr"])
def test_fp16_export_is_close(name: str, tmp_path: Path) -> None:
    model = build(name, ARCHS[name].scales[-1] if name != "msrresnet" else 4)
    export_onnx(model, tmp_path / "h.onnx", arch=name, half=True)
    exported = load_onnx(tmp_path / "h.onnx")
    proto = onnx.load(str(tmp_path / "h.onnx"))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16
    assert exported.precision == "fp16"
    lr = torch.rand(2, 3, 13, 11)
    cond = conditions(model, 2, 13, 11, uniform=False)
    expected = pytorch(model, lr, **cond)
    got = exported(lr, **cond)
    assert got.dtype == torch.float32
    assert float((got - expected).abs().max()) <= tolerance(expected, FP16_TOLERANCE)


def test_onnx_model_runs_through_prepare_tiling_and_conditions(tmp_path: Path) -> None:
    from perceptsr.inference.fast import prepare
    from perceptsr.inference.upscale import upscale_tensor

    fx, sft = build("fxsr", 4), build("sftgan", 4)
    export_onnx(fx, tmp_path / "fx.onnx", arch="fxsr")
    export_onnx(sft, tmp_path / "sft.onnx", arch="sftgan")
    onnx_fx, onnx_sft = load_onnx(tmp_path / "fx.onnx"), load_onnx(tmp_path / "sft.onnx")
    assert prepare(onnx_fx, precision="auto") is onnx_fx
    lr = torch.rand(1, 3, 30, 26)
    t_map = torch.rand(1, 1, 30, 26)
    for t in (t_map, torch.tensor(0.25), 0.6):
        expected = upscale_tensor(fx, lr, tile=16, overlap=4, conditions={"t": t}, precision="fp32")
        got = upscale_tensor(onnx_fx, lr, tile=16, overlap=4, conditions={"t": t}, precision="fp32")
        assert float((got - expected).abs().max()) <= tolerance(expected)
    seg = conditions(sft, 1, 30, 26, uniform=False)
    expected = upscale_tensor(sft, lr, tile=16, overlap=4, conditions=seg)
    got = upscale_tensor(onnx_sft, lr, tile=16, overlap=4, conditions=seg)
    assert float((got - expected).abs().max()) <= tolerance(expected)
    # the same one-line errors as the PyTorch generators
    bad_seg = torch.rand(1, 8, 30, 26)
    for model in (sft, onnx_sft):
        with pytest.raises(InputError, match="segmentation map has shape"):
            model(lr, seg=bad_seg)
    for model in (fx, onnx_fx):
        with pytest.raises(InputError, match="t must be a float or a map"):
            model(lr, t=torch.rand(1, 1, 5, 5))
    with pytest.raises(InputError, match="needs the condition 'seg'"):
        onnx_sft(lr)
    with pytest.raises(InputError, match="--precision bf16 applies to PyTorch models"):
        prepare(onnx_fx, precision="bf16")


def test_bicubic_and_unexportable_layers_are_one_line(tmp_path: Path) -> None:
    from perceptsr.archs.bicubic import Bicubic, BicubicConfig
    from perceptsr.cli.main import main

    with pytest.raises(InputError, match="bicubic has no parameters"):
        export_onnx(Bicubic(BicubicConfig(4)), tmp_path / "b.onnx", arch="bicubic")
    assert main(["export", "bicubic", "-o", str(tmp_path / "b.onnx")]) == 2

    class Odd(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.special.bessel_j0(x)  # no ONNX form

    class Broken(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise RuntimeError("cannot trace this")

    for layer, expected in ((Odd(), "layer body.odd (Odd): .*bessel_j0"), (Broken(), "layer body.odd (Broken)")):
        model = build("msrresnet", 4)
        model.body = torch.nn.Sequential(model.body, torch.nn.Identity())
        model.body.add_module("odd", layer)
        with pytest.raises(InputError, match=expected.replace("(", r"\(").replace(")", r"\)")) as info:
            export_onnx(model, tmp_path / "odd.onnx", arch="msrresnet")
        assert "\n" not in str(info.value)
    assert not (tmp_path / "odd.onnx").exists()


def test_without_onnxruntime_one_line_says_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from perceptsr.zoo.models import load_model

    (tmp_path / "m.onnx").write_bytes(b"")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # import fails as if not installed
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(InputError) as info:
        load_model(tmp_path / "m.onnx")
    assert str(info.value) == INSTALL_HINT and "pip install perceptsr[onnx]" in INSTALL_HINT
    with pytest.raises(InputError, match=r"pip install perceptsr\[onnx\]"):
        export_onnx(build("msrresnet", 4), tmp_path / "x.onnx", arch="msrresnet")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # the legacy exporter, used directly
def test_foreign_or_damaged_onnx_files_are_refused(tmp_path: Path) -> None:
    from perceptsr.errors import CheckpointError
    from perceptsr.zoo.models import load_model

    (tmp_path / "bad.onnx").write_bytes(b"not a model")
    with pytest.raises(CheckpointError, match="not a readable ONNX model"):
        load_model(tmp_path / "bad.onnx")
    foreign = tmp_path / "foreign.onnx"
    torch.onnx.export(torch.nn.Conv2d(3, 3, 3), (torch.rand(1, 3, 8, 8),), str(foreign), dynamo=False)
    with pytest.raises(CheckpointError, match="not one perceptsr exported"):
        load_model(foreign)
    export_onnx(build("msrresnet", 4), tmp_path / "m.onnx", arch="msrresnet")
    with pytest.raises(InputError, match="upscales x4, but scale=2"):
        load_model(tmp_path / "m.onnx", scale=2)


def test_export_and_upscale_with_the_onnx_file_end_to_end(tmp_path: Path) -> None:
    """`perceptsr export REL -o X.onnx`, then `perceptsr upscale --model X.onnx` (tiled, with a t map) in
    subprocesses: the PNGs match the PyTorch model's within one 8-bit level."""
    from PIL import Image

    from perceptsr.conditions import ConditionOptions, build_conditions
    from perceptsr.inference.upscale import upscale_tensor
    from perceptsr.io.images import read_image
    from perceptsr.zoo.models import load_model

    release = tiny_release(tmp_path / "fx.safetensors", "fxsr", 4)
    images = write_pngs(tmp_path / "in", [(22, 18)], block=4)
    t_map = tmp_path / "t.png"
    Image.fromarray((np.linspace(0, 255, 22 * 18).reshape(22, 18)).astype(np.uint8)).save(t_map)
    result = run_cli("export", release, "-o", tmp_path / "fx.onnx")
    assert result.returncode == 0, result.stderr
    result = run_cli("upscale", images, "-o", tmp_path / "out", "--model", tmp_path / "fx.onnx", "--t-map", t_map,
                     "--tile", 12, "--tile-overlap", 4, "--quiet")
    assert result.returncode == 0, result.stderr
    got = np.asarray(Image.open(tmp_path / "out" / "im0.png"), dtype=np.int16)
    lr = read_image(images / "im0.png").rgb
    model = load_model(release)
    cond = build_conditions(model, lr, ConditionOptions(t_map=str(t_map)))
    sr = upscale_tensor(model, lr, tile=12, overlap=4, conditions=cond, precision="fp32")
    expected = (sr.clamp(0, 1)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.int16)
    assert got.shape == expected.shape == (88, 72, 3)
    assert np.abs(got - expected).max() <= 1
    from perceptsr.cli.main import main

    assert main(["upscale", str(images), "-o", str(tmp_path / "o2"), "--model", str(tmp_path / "fx.onnx"),
                 "--seg", "auto"]) == 2  # the same refusal as for the PyTorch model


def test_eval_sweep_and_report_run_onnx_models_like_pytorch_ones(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import json

    from perceptsr.cli.main import main

    release = tiny_release(tmp_path / "fx.safetensors", "fxsr", 4)
    assert main(["export", str(release), "-o", str(tmp_path / "fx.onnx")]) == 0
    data = write_pngs(tmp_path / "hr", [(48, 40), (36, 44)], block=4)
    capsys.readouterr()
    assert main(["eval", "--model", f"{release}:label=pt", "--model", f"{tmp_path / 'fx.onnx'}:label=ort", "--data",
                 str(data), "--scale", "4", "--t", "0.3", "--tile", "8", "--tile-overlap", "2", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["results"]["hr"]
    assert set(rows) == {"bicubic", "pt", "ort"}
    for metric, value in rows["pt"].items():
        assert rows["ort"][metric] == pytest.approx(value, abs=1e-3), metric
    assert main(["sweep", "--model", str(tmp_path / "fx.onnx"), "--data", str(data), "-o", str(tmp_path / "sw"),
                 "--t-values", "0,1", "--quiet"]) == 0
    assert main(["report", "--model", str(tmp_path / "fx.onnx"), "--data", str(data), "--scale", "4", "-o",
                 str(tmp_path / "report"), "--no-lpips", "--quiet"]) == 0


def test_export_from_a_run_folder(tmp_path: Path) -> None:
    """A run folder's checkpoint (written as the trainer writes one) exported as ONNX: its EMA weights, with the
    checkpoint's sha256."""
    import hashlib

    from perceptsr.cli.main import main
    from perceptsr.engine.checkpoint import WEIGHTS, save_checkpoint
    from perceptsr.engine.setup import build_generator, config_yaml, parse_train_config

    config = parse_train_config({
        "method": "srgan", "data": {"train": [str(tmp_path)], "patch_size": 32},
        "model": {"generator": {"scale": 4, "num_feat": 8, "num_block": 1}, "arch": "msrresnet",
                  "discriminator": {"num_feat": 4, "input_size": 32, "dense_features": 8, "norm": "none"}}},
        for_training=False)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(config_yaml(config))
    torch.manual_seed(1)
    raw, ema = build_generator(config), build_generator(config)
    with torch.no_grad():
        for param in ema.parameters():  # far from the raw weights, as a trained EMA is
            param.add_(0.05 * torch.randn_like(param))
    weights = {**{f"generator.{k}": v for k, v in raw.state_dict().items()},
               **{f"ema.{k}": v for k, v in ema.state_dict().items()}}
    checkpoint = save_checkpoint(run, 2, weights, {"torch_rng": torch.get_rng_state(), "optimizers": {}},
                                 {"method": "srgan"})
    out = tmp_path / "run.onnx"
    assert main(["export", str(run), "-o", str(out), "--ema"]) == 0
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["weights"] == "ema" and meta["step"] == "2" and meta["method"] == "srgan"
    assert meta["source_sha256"] == hashlib.sha256((checkpoint / WEIGHTS).read_bytes()).hexdigest()
    lr = torch.rand(1, 3, 13, 11)
    expected = pytorch(ema.eval(), lr)
    assert float((load_onnx(out)(lr) - expected).abs().max()) <= tolerance(expected)
    assert float((pytorch(raw.eval(), lr) - expected).abs().max()) > 10 * tolerance(expected)  # not the raw weights
    assert main(["export", str(run), "-o", str(tmp_path / "x.bin")]) == 2
    assert main(["export", str(run), "-o", str(tmp_path / "x.safetensors"), "--half"]) == 2


SLOW_CASES = {
    "sftgan-pytorch": ("sftgan", {"form": "pytorch"}),
    "sftgan-torch": ("sftgan", {"form": "torch"}),
    "fxsr-x4": ("fxsr", {"scale": 4}),
    "rrdb-x4": ("rrdb", {"scale": 4}),
    "msrresnet-x4": ("msrresnet", {"scale": 4}),
    "srfeat-x4": ("srfeat", {"scale": 4}),
    "frsr-x2": ("frsr", {"scale": 2}),
    "frsr-x3": ("frsr", {"scale": 3}),
    "frsr-x4": ("frsr", {"scale": 4}),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(SLOW_CASES))
def test_full_size_released_architectures_match(case: str, tmp_path: Path) -> None:
    name, settings = SLOW_CASES[case]
    torch.manual_seed(0)
    model = ARCHS[name].module(ARCHS[name].config(**settings)).eval()
    export_onnx(model, tmp_path / "m.onnx", arch=name)
    exported = load_onnx(tmp_path / "m.onnx")
    lr = torch.rand(1, 3, 24, 20)
    cond = conditions(model, 1, 24, 20, uniform=False)
    expected = pytorch(model, lr, **cond)
    error = float((exported(lr, **cond) - expected).abs().max())
    assert error <= tolerance(expected), (case, error)
