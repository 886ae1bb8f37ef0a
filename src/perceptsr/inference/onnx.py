"""ONNX export of every generator, and an onnxruntime model that the inference path runs like a PyTorch one.

The exported graph is the plain network (the eager generator, not the fused copy of inference/fusion.py: no
oneDNN-specific ops), with dynamic batch, height and width. Inputs and output:
- `lr`: N×3×h×w, RGB in [0,1];
- FxSR `t`: N×1×h×w in [0,1], the style map at LR size (0 distortion-, 1 perception-oriented; a uniform t is a
  constant map);
- SFTGAN `seg`: N×8×(4h)×(4w), class probabilities at HR size (background, sky, water, grass, mountain,
  building, plant, animal; they sum to 1 over the 8 channels);
- output `sr`: N×3×(s·h)×(s·w), unclamped (clamp to [0,1] for an image).
All are float32, or float16 throughout (inputs, weights, output) for `half=True`. metadata_props carry what
rebuilds the contract without perceptsr: format, arch, scale, config (JSON), conditions (JSON: name -> scale,
channels, default), input_range, precision, opset, source and source_sha256 (the release or checkpoint exported).

The exporter is torch.onnx's TorchScript one (`dynamo=False`): with torch 2.13 the torch.export-based exporter
was an order of magnitude slower and wrote an SFTGAN graph whose DepthToSpace failed on other input sizes. Tracing keeps
only the branches taken on the example, so the generators take their general branch while recording
(archs/tracing.py): FxSR's uniform-t shortcut and RRDBNet's pad-only-when-needed would otherwise be baked in.

`OnnxModel` runs a file with onnxruntime (CUDA provider when available, else CPU) behind the generator
contract (`scale`, `condition_scales`, `config`, `forward(lr, **conditions)`), so tiling, conditions and errors
are those of the PyTorch path; `inference.fast.prepare` passes it through unchanged.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import json
import os
import re
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from perceptsr.errors import CheckpointError, InputError

FORMAT = "perceptsr-onnx"
VERSION = "1"
DEFAULT_OPSET = 17  # the lowest the issue allows, for the widest runtime support (TensorRT 8.6, older ORT)
MAX_OPSET = 20  # the TorchScript exporter's newest
INSTALL_HINT = "ONNX support needs onnx and onnxruntime: pip install perceptsr[onnx]"
CONDITION_DEFAULTS: dict[str, float] = {"t": 0.8}  # FxSR's default t (archs.fxsr.DEFAULT_T)
EXAMPLE_SIZE = 16  # LR side of the example traced: divisible by every unshuffle factor, small enough to be quick


def require(module: str) -> Any:
    """Import `module` (onnx, onnxruntime), or an InputError saying how to install the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise InputError(INSTALL_HINT) from None




def condition_specs(model: nn.Module) -> dict[str, dict[str, Any]]:
    """name -> {scale, channels, default} of every condition the generator takes (what the graph's inputs are)."""
    channels = getattr(model, "condition_channels", {})
    return {name: {"scale": factor, "channels": channels.get(name, 1), "default": CONDITION_DEFAULTS.get(name)}
            for name, factor in getattr(model, "condition_scales", {}).items()}


def example_inputs(model: nn.Module, *, dtype: torch.dtype = torch.float32,
                   conditions: dict[str, Tensor] | None = None) -> tuple[Tensor, ...]:
    """An LR image and uniform conditions (t = its default, seg = equal probabilities) to trace with.

    Uniform on purpose: the graph must not depend on the example (see archs/tracing.py), and tests check that.
    """
    size = EXAMPLE_SIZE
    generator = torch.Generator().manual_seed(0)
    lr = torch.rand(1, 3, size, size, generator=generator)
    out = [lr]
    for name, spec in condition_specs(model).items():
        side = size * spec["scale"]
        if conditions and name in conditions:
            value = conditions[name]
        elif spec["default"] is not None:
            value = torch.full((1, spec["channels"], side, side), float(spec["default"]))
        else:
            value = torch.full((1, spec["channels"], side, side), 1 / spec["channels"])
        out.append(value)
    return tuple(x.to(dtype) for x in out)


