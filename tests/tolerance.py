"""Tolerances for comparing two numerical paths (`from tolerance import assert_paths_close`).

Not a test module. Two paths that compute the same function (eager vs fused, tiled vs whole, one pixel vs a full
map, a converted net vs its source, two processes vs one) agree only up to rounding, and how much rounding depends
on the CPU: oneDNN picks other kernels (another summation order, AMX tiles) on an Intel Xeon with AMX than on an
AMD EPYC, so a fixed `atol=1e-6` holds on one and fails on the other. The bound here is derived instead:

    tol = k * eps(dtype) * sqrt(depth) * scale

- eps(dtype): torch.finfo(dtype).eps, the spacing of numbers near 1 in the dtype the paths round in (float32
  2^-23, bfloat16 2^-7, float16 2^-10, float64 2^-52); under autocast, the reduced dtype whatever the output's.
- depth: how many rounding steps feed one output value. Summation-order differences behave like a random walk,
  so the error grows like sqrt(depth). For a float32 network that is the number of products summed into an
  output, over every layer on the path (`network_depth(model)` sums the fan-ins of its convs and linears); for
  bf16/fp16 autocast, where products are accumulated in float32, it is the number of layers whose inputs and
  outputs are rounded (`rounding_layers(model)`).
- scale: the size of the values, max |expected| (floored at `min_scale`, 1 by default for [0, 1] images,
  because intermediate activations of that size are rounded even where the output is near zero).
- k: a safety factor over the estimate. float32/float64 (default 8): the two paths' summation orders depend on
  the kernels the CPU gets, which a test cannot know, so the margin is wide. bfloat16/float16 (default 2): under
  autocast products are accumulated in float32, so the error is the rounding of each layer's inputs and output
  to the reduced dtype, at most eps/2 of the value per rounding on any CPU; 2 * eps covers the input and output
  roundings of a layer and no more, so a wrong constant of a few percent still fails.

For bf16/fp16 the scale floor may be dropped (`min_scale=0`) for networks that shrink their [0, 1] input.
For the float32 paths of the tests' tiny networks (depth ~10^2-10^4) the bound is ~10^-5-10^-4 of the output
scale: rounding stays far below it on every CPU, while a real bug (a wrong constant, a missing residual, a
condition that is not applied, a swapped tensor) changes outputs by 10^-3 or more of it. Tests keep a second
assertion where needed showing that the effect they guard against is far larger than the tolerance.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
import torch
from torch import Tensor, nn

PRECISION_DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
DEFAULT_K: dict[torch.dtype, float] = {torch.float64: 8.0, torch.float32: 8.0, torch.bfloat16: 2.0, torch.float16: 2.0}


def native_bf16() -> bool:
    """Whether this CPU runs bf16 natively (AVX512-BF16 or AMX), as `precision="auto"` decides."""
    from perceptsr.inference.fast import native_reduced_precision

    return native_reduced_precision(torch.device("cpu")) == "bf16"


def bf16_runs() -> bool:
    """Whether this CPU runs bf16 convolutions at all (oneDNN needs AVX512 or AVX-NE-CONVERT; AVX2-only CPUs don't):
    tests that force bf16 on a non-native CPU, to reach a code path, need at least this."""
    from perceptsr.inference.fast import bf16_supported

    return bf16_supported(torch.device("cpu"))


needs_bf16 = pytest.mark.skipif(not bf16_runs(), reason="this CPU has no bf16 convolutions (AVX2 only)")


def precisions(*names: str) -> list:
    """pytest params for explicit precisions: bf16 skips, with the reason, on a CPU without native bf16
    (there it is emulated: slow, and not what `auto` would ever pick)."""
    marks = {"bf16": pytest.mark.skipif(not native_bf16(), reason="this CPU has no native bf16 (AVX512-BF16/AMX)")}
    return [pytest.param(name, marks=marks.get(name, ()), id=name) for name in names]


def _as_tensor(value: Tensor | np.ndarray) -> Tensor:
    return value.detach() if isinstance(value, Tensor) else torch.from_numpy(np.asarray(value))


def _dtype(dtype: torch.dtype | str) -> torch.dtype:
    return PRECISION_DTYPES[dtype] if isinstance(dtype, str) else dtype


def network_depth(model: nn.Module) -> int:
    """Products summed into one output along the model, over all layers: the sum of conv/linear fan-ins."""
    depth = 0
    for module in model.modules():
        if isinstance(module, nn.modules.conv._ConvNd):
            depth += module.in_channels // module.groups * math.prod(module.kernel_size)
        elif isinstance(module, nn.Linear):
            depth += module.in_features
    return max(depth, 1)


def rounding_layers(model: nn.Module) -> int:
    """How many layers round their inputs and outputs under autocast: convs and linears."""
    layers = sum(isinstance(m, (nn.modules.conv._ConvNd, nn.Linear)) for m in model.modules())
    return max(layers, 1)


def path_tolerance(expected: Tensor | np.ndarray, *, dtype: torch.dtype | str = torch.float32, depth: int = 1,
                   k: float | None = None, min_scale: float = 1.0) -> float:
    """k * eps(dtype) * sqrt(depth) * max(max|expected|, min_scale): see the module docstring.

    `dtype` is a torch dtype or a precision name ("fp32", "bf16", "fp16"); k defaults by dtype (DEFAULT_K).
    """
    expected, dtype = _as_tensor(expected), _dtype(dtype)
    k = DEFAULT_K[dtype] if k is None else k
    peak = float(expected.double().abs().max()) if expected.numel() else 0.0
    return k * torch.finfo(dtype).eps * math.sqrt(max(depth, 1)) * max(peak, min_scale)


def assert_paths_close(actual: Tensor | np.ndarray, expected: Tensor | np.ndarray, *,
                       dtype: torch.dtype | str = torch.float32, depth: int = 1, k: float | None = None,
                       min_scale: float = 1.0, what: str = "paths") -> float:
    """Assert max |actual - expected| <= path_tolerance(expected, ...); return the tolerance used.

    Both must have the same shape and be finite where `expected` is. The message names the worst element, the
    tolerance and what it was derived from, so a failure on another CPU says by how much it was missed.
    """
    actual, expected = _as_tensor(actual), _as_tensor(expected)
    if tuple(actual.shape) != tuple(expected.shape):
        raise AssertionError(f"{what}: shape {tuple(actual.shape)} != expected {tuple(expected.shape)}")
    tolerance = path_tolerance(expected, dtype=dtype, depth=depth, k=k, min_scale=min_scale)
    if actual.numel() == 0:
        return tolerance
    diff = (actual.double() - expected.double()).abs()
    diff = torch.where(torch.isnan(diff) & ~(torch.isnan(actual.double()) & torch.isnan(expected.double())),
                       torch.full_like(diff, math.inf), diff.nan_to_num(0.0))
    worst = float(diff.max())
    if not worst <= tolerance:
        where = _index(int(diff.argmax()), tuple(diff.shape))
        peak = float(expected.double().abs().max())
        k = DEFAULT_K[_dtype(dtype)] if k is None else k
        raise AssertionError(
            f"{what}: max |diff| {worst:.3g} at {where} (got {float(actual[where]):.9g}, expected "
            f"{float(expected[where]):.9g}) exceeds {tolerance:.3g} = {k:g} * eps({_dtype(dtype)}) * "
            f"sqrt(depth {depth}) * scale {max(peak, min_scale):.3g} ({worst / tolerance:.1f}x the tolerance)"
        )
    return tolerance


def _index(flat: int, shape: Sequence[int]) -> tuple[int, ...]:
    return tuple(int(i) for i in np.unravel_index(flat, tuple(shape))) if shape else ()
