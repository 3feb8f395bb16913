"""Which rows of a learner's arrays belong to user and item ids, and how state keeps only
the rows in use.

Learners are allocated at full vocabulary capacity (a million user rows is the default),
but a model that has seen 20k users has touched 20k of them. Every learner tracks two
high-water marks, ``used_users`` and ``used_items``: rows at or beyond them have not been
learned from or reset since construction, so they hold exactly the deterministic
initialisation of the learner's seed and need not be saved. Each model declares, per
array, which spans of the first axis are user rows and item rows (:class:`RowSpan`) —
explicitly, never inferred from shapes, since ``n_users`` may equal ``n_items`` and a joint
table (the factorisation machine's) holds both. Rows outside every span (hashed features,
scalars) are kept whole.

:func:`kept_ranges` turns a declaration and the marks into the row ranges a state keeps;
:func:`compact` copies them out as one contiguous array and :func:`expand_into` writes them
back into a full-capacity array.

Example
-------
A joint table of 5 user rows, 4 item rows and 3 feature rows, with 2 users and 3 items in
use, keeps rows 0-1, 5-7 and the 3 feature rows:

>>> import numpy as np
>>> spans = (RowSpan("users", 0), RowSpan("items", 5))
>>> ranges = kept_ranges(12, spans, sizes=(5, 4), marks=(2, 3))
>>> ranges
[(0, 2), (5, 8), (9, 12)]
>>> table = np.arange(12.0)
>>> part = compact(table, ranges)
>>> part.tolist()
[0.0, 1.0, 5.0, 6.0, 7.0, 9.0, 10.0, 11.0]
>>> restored = np.full(12, -1.0)
>>> expand_into(restored, part, ranges, "table")
>>> restored.tolist()
[0.0, 1.0, -1.0, -1.0, -1.0, 5.0, 6.0, 7.0, -1.0, 9.0, 10.0, 11.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Axis = Literal["users", "items"]
Ranges = list[tuple[int, int]]


@dataclass(frozen=True, slots=True)
class RowSpan:
    """Rows ``[offset, offset + n_<axis>)`` of an array's first axis are that id table's rows.

    Parameters
    ----------
    axis
        ``"users"`` or ``"items"``: which high-water mark bounds the rows in use.
    offset
        First row of the span (non-zero in joint tables).
    """

    axis: Axis
    offset: int = 0


def kept_ranges(
    length: int,
    spans: Sequence[RowSpan],
    sizes: tuple[int, int],
    marks: tuple[int, int],
) -> Ranges:
    """The ``[start, stop)`` row ranges a compact state keeps, in order.

    Parameters
    ----------
    length
        Rows of the full array.
    spans
        Its user and item spans (empty: the array is kept whole).
    sizes, marks
        ``(n_users, n_items)`` and ``(used_users, used_items)``.
    """
    covered: list[tuple[int, int, int]] = []
    for span in spans:
        size, mark = (sizes[0], marks[0]) if span.axis == "users" else (sizes[1], marks[1])
        covered.append((span.offset, span.offset + size, span.offset + mark))
    covered.sort()
    out: Ranges = []
    pos = 0

    def keep(start: int, stop: int) -> None:
        if stop <= start:
            return
        if out and out[-1][1] == start:
            out[-1] = (out[-1][0], stop)
        else:
            out.append((start, stop))

    for start, end, mark in covered:
        if start < pos or end > length:
            raise ValueError(
                f"row spans {list(spans)} overlap or exceed the array's {length} rows; "
                "fix the model's row_spans() declaration"
            )
        keep(pos, start)  # rows between spans belong to no id table: kept whole
        keep(start, mark)
        pos = end
    keep(pos, length)
    return out


def n_kept(ranges: Ranges) -> int:
    """Rows a compact array made from ``ranges`` has."""
    return sum(stop - start for start, stop in ranges)


def compact(array: npt.NDArray[Any], ranges: Ranges) -> npt.NDArray[Any]:
    """A contiguous copy of the rows in ``ranges`` (never a view of ``array``)."""
    if len(ranges) == 1:
        start, stop = ranges[0]
        return np.array(array[start:stop], order="C", copy=True)
    if not ranges:
        return np.empty((0, *array.shape[1:]), dtype=array.dtype)
    return np.concatenate([array[start:stop] for start, stop in ranges])


def expand_into(full: npt.NDArray[Any], part: npt.NDArray[Any], ranges: Ranges,
                name: str) -> None:
    """Write a :func:`compact` copy back into the rows ``ranges`` of ``full``."""
    expected = (n_kept(ranges), *full.shape[1:])
    if part.shape != expected:
        raise ValueError(
            f"array {name!r} has shape {part.shape}, but the config and the state's "
            f"high-water marks imply {expected}; the state was saved by a learner with "
            "other table sizes, or it is corrupt"
        )
    at = 0
    for start, stop in ranges:
        full[start:stop] = part[at : at + stop - start]
        at += stop - start
