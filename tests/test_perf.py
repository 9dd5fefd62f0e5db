"""motor.perf.keep_freed_memory: freed blocks stay in the heap instead of being unmapped and re-faulted.

The setting is process-wide and cannot be undone, so each case runs in a fresh interpreter. glibc's ``mallinfo2``
shows where a 64 MB block comes from: an mmap of its own (the default: larger than glibc's highest dynamic mmap
threshold, 32 MB) or the heap, and whether the heap keeps it after ``free``.
"""
import ctypes
import ctypes.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

PROBE = """
import ctypes, ctypes.util, json, sys
sys.path.insert(0, sys.argv[1])
from motor.perf import keep_freed_memory

class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in
                "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]

libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
applied = [keep_freed_memory(), keep_freed_memory()]
before = libc.mallinfo2()
block = libc.malloc(64 << 20)
during = libc.mallinfo2()
libc.free(block)
after = libc.mallinfo2()
print(json.dumps({"applied": applied, "mmapped": during.hblkhd - before.hblkhd,
                  "heap_kept_after_free": after.arena - before.arena}))
"""


def _has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallinfo2")
    except OSError:
        return False


def _probe(**env) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(ROOT)], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux") or not _has_mallinfo2(), reason="needs glibc >= 2.33")
def test_keep_freed_memory_keeps_large_blocks_in_the_heap():
    kept = _probe(MOTOR_DEFAULT_MALLOC="0")
    assert kept["applied"] == [True, True]  # applied once, and a second call says so without redoing it
    assert kept["mmapped"] == 0  # served from the heap ...
    assert kept["heap_kept_after_free"] >= 64 << 20  # ... which keeps it for the next step

    default = _probe(MOTOR_DEFAULT_MALLOC="1")  # the opt-out leaves glibc's behaviour
    assert default["applied"] == [False, False]
    assert default["mmapped"] >= 64 << 20 and default["heap_kept_after_free"] < 64 << 20
