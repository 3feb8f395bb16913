"""The allocator tuning: applied on glibc, skipped when the operator set MALLOC_*."""

from __future__ import annotations

import subprocess
import sys

from service.runtime.allocator import tune_allocator

_CHILD = """
import ctypes, sys
from service.runtime.allocator import tune_allocator
applied = tune_allocator()
# After M_MMAP_THRESHOLD is fixed at 256 KiB, a 1 MiB block is mapped on its own: freeing
# it returns the memory at once (with glibc's dynamic threshold it may stay in the heap).
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
        "fordblks", "keepcost")]
libc.mallinfo2.restype = MallInfo2
before = libc.mallinfo2().hblks
# Raise glibc's dynamic threshold first (free a 16 MB mapped block), then allocate 1 MiB.
libc.free(libc.malloc(16 << 20))
block = libc.malloc(1 << 20)
mapped = libc.mallinfo2().hblks - before
libc.free(block)
print(applied, mapped)
"""


def _child(env: dict[str, str]) -> tuple[str, str]:
    out = subprocess.run([sys.executable, "-c", _CHILD], env=env, capture_output=True,
                         text=True, check=True, cwd=".").stdout.split()
    return out[0], out[1]


def test_glibc_maps_mid_sized_blocks_once_tuned() -> None:
    import os

    base = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    assert _child(base) == ("True", "1")
    # With MALLOC_* set the operator's choice stands: the 16 MB free raised glibc's
    # dynamic threshold, so the 1 MiB block comes from the heap.
    assert _child({**base, "MALLOC_ARENA_MAX": "4"}) == ("False", "0")


def test_skipped_when_malloc_variables_are_set() -> None:
    assert tune_allocator({"MALLOC_ARENA_MAX": "2"}) is False
