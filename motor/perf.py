"""Process-level performance settings for CPU training.

glibc's malloc returns every large block (above a dynamic threshold) to the OS with ``munmap`` and maps fresh,
zero-filled pages on the next allocation. A training step allocates and frees the same few-MB tensors hundreds
of times, so the page faults can cost more than the arithmetic.
:func:`keep_freed_memory` raises the thresholds so freed blocks are reused, which is what PyTorch's CPU
performance guide gets by preloading jemalloc/tcmalloc. The cost is that freed memory stays with the process.
:func:`numba_kernels_apply` says when the numba CPU kernels of :mod:`motor.kernels` can replace a torch expression.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os

import torch

_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3
_done = False


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Keep freed blocks below ``limit_bytes`` in the heap (glibc only; a no-op elsewhere or when the environment
    sets ``MOTOR_DEFAULT_MALLOC=1``). Returns whether the settings were applied. Safe to call more than once."""
    global _done
    if _done:
        return True
    if os.environ.get("MOTOR_DEFAULT_MALLOC") == "1" or os.name != "posix":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = all(libc.mallopt(opt, val) == 1 for opt, val in
                 ((_M_MMAP_THRESHOLD, min(limit_bytes, 1 << 30)), (_M_TRIM_THRESHOLD, limit_bytes),
                  (_M_TOP_PAD, 64 << 20)))
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to tune
        return False
    _done = ok
    return ok


def numba_kernels_apply(*tensors) -> bool:
    """Whether the numba kernels of :mod:`motor.kernels` can take these tensors: contiguous float32 CPU tensors
    (callers keep the torch expression for every other case: CUDA, float64)."""
    return all(t.device.type == "cpu" and t.dtype == torch.float32 and t.is_contiguous() for t in tensors)
