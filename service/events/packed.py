"""Many Python strings as one code-point buffer, so compiled kernels can read them.

Numba cannot iterate a Python ``list[str]`` quickly, and converting strings one by one
(``s.encode()`` per event) is a Python call per event. Joining them first costs a few
nanoseconds per string: ``"".join(strs).encode("utf-32-le")`` gives every character as one
``uint32``, so the character lengths alone locate each string in the buffer.

Example
-------
>>> p = PackedStrings.from_list(["ab", "", "é"])
>>> p.offsets.tolist(), p.codepoints.tolist()
([0, 2, 2, 3], [97, 98, 233])
>>> p.lengths.tolist()
[2, 0, 1]
>>> PackedStrings.from_list(["a\\0b", "c"]).offsets.tolist()  # a NUL inside a string
[0, 3, 4]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt


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

    @property
    def lengths(self) -> npt.NDArray[np.int64]:
        """Characters per string."""
        return np.diff(self.offsets)

    def __len__(self) -> int:
        return len(self.offsets) - 1
