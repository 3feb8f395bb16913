"""A tiny counter-based random generator usable inside numba kernels.

Negative sampling (BPR) needs random draws inside compiled loops, and the draws must be
reproducible from the learner's state alone (a checkpoint restored mid-stream continues
with the same negatives). SplitMix64 keeps its whole state in one ``uint64`` that lives in
a one-element array among the learner's arrays, so it is saved and restored like any
parameter.

References
----------
Steele, Lea and Flood (2014). Fast splittable pseudorandom number generators. OOPSLA.

Example
-------
>>> import numpy as np
>>> state = new_state(7)
>>> a = [int(uniform_int(state, 0, 10)) for _ in range(5)]
>>> state = new_state(7)
>>> a == [int(uniform_int(state, 0, 10)) for _ in range(5)]
True
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
from numba import njit

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


def new_state(seed: int) -> npt.NDArray[np.uint64]:
    """A fresh generator state for ``seed`` (a one-element ``uint64`` array)."""
    return np.array([np.uint64(seed & 0xFFFFFFFFFFFFFFFF)], dtype=np.uint64)


@njit(cache=True, inline="always")
def next_u64(state: npt.NDArray[np.uint64]) -> np.uint64:
    """Advance ``state`` and return 64 random bits."""
    state[0] += _GOLDEN
    z = state[0]
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, inline="always")
def uniform_int(state: npt.NDArray[np.uint64], low: int, high: int) -> int:
    """An integer in ``[low, high)``; the modulo bias is below 2**-40 for any table size."""
    span = np.uint64(high - low)
    return low + int(next_u64(state) % span)


# -- counter-based initialisation ------------------------------------------------------------
#
# Factor tables are initialised row by row from ``(seed, stream, row, column)`` alone, so any
# range of rows can be produced without generating the rows before it: a restored learner
# regenerates only the rows its state did not carry, and they are bitwise equal to a fresh
# learner's. The values are integer arithmetic plus one float64 multiply (no libm call), so
# they are the same on every platform and numpy version.

STREAM_USERS = 1
STREAM_ITEMS = 2
STREAM_FEATURES = 3

_U64_MASK = 0xFFFFFFFFFFFFFFFF
# Irwin-Hall: the sum of four uniform 16-bit integers, centred and scaled to unit variance.
_IH_MEAN = 2 * 65535
_IH_STD = math.sqrt((65536.0**2 - 1.0) / 3.0)


def _mix64(z: int) -> int:
    """SplitMix64's finaliser on a Python int (for keys, outside the kernels)."""
    z &= _U64_MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _U64_MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _U64_MASK
    return z ^ (z >> 31)


def stream_key(seed: int, stream: int) -> int:
    """The 64-bit key of one initialisation stream of one seed."""
    return _mix64(_mix64(seed) + stream * 0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def _initial_value(key: np.uint64, row: int, k: int, f: int, scale: float) -> np.float32:
    """Coordinate ``f`` of row ``row``: a splitmix64 hash of its position, as an
    Irwin-Hall sum of its four 16-bit quarters (one definition for every fill)."""
    z = key + (np.uint64(row) * np.uint64(k) + np.uint64(f)) * _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _M1
    z = (z ^ (z >> np.uint64(27))) * _M2
    z = z ^ (z >> np.uint64(31))
    s = (int(z & np.uint64(0xFFFF)) + int((z >> np.uint64(16)) & np.uint64(0xFFFF))
         + int((z >> np.uint64(32)) & np.uint64(0xFFFF)) + int(z >> np.uint64(48)))
    return np.float32((s - _IH_MEAN) * scale)


@njit(cache=True, nogil=True)  # runs on background threads (gate, restore)
def _fill_init(out: npt.NDArray[np.float32], key: np.uint64, first_row: int,
               scale: float) -> None:
    rows, k = out.shape
    for r in range(rows):
        for f in range(k):
            out[r, f] = _initial_value(key, first_row + r, k, f, scale)


def fill_init(out: npt.NDArray[np.float32], seed: int, stream: int, first_row: int,
              std: float) -> None:
    """Fill ``out`` (rows x k, C-contiguous float32) with the initial values of rows
    ``first_row, first_row + 1, ...`` of stream ``stream``: mean 0, standard deviation
    ``std``, bounded by ``3.46 std`` (an Irwin-Hall sum of four uniforms, close to a
    normal and cheaper).

    >>> import numpy as np
    >>> whole = np.empty((6, 3), np.float32); fill_init(whole, 7, STREAM_USERS, 0, 0.1)
    >>> tail = np.empty((2, 3), np.float32); fill_init(tail, 7, STREAM_USERS, 4, 0.1)
    >>> bool((tail == whole[4:]).all())   # any range of rows, independently
    True
    """
    if out.ndim != 2 or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError("fill_init needs a C-contiguous 2-d float32 array")
    if first_row < 0:
        raise ValueError(f"first_row must be >= 0, got {first_row}")
    if out.size:
        _fill_init(out, np.uint64(stream_key(seed, stream)), int(first_row),
                   float(std) / _IH_STD)


@njit(cache=True, nogil=True)
def _init_rows(out: npt.NDArray[np.float32], key: np.uint64, rows: npt.NDArray[np.int64],
               scale: float) -> None:
    k = out.shape[1]
    for j in range(len(rows)):  # the values _fill_init gives those rows
        for f in range(k):
            out[j, f] = _initial_value(key, rows[j], k, f, scale)


def init_rows(seed: int, stream: int, rows: npt.NDArray[np.int64], k: int,
              std: float) -> npt.NDArray[np.float32]:
    """The initial values of ``rows`` (any order, repeats allowed) of stream ``stream``:
    row ``rows[j]`` of what :func:`fill_init` writes, as a ``(len(rows), k)`` array.

    A recycled row is reset with this: a new owner starts from exactly what a fresh
    learner holds in that row, whatever else is reset with it and whenever, so resets
    do not depend on how rows are grouped into calls (a generator drawn once per call
    would make them follow the batches).

    >>> import numpy as np
    >>> whole = np.empty((6, 3), np.float32); fill_init(whole, 7, STREAM_USERS, 0, 0.1)
    >>> some = init_rows(7, STREAM_USERS, np.array([4, 1, 4]), 3, 0.1)
    >>> bool((some == whole[[4, 1, 4]]).all())
    True
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    if len(rows) and rows.min() < 0:
        raise ValueError("init_rows needs rows >= 0")
    out = np.empty((len(rows), k), dtype=np.float32)
    if out.size:
        _init_rows(out, np.uint64(stream_key(seed, stream)), rows, float(std) / _IH_STD)
    return out