def export_onnx(model: nn.Module, path: Path, *, arch: str, half: bool = False, opset: int = DEFAULT_OPSET,
                metadata: dict[str, str] | None = None, conditions: dict[str, Tensor] | None = None,
                overwrite: bool = False) -> dict[str, str]:
    """Write generator `model` (architecture `arch`) to `path` as ONNX; returns the metadata written.

    `metadata` adds to the standard keys (source, source_sha256, method, ...); `conditions` replaces the example
    conditions traced with (tests use it to show the graph does not depend on them).
    """
    from perceptsr.config import to_dict
    from perceptsr.io.images import atomic_output

    onnx = require("onnx")
    if not any(True for _ in model.parameters()):
        raise InputError(f"{arch} has no parameters to export: it is computed, not learned (use --model {arch})")
    if not DEFAULT_OPSET <= opset <= MAX_OPSET:
        raise InputError(f"--opset must be within {DEFAULT_OPSET}..{MAX_OPSET}, not {opset}")
    dtype = torch.float16 if half else torch.float32
    network = copy.deepcopy(model).eval().to("cpu", dtype)
    specs = condition_specs(network)
    names = ["lr", *specs]
    sizes = {"lr": "", **{name: "" if spec["scale"] == 1 else f"{name}_" for name, spec in specs.items()}}
    axes = {name: {0: "batch", 2: f"{prefix}height", 3: f"{prefix}width"} for name, prefix in sizes.items()}
    axes["sr"] = {0: "batch", 2: "sr_height", 3: "sr_width"}
    buffer = io.BytesIO()
    with _naming_failures(network, arch), torch.no_grad():
        torch.onnx.export(network, example_inputs(network, dtype=dtype, conditions=conditions), buffer,
                          input_names=names, output_names=["sr"], dynamic_axes=axes, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    proto = onnx.load_from_string(buffer.getvalue())
    info = {
        "format": FORMAT,
        "version": VERSION,
        "arch": arch,
        "scale": str(model.scale),
        "config": json.dumps(to_dict(model.config)),
        "inputs": ",".join(names),
        "conditions": json.dumps(specs),
        "input_range": "[0, 1]",
        "output": "unclamped, [0, 1] convention",
        "precision": "fp16" if half else "fp32",
        "opset": str(opset),
        "feature_width": str(max((m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)), default=3)),
        **(metadata or {}),
    }
    onnx.helper.set_model_props(proto, info)
    proto.doc_string = _doc(arch, model.scale, specs, info["precision"])
    proto.producer_name = "perceptsr"
    with atomic_output(path, overwrite=overwrite) as tmp:
        tmp.write_bytes(proto.SerializeToString())
    return info


def _doc(arch: str, scale: int, specs: dict[str, dict[str, Any]], precision: str) -> str:
    inputs = ["lr: N x 3 x h x w RGB in [0,1]"]
    for name, spec in specs.items():
        side = "h x w" if spec["scale"] == 1 else f"{spec['scale']}h x {spec['scale']}w"
        inputs.append(f"{name}: N x {spec['channels']} x {side}")
    return (f"perceptsr {arch} x{scale} ({precision}). Inputs: {'; '.join(inputs)}. "
            f"Output sr: N x 3 x {scale}h x {scale}w, unclamped.")


@contextlib.contextmanager
def _naming_failures(network: nn.Module, arch: str):
    """Turn an export failure into one InputError line naming the layer (module path) where it happened.

    A failure while tracing happens inside a module's forward: forward hooks keep the stack of modules running.
    A failure while converting (an op without an ONNX form) names the op; the TorchScript exporter prints the
    graph then, where the op's line carries its module scope.
    """
    stack: list[str] = []

    def leave(*_: Any) -> None:  # returns None: a forward hook's result would replace the module's output
        stack.pop()

    handles = []
    for name, module in network.named_modules():
        handles.append(module.register_forward_pre_hook(lambda *_, n=name: stack.append(n)))
        handles.append(module.register_forward_hook(leave))
    printed: list[str] = []
    try:
        with warnings.catch_warnings(), _stdout_captured(printed):
            warnings.simplefilter("ignore")  # TracerWarnings on shape checks, the legacy exporter's deprecation
            yield
    except Exception as error:
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        layer = next((n for n in reversed(stack) if n), None) or _scope_of("".join(printed), message)
        kind = dict(network.named_modules()).get(layer or "")
        where = f"layer {layer}" + (f" ({type(kind).__name__})" if kind is not None else "") if layer else "the network"
        raise InputError(f"cannot export {arch} to ONNX: {where}: {message}") from None
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def _stdout_captured(into: list[str]):
    """Standard output, at the file-descriptor level, appended to `into` instead of printed: the exporter's C++
    side prints the whole graph there when a conversion fails."""
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        try:
            with contextlib.redirect_stdout(io.StringIO()) as text:
                yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, 1)
            os.close(saved)
            sink.seek(0)
            into.append(sink.read().decode(errors="replace"))
            into.append(text.getvalue())


def _scope_of(graph: str, message: str) -> str | None:
    """The module path of the op named in `message` ('aten::x') in a printed TorchScript graph, if found."""
    op = re.search(r"'(\w+::\w+)'", message)
    if op is None:
        return None
    for line in graph.splitlines():
        if op.group(1) + "(" in line and "scope:" in line:
            scope = line.split("scope:", 1)[1].split("#", 1)[0].strip()
            parts = [part.rsplit("::", 1)[-1] for part in scope.split("/")[1:]]
            return ".".join(p for p in parts if p) or None
    return None


