"""Many Python strings as one code-point buffer, so compiled kernels can read them.

Numba cannot iterate a Python ``list[str]`` quickly, and converting strings one by one
(``s.encode()`` per event) is a Python call per event. Joining them first costs a few
nanoseconds per string: ``"".join(strs).encode("utf-32-le")`` gives every character as one
``uint32``, so the character lengths alone locate each string in the buffer. The decoder's
compiled scanner builds them straight from the message bytes (:meth:`PackedStrings.
from_spans`), without a Python string at all; :meth:`to_list` makes the strings when
somebody asks for them.

Example
-------
>>> p = PackedStrings.from_list(["ab", "", "é"])
>>> p.offsets.tolist(), p.codepoints.tolist()
([0, 2, 2, 3], [97, 98, 233])
>>> p.lengths.tolist(), p[2], p.take(np.array([2, 0])).to_list()
([2, 0, 1], 'é', ['é', 'ab'])
>>> PackedStrings.from_list(["a\\0b", "c"]).offsets.tolist()  # a NUL inside a string
[0, 3, 4]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit


@njit(cache=True)
def take_ragged(
    indptr: npt.NDArray[np.int64], values: npt.NDArray[Any], rows: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[Any]]:
    """Rows ``rows`` of the ragged array ``values[indptr[i]:indptr[i + 1]]``, in order."""
    out_ptr = np.zeros(len(rows) + 1, dtype=np.int64)
    for k in range(len(rows)):
        r = rows[k]
        out_ptr[k + 1] = out_ptr[k] + indptr[r + 1] - indptr[r]
    out = np.empty(out_ptr[-1], dtype=values.dtype)
    for k in range(len(rows)):
        at = out_ptr[k]
        for j in range(indptr[rows[k]], indptr[rows[k] + 1]):
            out[at] = values[j]
            at += 1
    return out_ptr, out


@njit(cache=True)
def _from_spans(
    buf: npt.NDArray[np.uint8], start: npt.NDArray[np.int64], length: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.int64]]:
    offsets = np.zeros(len(start) + 1, dtype=np.int64)
    for k in range(len(start)):
        offsets[k + 1] = offsets[k] + length[k]
    cp = np.empty(offsets[-1], dtype=np.uint32)
    for k in range(len(start)):
        at = offsets[k]
        s = start[k]
        for j in range(length[k]):
            cp[at + j] = buf[s + j]
    return cp, offsets


@dataclass(frozen=True, slots=True)
class PackedStrings:
    """Strings ``i`` is ``codepoints[offsets[i]:offsets[i+1]]``."""

    codepoints: npt.NDArray[np.uint32]
    offsets: npt.NDArray[np.int64]

    @classmethod
    def from_list(cls, strings: Sequence[str]) -> PackedStrings:
        n = len(strings)
        offsets = np.zeros(n + 1, dtype=np.int64)
        if n == 0:
            return cls(np.zeros(0, dtype=np.uint32), offsets)
        # Join with NUL separators and find them again in the buffer: a C-level join plus
        # two vectorised passes is about twice as fast as len() per string. A string that
        # itself holds a NUL would shift the separators, so then lengths are taken one by
        # one instead.
        joined = "\0".join(strings)
        # surrogatepass: a lone surrogate (legal in a Python str) must not raise here.
        cp = np.frombuffer(joined.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
        if joined.count("\0") == n - 1:
            is_sep = cp == 0
            offsets[1:n] = np.flatnonzero(is_sep) - np.arange(n - 1)
            offsets[n] = len(cp) - (n - 1)
            return cls(cp[~is_sep] if n > 1 else cp, offsets)
        np.cumsum(np.fromiter(map(len, strings), dtype=np.int64, count=n), out=offsets[1:])
        raw = "".join(strings).encode("utf-32-le", "surrogatepass")
        return cls(np.frombuffer(raw, dtype=np.uint32), offsets)

    @classmethod
    def from_spans(cls, buf: npt.NDArray[np.uint8], start: npt.NDArray[np.int64],
                   length: npt.NDArray[np.int64]) -> PackedStrings:
        """The ASCII strings ``buf[start[i]:start[i] + length[i]]`` (one byte, one code
        point: the caller vouches that every byte is below 128)."""
        cp, offsets = _from_spans(buf, start, length)
        return cls(cp, offsets)

    @classmethod
    def concat(cls, first: PackedStrings, second: PackedStrings) -> PackedStrings:
        """The strings of ``first`` then those of ``second``."""
        return cls(np.concatenate([first.codepoints, second.codepoints]),
                   np.concatenate([first.offsets, second.offsets[1:] + first.offsets[-1]]))

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        """Characters per string."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1

    def __getitem__(self, i: int) -> str:
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        return self.codepoints[a:b].tobytes().decode("utf-32-le", "surrogatepass")

    def take(self, rows: npt.NDArray[np.int64]) -> PackedStrings:
        """The strings at ``rows``, in that order."""
        offsets, cp = take_ragged(self.offsets, self.codepoints,
                                  np.ascontiguousarray(rows, dtype=np.int64))
        return PackedStrings(cp, offsets)

    def to_list(self) -> list[str]:
        """The strings as Python ``str`` (one decode for the whole buffer)."""
        text = self.codepoints.tobytes().decode("utf-32-le", "surrogatepass")
        bounds = self.offsets.tolist()
        return [text[a:b] for a, b in pairwise(bounds)]

    def is_ascii(self) -> bool:
        return bool(len(self.codepoints) == 0 or int(self.codepoints.max()) < 128)
