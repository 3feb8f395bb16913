"""The feature maps of a batch (``context``, ``user_features``, ``item_features``), flat.

A map is at most 16 ``key: value`` entries whose values are a string, a number, a boolean
or null. :class:`PackedMaps` holds all the maps of one field for a batch as columns of
entries, in CSR layout (event ``i``'s entries are ``indptr[i]:indptr[i + 1]``, in the order
they were sent), so the feature hasher reads keys and values from compiled code without
walking a dict per event. The decoder's scanner fills it from the message bytes; maps that
went through orjson or pydantic are flattened with :meth:`PackedMaps.from_dicts`, and
:meth:`PackedMaps.to_dicts` gives the dicts back exactly (an integer stays an ``int``).

Example
-------
>>> m = PackedMaps.from_dicts([{"device": "ios", "position": 3}, None, {}])
>>> m.indptr.tolist(), m.kind.tolist(), m.keys.to_list()
([0, 2, 2, 2], [0, 1], ['device', 'position'])
>>> m.take(np.array([2, 0])).to_dicts()
[{}, {'device': 'ios', 'position': 3}]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain
from typing import Any

import numpy as np
import numpy.typing as npt

from service.events.packed import PackedStrings, take_ragged
from service.examples import gather_csr

# Entry kinds. INT and FLOAT are both numbers for the features; the kind keeps what was
# sent so that the dicts can be given back unchanged.
TEXT, INT, FLOAT, BOOL, NULL = 0, 1, 2, 3, 4
_KIND_OF = {str: TEXT, int: INT, float: FLOAT, bool: BOOL, type(None): NULL}


@dataclass(frozen=True, slots=True)
class PackedMaps:
    """One map field of a batch: per event whether a map was sent, and its entries.

    Parameters
    ----------
    present
        ``False`` where the field was absent or ``null`` (``{}`` is present, empty).
    indptr
        Event ``i``'s entries are ``indptr[i]:indptr[i + 1]``.
    keys
        Entry keys.
    kind
        ``int8`` entry kinds: :data:`TEXT`, :data:`INT`, :data:`FLOAT`, :data:`BOOL`,
        :data:`NULL`.
    number
        ``float64`` value of numbers (1.0 or 0.0 for booleans, 0.0 otherwise).
    texts
        The value of text entries (``""`` for the others).
    """

    present: npt.NDArray[np.bool_]
    indptr: npt.NDArray[np.int64]
    keys: PackedStrings
    kind: npt.NDArray[np.int8]
    number: npt.NDArray[np.float64]
    texts: PackedStrings

    def __len__(self) -> int:
        return len(self.present)

    @property
    def n_entries(self) -> int:
        return len(self.kind)

    @classmethod
    def empty(cls, n: int) -> PackedMaps:
        nothing = PackedStrings.from_list([])
        return cls(np.zeros(n, dtype=np.bool_), np.zeros(n + 1, dtype=np.int64), nothing,
                   np.zeros(0, dtype=np.int8), np.zeros(0, dtype=np.float64), nothing)

    @classmethod
    def from_dicts(cls, maps: Sequence[dict[str, Any] | None]) -> PackedMaps:
        """Flatten maps already validated (values: str, int, float, bool or None)."""
        n = len(maps)
        present = np.fromiter((m is not None for m in maps), dtype=np.bool_, count=n)
        lens = np.fromiter((len(m) if m else 0 for m in maps), dtype=np.int64, count=n)
        indptr = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(lens, out=indptr[1:])
        full = [m for m in maps if m]
        # Iterating a dict yields its keys in the order of .values() (insertion order).
        keys = list(chain.from_iterable(full))
        values = list(chain.from_iterable(m.values() for m in full))
        total = len(values)
        kind = np.fromiter(map(_KIND_OF.__getitem__, map(type, values)), dtype=np.int8,
                           count=total)
        number = np.fromiter(
            (float(v) if v.__class__ in (int, float, bool) else 0.0 for v in values),
            dtype=np.float64, count=total)
        texts = [v if v.__class__ is str else "" for v in values]
        return cls(present, indptr, PackedStrings.from_list(keys), kind, number,
                   PackedStrings.from_list(texts))

    def to_dicts(self) -> list[dict[str, Any] | None]:
        """The maps as dicts (``None`` where absent), values of the type sent."""
        keys = self.keys.to_list()
        texts = self.texts.to_list()
        numbers = self.number.tolist()
        values: list[Any] = []
        for k, kind in enumerate(self.kind.tolist()):
            if kind == TEXT:
                values.append(texts[k])
            elif kind == INT:
                values.append(int(numbers[k]))
            elif kind == FLOAT:
                values.append(numbers[k])
            elif kind == BOOL:
                values.append(numbers[k] != 0.0)
            else:
                values.append(None)
        bounds = self.indptr.tolist()
        return [dict(zip(keys[a:b], values[a:b], strict=True)) if here else None
                for a, b, here in zip(bounds[:-1], bounds[1:], self.present.tolist(),
                                      strict=True)]

    def take(self, rows: npt.NDArray[np.int64]) -> PackedMaps:
        """The maps of events ``rows``, in that order."""
        rows = np.ascontiguousarray(rows, dtype=np.int64)
        indptr, at = gather_csr(self.indptr, rows)
        keys_ptr, keys_cp = take_ragged(self.keys.offsets, self.keys.codepoints, at)
        text_ptr, text_cp = take_ragged(self.texts.offsets, self.texts.codepoints, at)
        return PackedMaps(self.present[rows], indptr, PackedStrings(keys_cp, keys_ptr),
                          self.kind[at], self.number[at], PackedStrings(text_cp, text_ptr))

    @classmethod
    def concat(cls, first: PackedMaps, second: PackedMaps) -> PackedMaps:
        """The events of ``first`` then those of ``second``."""
        return cls(
            np.concatenate([first.present, second.present]),
            np.concatenate([first.indptr, second.indptr[1:] + first.indptr[-1]]),
            PackedStrings.concat(first.keys, second.keys),
            np.concatenate([first.kind, second.kind]),
            np.concatenate([first.number, second.number]),
            PackedStrings.concat(first.texts, second.texts),
        )
