"""Fast inference for any generator: inference mode, channels-last, reduced precision, optional torch.compile.

What each part buys (measured by `perceptsr bench`; see benchmarks/inference.py):
- channels-last (NHWC) lets oneDNN use its direct convolution kernels instead of reordering every map.
- bf16 autocast runs convolutions on the CPU's bf16 units: AMX tiles (Intel Sapphire Rapids and later; the
  bench's roofline conv ran 614-1,550 GFLOP/s bf16 vs 194-233 fp32 on a 2-core Xeon), or AVX512-BF16 alone
  (AMD Zen 4/5; 985-1,014 vs 498-508 on a 2-core EPYC); adds, losses and interpolation stay in the precision
  autocast chooses (fp32 where it matters). fp16/bf16 on CUDA the same way.
- the allocator settings the CLI's inference commands make first (perceptsr/allocator.py): freed maps are
  reused and the largest come in huge pages, so the output of every op costs few page faults.
- perceptsr.inference.fusion folds BatchNorm into the preceding conv and, on CPU, fuses into each conv what follows it
  (activation, residual add, pixel shuffle) and rewrites the narrow output convs.
- `compile=True` (torch.compile with inductor weight freezing, on the fused copy) costs tens of seconds per model
  and input shape, so it is opt-in (tiles all have one shape, so a large image compiles once). On this machine it
  gains nothing over the fused eager path: `perceptsr bench --compile --model srresnet` (128x128) timed fp32
  1388 vs 1360 ms and bf16 463 vs 449 ms (one run, machine busy). `torch.jit.freeze` and
  `optimize_for_inference` were measured too and gained nothing over channels-last, so they are not used.

Precision `auto` picks reduced precision only where it is native (CPU with AMX / AVX512-BF16; CUDA) and where
the model keeps its quality: on its first call the model runs a central crop of the input in fp32 and in the
reduced precision, and keeps the reduced one only if the two outputs agree to PROBE_MIN_PSNR dB. Any reduced
output with NaN/inf is recomputed in fp32, with a warning, and the model stays in fp32 from then on.
"""

from __future__ import annotations

import functools
import logging
import math
from pathlib import Path
from typing import Literal

import torch
from torch import Tensor, nn

from perceptsr.errors import InputError, PerceptsrError
from perceptsr.inference.fusion import fuse_for_inference
from perceptsr.inference.onnx import OnnxModel

log = logging.getLogger(__name__)

