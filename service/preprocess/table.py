"""An open-addressing hash map of 64-bit keys to 64-bit values, for compiled kernels.

The dedup window, the vocabularies and the pending impressions all need "is this 64-bit
key present, and where" for millions of keys at a few nanoseconds per lookup and bounded
memory. Linear probing over one flat ``(slots, 2)`` array does that from inside numba
kernels: key and value share a cache line, so a lookup in a table far larger than the CPU
cache costs one memory access, not two. Deletion uses backward shifting (no tombstones),
so the table never degrades however many keys come and go.

Key 0 marks an empty slot: callers map a key that hashes to 0 to 1 with :func:`nonzero`.

Tables start small and double (:func:`reserve`) as keys arrive, so memory follows the keys
actually held, up to the structure's configured bound; a rehash costs O(keys) and happens
O(log keys) times, so it is amortised to a few nanoseconds per insertion.

References
----------
Knuth. The Art of Computer Programming, vol. 3, §6.4, Algorithm R (deletion with linear
probing).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

Table = npt.NDArray[np.uint64]


def table_size(capacity: int) -> int:
    """Slots for ``capacity`` keys at a load factor of at most one half (a power of two)."""
    return 1 << max(4, int(2 * max(capacity, 1) - 1).bit_length())


def new_table(capacity: int) -> Table:
    """An empty table for ``capacity`` keys: column 0 holds keys, column 1 values.

    ``np.zeros``: the OS hands out zeroed pages as they are first touched, so a large table
    costs memory only where keys land (and each page fault is paid once).
    """
    return np.zeros((table_size(capacity), 2), dtype=np.uint64)


@njit(cache=True)
def _rehash(old: Table, new: Table) -> None:
    for i in range(len(old)):
        if old[i, 0] != np.uint64(0):
            insert(new, old[i, 0], old[i, 1])


def reserve(table: Table, keys: int) -> Table:
    """``table`` if it can hold ``keys`` keys, else a copy at least twice as large.

    Example
    -------
    >>> t = new_table(4)
    >>> insert(t, np.uint64(7), 3)
    >>> bigger = reserve(t, 100)
    >>> len(bigger) >= table_size(100), value_at(bigger, find(bigger, np.uint64(7)))
    (True, 3)
    """
    size = table_size(keys)
    if len(table) >= size:
        return table
    new = np.zeros((max(size, 2 * len(table)), 2), dtype=np.uint64)
    _rehash(table, new)
    return new


@njit(cache=True, inline="always")
def nonzero(key: np.uint64) -> np.uint64:
    return key if key != np.uint64(0) else np.uint64(1)


@njit(cache=True, inline="always")
def find(table: Table, key: np.uint64) -> Any:
    """Slot of ``key``, or ``-1``."""
    mask = len(table) - 1
    i = np.int64(key & np.uint64(mask))
    while True:
        k = table[i, 0]
        if k == key:
            return i
        if k == np.uint64(0):
            return -1
        i = (i + 1) & mask


@njit(cache=True, inline="always")
def value_at(table: Table, slot: int) -> Any:
    return np.int64(table[slot, 1])


@njit(cache=True, inline="always")
def insert(table: Table, key: np.uint64, value: int) -> None:
    """Set ``key`` to ``value`` (the table must not be full)."""
    mask = len(table) - 1
    i = np.int64(key & np.uint64(mask))
    while table[i, 0] != np.uint64(0) and table[i, 0] != key:
        i = (i + 1) & mask
    table[i, 0] = key
    table[i, 1] = np.uint64(value)


@njit(cache=True, inline="always")
def remove(table: Table, key: np.uint64) -> bool:
    """Delete ``key``; returns whether it was present."""
    i = find(table, key)
    if i < 0:
        return False
    mask = len(table) - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = table[j, 0]
        if k == np.uint64(0):
            break
        home = np.int64(k & np.uint64(mask))
        # Leave k where it is if its home slot lies cyclically in (i, j].
        if (i <= j and i < home <= j) or (i > j and (home > i or home <= j)):
            continue
        table[i, 0] = k
        table[i, 1] = table[j, 1]
        i = j
    table[i, 0] = np.uint64(0)
    table[i, 1] = np.uint64(0)
    return True