class OnnxModel(nn.Module):
    """An exported generator run by onnxruntime, behind the generator contract (see perceptsr.archs).

    `forward(lr, **conditions)` takes what the PyTorch generator takes (t as a float, 0-d tensor or map; seg
    as N×8×4h×4w) with the same checks and messages, and returns N×3×sh×sw float32 on the CPU, unclamped. It has
    no parameters: `prepare` returns it as it is, and the precision is the one it was exported in.
    """

    def __init__(self, path: Path, *, threads: int | None = None) -> None:
        super().__init__()
        ort = require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
        try:
            self.session = ort.InferenceSession(str(path), sess_options=options, providers=providers)
        except Exception as error:  # onnxruntime reports a damaged or foreign file with its own exception types
            raise CheckpointError(f"{path} is not a readable ONNX model ({str(error).strip().splitlines()[0]})"
                                  ) from None
        meta = dict(self.session.get_modelmeta().custom_metadata_map)
        if meta.get("format") != FORMAT:
            raise CheckpointError(f"{path} is an ONNX model, but not one perceptsr exported (no '{FORMAT}' "
                                  f"metadata): export it with `perceptsr export`")
        self.path = Path(path)
        self.release_metadata = meta
        self.arch = meta["arch"]
        self.scale = int(meta["scale"])
        self.precision = self.requested = meta["precision"]  # as a FastModel's: in effect, and asked for
        self.feature_width = int(meta.get("feature_width", 64))
        specs = json.loads(meta["conditions"])
        self.condition_scales: dict[str, int] = {name: int(s["scale"]) for name, s in specs.items()}
        self.condition_channels: dict[str, int] = {name: int(s["channels"]) for name, s in specs.items()}
        self.condition_defaults = {name: s.get("default") for name, s in specs.items()}
        self.config = _config(self.arch, meta.get("config", "{}"), path)
        self.providers = self.session.get_providers()
        self._dtype = torch.float16 if self.precision == "fp16" else torch.float32

    def check_precision(self, precision: str) -> OnnxModel:
        """Itself, if `precision` (a run's --precision) can mean this file; reduced ones are set at export."""
        if precision not in ("auto", "fp32", self.precision):
            raise InputError(f"{self.path.name} is an ONNX model exported in {self.precision}: --precision {precision} "
                             f"applies to PyTorch models (export with --half for fp16)")
        return self

    def inputs(self, lr: Tensor, conditions: dict[str, Tensor | float]) -> dict[str, Tensor]:
        """The graph's named inputs for `lr` and `conditions`, checked as the PyTorch generator checks them."""
        if lr.dim() != 4 or lr.shape[1] != 3:
            raise InputError(f"{self.arch} expects N×3×h×w images, got shape {tuple(lr.shape)}")
        extra = sorted(set(conditions) - set(self.condition_scales))
        if extra:
            raise InputError(f"{self.arch} takes no condition {extra[0]!r}")
        feeds = {"lr": lr}
        for name, factor in self.condition_scales.items():
            value = conditions.get(name, self.condition_defaults.get(name))
            if value is None:
                raise InputError(f"{self.arch} needs the condition {name!r} "
                                 f"(N×{self.condition_channels[name]}×{factor}h×{factor}w)")
            feeds[name] = self._condition(name, value, lr)
        return feeds

    def _condition(self, name: str, value: Tensor | float, lr: Tensor) -> Tensor:
        batch, _, height, width = lr.shape
        if name == "t":  # every t-conditioned arch (fxsr, fxsr_msrresnet) reads t as FxSR does
            from perceptsr.archs.fxsr import _t_map

            return _t_map(lr.float(), value).expand(batch, 1, height, width)
        if self.arch == "sftgan" and name == "seg":
            from perceptsr.archs.sftgan import _check_seg

            return _check_seg(lr, value, self.condition_channels[name], self.condition_scales[name])
        factor, channels = self.condition_scales[name], self.condition_channels[name]
        if not isinstance(value, Tensor) or value.dim() == 0:
            return lr.new_full((batch, channels, factor * height, factor * width), float(value))
        expected = (batch, channels, factor * height, factor * width)
        if tuple(value.shape) != expected:
            raise InputError(f"condition {name!r} has shape {tuple(value.shape)}; {self.arch} needs {expected}")
        return value

    def forward(self, lr: Tensor, **conditions: Tensor | float) -> Tensor:
        feeds = self.inputs(lr, conditions)
        arrays = {name: value.detach().to("cpu", self._dtype).contiguous().numpy() for name, value in feeds.items()}
        (sr,) = self.session.run(["sr"], arrays)
        return torch.from_numpy(sr).float()

    def extra_repr(self) -> str:
        return f"{self.path}, {self.arch} x{self.scale}, {self.precision}, {self.providers[0]}"


def _config(arch: str, text: str, path: Path) -> Any:
    """The architecture's config dataclass from the metadata (None for an architecture this version lacks)."""
    from perceptsr.archs import ARCHS
    from perceptsr.config import from_dict

    if arch not in ARCHS:
        return None
    try:
        return from_dict(ARCHS[arch].config, json.loads(text), arch)
    except Exception as error:  # a damaged JSON or a config this version does not know
        raise CheckpointError(f"{path}: bad architecture config in the ONNX metadata ({error})") from None


def load_onnx(path: str | Path) -> OnnxModel:
    """An exported model in eval mode, run by onnxruntime (see OnnxModel)."""
    return OnnxModel(Path(path)).eval()