Precision = Literal["auto", "fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# The auto probe. A reduced-precision error of mean square d (uncorrelated with the model's own error m) lowers
# PSNR against HR by 10*log10(1 + d/m) dB; for that to stay < 0.05 dB, d/m < 0.0116. For x4 models on Set5
# (Y-PSNR up to ~33 dB, m ~ 5e-4) that means d < 6e-6, i.e. fp32-vs-reduced PSNR > 52 dB; 54 dB keeps a margin
# and still admits bf16 for the bundled models (tests/test_speed.py checks the drop on Set5 itself).
PROBE_MIN_PSNR = 54.0
PROBE_SIZE = 48  # LR pixels per side of the probe crop


@functools.cache
def cpu_flags(cpuinfo: Path = Path("/proc/cpuinfo")) -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where /proc/cpuinfo does not exist)."""
    try:
        text = cpuinfo.read_text()
    except OSError:  # not Linux: no flags known, so no native bf16 is assumed
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def native_reduced_precision(device: torch.device) -> Literal["bf16", "fp16"] | None:
    """The reduced precision this device runs natively (fast), or None.

    CUDA: bf16 where supported (Ampere+), else fp16. CPU: bf16 with AMX-BF16 or AVX512-BF16 and a oneDNN build
    that uses them. Elsewhere (MPS, older CPUs) reduced precision is emulated and slower, so None.
    """
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device.type != "cpu" or not torch.backends.mkldnn.is_available():
        return None
    if not {"amx_bf16", "avx512_bf16"} & cpu_flags():
        return None
    return "bf16" if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def bf16_supported(device: torch.device) -> bool:
    """Whether bf16 convolutions run on this device at all: oneDNN's bf16 path needs AVX512 (BW/VL/DQ) or
    AVX-NE-CONVERT; an AVX2-only CPU has neither (emulated there, through ATen's slow fallback or not at all)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return True
    return torch.backends.mkldnn.is_available() and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def resolve_precision(precision: str, device: torch.device) -> str:
    """`auto` -> the native reduced precision or fp32 (before the quality probe); others are checked."""
    if precision not in PRECISIONS:
        raise InputError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    native = native_reduced_precision(device)
    if precision == "auto":
        return native or "fp32"
    if precision == "fp16" and device.type == "mps":
        raise InputError("precision fp16 is not supported on MPS here; use fp32")
    if precision == "bf16" and not bf16_supported(device):
        need = " (bf16 convolutions need AVX512 or AVX-NE-CONVERT)" if device.type == "cpu" else ""
        raise InputError(f"precision bf16 is not supported on this {device.type}{need}; use fp32 or auto")
    if precision != "fp32" and precision != native:
        log.warning("%s is not native on this %s: it may be emulated and slower than fp32", precision, device.type)
    return precision


def _channels_last(x: Tensor | float) -> Tensor | float:
    """A 4-d map in channels-last; anything else (a 0-d tensor, a float condition such as FxSR's t) as it is."""
    return x.contiguous(memory_format=torch.channels_last) if isinstance(x, Tensor) and x.dim() == 4 else x


def _center_crop(lr: Tensor, conditions: dict[str, Tensor], size: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The central size x size LR crop and the matching crops of the conditions (cut at k x the coordinates)."""
    height, width = lr.shape[-2:]
    top, left = max(0, (height - size) // 2), max(0, (width - size) // 2)
    bottom, right = min(height, top + size), min(width, left + size)
    crops = {}
    for name, value in conditions.items():
        k = value.shape[-2] // height if isinstance(value, Tensor) and value.dim() == 4 else 0
        crops[name] = value[..., top * k:bottom * k, left * k:right * k] if k >= 1 else value
    return lr[..., top:bottom, left:right], crops


def output_psnr(a: Tensor, b: Tensor) -> float:
    """PSNR (dB, [0,1] scale, after clamping) between two outputs of the same shape; inf when identical."""
    mse = float((a.float().clamp(0, 1) - b.float().clamp(0, 1)).square().mean())
    return math.inf if mse == 0 else 10 * math.log10(1 / mse)


class FastModel(nn.Module):
    """A generator prepared for inference; call it like the generator: forward(lr, **conditions).

    lr N×3×h×w in [0,1] (any memory format) -> N×3×sh×sw float32, contiguous NCHW, unclamped. Always runs
    under torch.inference_mode(). `precision` is the one in effect ("fp32", "bf16", "fp16"); `requested` is
    what was asked for ("auto" is settled by the probe on the first call).
    """

    def __init__(self, model: nn.Module, *, source: nn.Module, precision: str, requested: str,
                 compile: bool = False) -> None:
        super().__init__()
        self.model = model  # the network that runs: a fused, channels-last copy of `source`
        self.__dict__["source"] = source  # the caller's generator, not a submodule (no second set of weights)
        self.scale: int = source.scale
        self.condition_scales: dict[str, int] = dict(getattr(source, "condition_scales", {}))
        self.config = getattr(source, "config", None)
        self.precision, self.requested = precision, requested
        self._probe_pending = requested == "auto" and precision != "fp32"
        self._compiled = torch.compile(model, options={"freezing": True}) if compile else None
        if hasattr(source, "condition_channels"):
            self.condition_channels = source.condition_channels

    def _device(self) -> torch.device:
        return next((p.device for p in self.model.parameters()), torch.device("cpu"))

    def _run(self, lr: Tensor, conditions: dict[str, Tensor], precision: str, *, compiled: bool) -> Tensor:
        net = self._compiled if compiled and self._compiled is not None else self.model
        if precision == "fp32":
            return net(lr, **conditions).float()
        with torch.autocast(self._device().type, dtype=DTYPES[precision]):
            return net(lr, **conditions).float()

    def _call(self, lr: Tensor, conditions: dict[str, Tensor], precision: str) -> Tensor:
        """One forward, compiled when asked; a failed compilation falls back to eager once, with a warning."""
        if self._compiled is None:
            return self._run(lr, conditions, precision, compiled=False)
        try:
            return self._run(lr, conditions, precision, compiled=True)
        except PerceptsrError:
            raise
        except Exception as error:  # inductor needs a C++ toolchain and may fail; eager always works
            log.warning("torch.compile failed (%s); running eagerly", str(error).splitlines()[0][:200])
            self._compiled = None
            return self._run(lr, conditions, precision, compiled=False)

    def _probe(self, lr: Tensor, conditions: dict[str, Tensor]) -> None:
        """Settle `auto`: keep the reduced precision only if it matches fp32 on a central crop."""
        self._probe_pending = False
        crop, crop_conditions = _center_crop(lr, conditions, PROBE_SIZE)
        reference = self._run(crop, crop_conditions, "fp32", compiled=False)
        reduced = self._run(crop, crop_conditions, self.precision, compiled=False)
        agreement = output_psnr(reference, reduced) if bool(torch.isfinite(reduced).all()) else -math.inf
        if agreement < PROBE_MIN_PSNR:
            log.info("precision auto: %s differs from fp32 at %.1f dB (< %.0f dB) on this model; using fp32",
                     self.precision, agreement, PROBE_MIN_PSNR)
            self.precision = "fp32"
        else:
            log.info("precision auto: using %s (%.1f dB from fp32 on the probe crop)", self.precision, agreement)

    def forward(self, lr: Tensor, **conditions: Tensor) -> Tensor:
        with torch.inference_mode():
            lr = _channels_last(lr)
            conditions = {name: _channels_last(value) for name, value in conditions.items()}
            if self._probe_pending:
                self._probe(lr, conditions)
            out = self._call(lr, conditions, self.precision)
            if self.precision != "fp32" and not all_finite(out):
                log.warning("%s output has NaN/inf values; recomputing in fp32 (and staying in fp32)", self.precision)
                self.precision = "fp32"
                out = self._call(lr, conditions, "fp32")
            return out.contiguous()


def all_finite(values: Tensor) -> bool:
    """Whether every element is finite, in one pass over a clean tensor (a finite sum means no NaN or inf; a
    sum that overflowed or is not finite sends it to the element-wise check)."""
    return bool(torch.isfinite(values.sum())) or bool(torch.isfinite(values).all())


def unwrap(model: nn.Module) -> nn.Module:
    """The caller's generator behind a FastModel (or the model itself)."""
    return model.source if isinstance(model, FastModel) else model


def prepare(model: nn.Module, *, precision: str = "auto", device: torch.device | None = None,
            compile: bool = False) -> FastModel:
    """Wrap `model` (a generator, see perceptsr.archs) for fast inference on its device (or `device`).

    The network that runs is a copy (see perceptsr.inference.fusion; weights channels-last); `model` itself is only put
    in eval mode (and moved to `device`). A FastModel is re-wrapped from its source with the new settings.
    `compile=True` adds torch.compile (slow first call). An ONNX model (inference.onnx) runs outside PyTorch and
    comes back as it is, at the precision it was exported in.
    """
    if isinstance(model, OnnxModel):
        return model.check_precision(precision)  # type: ignore[return-value]  # the same call contract
    source = unwrap(model).eval()
    if device is not None:
        source = source.to(device)
    device = next((p.device for p in source.parameters()), torch.device("cpu"))
    network = fuse_for_inference(source, activations=device.type == "cpu")  # a copy: `source` is unchanged
    network = network.to(memory_format=torch.channels_last)
    resolved = resolve_precision(precision, device)
    return FastModel(network, source=source, precision=resolved, requested=precision, compile=compile)
