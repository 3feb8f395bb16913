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
