"""Whether the network is being recorded into a graph (ONNX export, torch.jit.trace, torch.compile/export).

A recorded graph keeps only the branch taken on the example input, so shortcuts that look at the data or at a
size (FxSR's uniform-t shortcut, RRDBNet's pad-only-when-needed) must take their general branch then: the general
branch computes the same numbers for every input, the shortcut is only faster.
"""

from __future__ import annotations

import torch


def recording() -> bool:
    """True while torch.onnx.export, torch.jit.trace, torch.compile or torch.export records the forward."""
    return bool(torch.onnx.is_in_onnx_export() or torch.jit.is_tracing() or torch.compiler.is_compiling()
                or torch.compiler.is_exporting())
