"""How CPU memory is allocated: freed feature maps are reused, not faulted in fresh on every forward.

Every op of a forward allocates its output, megabytes each. Memory the kernel hands out fresh costs a page fault
and zero-filling per page, and glibc's defaults give freed blocks back to the kernel (blocks above its adaptive
mmap threshold, and a heap top above its trim threshold): the fast fp32 forward of the paper SRResNet x4
(128x128 in) took ~26,000 page faults with them, 544 with the settings below. Two settings, for processes
that run models forward only: the CLI's inference commands call `configure()` before any tensor exists, and a
script can call it first thing. `train` does not: with them, training steps of `python benchmarks/training.py`
ran 0.80-1.02x as fast (bf16 0.80-0.81x; two runs each).
- glibc: M_MMAP_THRESHOLD 32 MiB (its maximum), M_TRIM_THRESHOLD 1 GiB and M_MMAP_MAX 0, so every block comes
  from the heap and stays there for reuse, the maps over 32 MiB of large tiles (64 channels of 524x524 in bf16
  are 35 MB) too. The process keeps what it freed, up to its peak. Measured with the upsampling tails in bands
  (inference/bands.py), 2-core AMX Xeon, one run each of a `perceptsr bench` section alone: end to end (8
  photos of 1000x1000, srresnet-x4 bf16) 45.0 s against 50.1 s without M_MMAP_MAX 0; the 2000x2000 tiling case
  peaked at 1.54 GB against 1.46.
  PERCEPTSR_KEEP_FREED_MEMORY=0 leaves malloc alone; other C libraries have no such knobs and are left alone.
- PyTorch: huge pages for tensors of 2 MiB and more (THP_MEM_ALLOC_ENABLE=1, unless it is already set), so
  blocks the kernel does hand out fresh (the heap's growth) fault in 2 MiB at a time. PyTorch reads this once, at
  its first CPU allocation: set later, it does nothing. THP_MEM_ALLOC_ENABLE=0 turns it off.
Huge pages alone make every block of 2 MiB and more a fresh mapping (PyTorch asks glibc for 2 MiB alignment,
which glibc serves with mmap), so the two go together. `python benchmarks/allocation.py` measures each.
"""

from __future__ import annotations

import ctypes
import logging
import os
import sys

log = logging.getLogger(__name__)

KEEP_FREED_ENV = "PERCEPTSR_KEEP_FREED_MEMORY"
HUGE_PAGES_ENV = "THP_MEM_ALLOC_ENABLE"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4  # mallopt parameter numbers (glibc malloc.h)
MMAP_THRESHOLD = 32 << 20
TRIM_THRESHOLD = 1 << 30


def keep_freed_memory() -> bool:
    """Tell glibc malloc to keep freed blocks for reuse (the module docstring). True if it took effect."""
    if os.environ.get(KEEP_FREED_ENV, "1") == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return all(mallopt(param, value) == 1 for param, value in
               ((_M_MMAP_THRESHOLD, MMAP_THRESHOLD), (_M_TRIM_THRESHOLD, TRIM_THRESHOLD), (_M_MMAP_MAX, 0)))


def configure() -> None:
    """Both settings of the module docstring; call before the process makes its first tensor."""
    os.environ.setdefault(HUGE_PAGES_ENV, "1")
    log.debug("malloc keeps freed memory: %s", keep_freed_memory())
