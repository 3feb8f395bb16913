"""Feature hashing of (field, value) pairs into ``[0, 2**bits)``.

Linear models over hashed features (FTRL, the scikit-learn baseline) put the user id, the
item id and every side feature in one weight vector. Hashing each id together with its
field keeps user 7 and item 7 on different weights, and a 64-bit finaliser (MurmurHash3's
``fmix64``) spreads consecutive ids uniformly so collisions stay at the ``n / 2**bits``
rate of a random function.

References
----------
Weinberger et al. (2009). Feature hashing for large scale multitask learning. ICML.

Example
-------
>>> import numpy as np
>>> idx = hash_array(USER_FIELD, np.arange(5), bits=10)
>>> bool(((idx >= 0) & (idx < 1024)).all())
True
>>> bool((hash_array(ITEM_FIELD, np.arange(5), bits=10) != idx).any())
True
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from numba import njit

BIAS_FIELD = 0
USER_FIELD = 1
ITEM_FIELD = 2

_C1 = np.uint64(0x9E3779B97F4A7C15)
_C2 = np.uint64(0xC2B2AE3D27D4EB4F)
_F1 = np.uint64(0xFF51AFD7ED558CCD)
_F2 = np.uint64(0xC4CEB9FE1A85EC53)


@njit(cache=True, inline="always")
def hash_index(field: int, value: int, mask: int) -> int:
    """Index of ``value`` of ``field`` in a table of ``mask + 1`` (a power of two) rows."""
    x = (np.uint64(value) * _C1) ^ (np.uint64(field + 1) * _C2)
    x ^= x >> np.uint64(33)
    x *= _F1
    x ^= x >> np.uint64(33)
    x *= _F2
    x ^= x >> np.uint64(33)
    return int(x & np.uint64(mask))


@njit(cache=True)
def _hash_many(field: int, values: npt.NDArray[np.int64], mask: int) -> npt.NDArray[np.int64]:
    out = np.empty(len(values), dtype=np.int64)
    for n in range(len(values)):
        out[n] = hash_index(field, values[n], mask)
    return out


def hash_array(field: int, values: npt.ArrayLike, bits: int) -> npt.NDArray[np.int64]:
    """Hash every value of one field (vectorised; a compiled loop)."""
    if not 1 <= bits <= 40:
        raise ValueError(f"bits must be in [1, 40], got {bits}")
    arr = np.ascontiguousarray(values, dtype=np.int64)
    return _hash_many(field, arr, (1 << bits) - 1)
