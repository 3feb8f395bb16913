"""Deterministic 64-bit hashing of strings and hash combination, compiled.

Python's ``hash()`` is salted per process, so it cannot name a model row or a feature slot
that must mean the same thing after a restart. These hashes depend only on the text and a
seed: FNV-1a over the Unicode code points, then MurmurHash3's 64-bit finaliser so that
every output bit depends on every input bit (FNV alone mixes its low bits poorly, and the
hashing trick and the open-addressing tables below take the low bits).

Example
-------
>>> h = hash_strings(["u1", "u2", "u1"], seed=7)
>>> bool(h[0] == h[2]), bool(h[0] != h[1]), h.dtype.name
(True, True, 'uint64')
>>> bool(hash_strings(["u1"], seed=8)[0] != h[0])
True

References
----------
Fowler, Noll, Vo. The FNV non-cryptographic hash algorithm (IETF draft, 2019).
Appleby. MurmurHash3 (2011), ``fmix64``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from numba import njit

from service.events.packed import PackedStrings

U64 = npt.NDArray[np.uint64]

_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)


@njit(cache=True, inline="always")
def fmix64(k: np.uint64) -> np.uint64:
    """MurmurHash3's finaliser: a bijection on 64 bits with full avalanche."""
    k ^= k >> np.uint64(33)
    k *= np.uint64(0xFF51AFD7ED558CCD)
    k ^= k >> np.uint64(33)
    k *= np.uint64(0xC4CEB9FE1A85EC53)
    k ^= k >> np.uint64(33)
    return k


@njit(cache=True, inline="always")
def combine(a: np.uint64, b: np.uint64) -> np.uint64:
    """Hash of the ordered pair ``(a, b)`` (``combine(a, b) != combine(b, a)``)."""
    return fmix64(a ^ (b * np.uint64(0x9E3779B97F4A7C15) + np.uint64(0x632BE59BD9B4E019)))


@njit(cache=True)
def _hash_kernel(
    codepoints: npt.NDArray[np.uint32], offsets: npt.NDArray[np.int64], seed: np.uint64
) -> U64:
    n = len(offsets) - 1
    out = np.empty(n, dtype=np.uint64)
    start = fmix64(seed ^ _FNV_OFFSET)
    for i in range(n):
        h = start
        for k in range(offsets[i], offsets[i + 1]):
            h = (h ^ np.uint64(codepoints[k])) * _FNV_PRIME
        out[i] = fmix64(h ^ (np.uint64(offsets[i + 1] - offsets[i]) * _GOLDEN))
    return out


@njit(cache=True)
def combine_arrays(a: U64, b: U64) -> U64:
    """Element-wise :func:`combine`."""
    out = np.empty(len(a), dtype=np.uint64)
    for i in range(len(a)):
        out[i] = combine(a[i], b[i])
    return out


def hash_strings(strings: Sequence[str], seed: int) -> U64:
    """A 64-bit hash of each string under ``seed`` (any int; reduced modulo 2**64)."""
    packed = PackedStrings.from_list(strings)
    return _hash_kernel(  # type: ignore[no-any-return]
        packed.codepoints, packed.offsets, np.uint64(seed % (1 << 64))
    )


def hash_packed(packed: PackedStrings, seed: int) -> U64:
    """Like :func:`hash_strings` for strings already packed."""
    return _hash_kernel(  # type: ignore[no-any-return]
        packed.codepoints, packed.offsets, np.uint64(seed % (1 << 64))
    )


def seed_for(name: str, base_seed: int) -> int:
    """A seed per use (``"user"``, ``"context"``…) so equal strings in different roles differ."""
    return int(hash_strings([name], base_seed)[0])
