"""The merge arithmetic: a shard's own learning as a block of deltas, and folding it in.

Each shard keeps a *baseline* of its shared rows. Its own learning since the last
exchange is ``current - baseline``; at an exchange it cuts that delta into a
:class:`Block` and moves the baseline up to the current values. Folding another shard's
block adds the delta to the current values **and** to the baseline, so what a shard folds
in is never sent back out as its own (no echo), and what it learns is sent exactly once.

Item rows travel with their item *key* (the 64-bit id hash the vocabularies use, or the
row itself when items are hashed); the receiver maps keys to its own rows
(:func:`map_keys`). Rows outside every span (hashed features, global scalars) travel by
row index. Only rows that changed are sent.

Example
-------
Two shards start from the same item row; each learns, exchanges, and ends with the sum of
both shards' learning:

>>> import numpy as np
>>> a_cur, a_base = np.array([[1.5]]), np.array([[1.0]])   # shard A learned +0.5
>>> b_cur, b_base = np.array([[0.75]]), np.array([[1.0]])  # shard B learned -0.25
>>> rows_a, delta_a = changed_rows(a_cur, a_base)
>>> rows_b, delta_b = changed_rows(b_cur, b_base)
>>> add_rows(a_cur, a_base, rows_b, delta_b); add_rows(b_cur, b_base, rows_a, delta_a)
>>> a_cur.ravel().tolist(), b_cur.ravel().tolist()
([1.25], [1.25])
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Keyed = Literal["id", "row"]
U64 = npt.NDArray[np.uint64]
I64 = npt.NDArray[np.int64]


@dataclass(slots=True)
class BlockPart:
    """The delta of one shared array.

    ``keys``/``item_delta``: item rows, by item key. ``rows``/``fixed_delta``: rows outside
    every span, by row index. ``value_range``: for the target statistics, the writer's
    ``[min, max]`` of the target (ranges widen, they do not add).
    """

    keys: U64
    item_delta: npt.NDArray[Any]
    rows: I64
    fixed_delta: npt.NDArray[Any]
    value_range: npt.NDArray[np.float64] | None = None

    def __len__(self) -> int:
        return len(self.keys) + len(self.rows)


@dataclass(slots=True)
class Block:
    """One exchange of one shard: its own learning on shared rows since the previous one."""

    shard: int
    seq: int
    created_at: float
    keyed: Keyed
    fingerprint: dict[str, Any]
    parts: dict[str, BlockPart] = field(default_factory=dict)

    def __len__(self) -> int:
        return sum(len(p) for p in self.parts.values())

    # -- as bundle arrays + JSON meta (no pickle) ---------------------------------------

    def to_arrays(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        arrays: dict[str, npt.NDArray[Any]] = {}
        for name, part in self.parts.items():
            arrays[f"{name}.keys"] = part.keys
            arrays[f"{name}.item_delta"] = part.item_delta
            arrays[f"{name}.rows"] = part.rows
            arrays[f"{name}.fixed_delta"] = part.fixed_delta
            if part.value_range is not None:
                arrays[f"{name}.value_range"] = part.value_range
        meta = {"shard": self.shard, "seq": self.seq, "created_at": self.created_at,
                "keyed": self.keyed, "fingerprint": self.fingerprint,
                "parts": sorted(self.parts)}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> Block:
        parts = {}
        for name in meta["parts"]:
            parts[name] = BlockPart(
                np.asarray(arrays[f"{name}.keys"], dtype=np.uint64),
                arrays[f"{name}.item_delta"],
                np.asarray(arrays[f"{name}.rows"], dtype=np.int64),
                arrays[f"{name}.fixed_delta"],
                arrays.get(f"{name}.value_range"),
            )
        return cls(int(meta["shard"]), int(meta["seq"]), float(meta["created_at"]),
                   meta["keyed"], dict(meta["fingerprint"]), parts)

    def is_finite(self) -> bool:
        return all(bool(np.isfinite(p.item_delta).all() and np.isfinite(p.fixed_delta).all())
                   for p in self.parts.values())


def changed_rows(cur: npt.NDArray[Any], base: npt.NDArray[Any]) -> tuple[I64, npt.NDArray[Any]]:
    """Rows where ``cur`` differs from ``base`` (finitely), and ``cur - base`` there.

    >>> import numpy as np
    >>> rows, delta = changed_rows(np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.0, 3.0]))
    >>> rows.tolist(), delta.tolist()
    ([1], [2.0])
    """
    delta = cur - base
    moved = delta != 0
    if delta.ndim > 1:
        width = int(np.prod(delta.shape[1:]))
        moved = moved.reshape(len(delta), width).any(axis=1)
        finite = np.isfinite(delta).reshape(len(delta), width).all(axis=1)
    else:
        finite = np.isfinite(delta)
    rows = np.flatnonzero(moved & finite).astype(np.int64)
    return rows, np.ascontiguousarray(delta[rows])


def add_rows(cur: npt.NDArray[Any], base: npt.NDArray[Any], rows: I64,
             delta: npt.NDArray[Any]) -> None:
    """Fold ``delta`` into rows ``rows`` of the current values and of the baseline."""
    if not len(rows):
        return
    d = delta.astype(cur.dtype, copy=False)
    np.add.at(cur, rows, d)
    np.add.at(base, rows, d)


def map_keys(own_keys: U64, keys: U64) -> I64:
    """Own row of each key in ``keys`` (``-1`` where this shard has no row for it).

    ``own_keys[r]`` is the key owning row ``r`` (0: no owner).

    >>> import numpy as np
    >>> map_keys(np.array([0, 70, 50, 0, 90], dtype=np.uint64),
    ...          np.array([50, 60, 90], dtype=np.uint64)).tolist()
    [2, -1, 4]
    """
    out = np.full(len(keys), -1, dtype=np.int64)
    owned = np.flatnonzero(own_keys != 0)
    if not len(owned) or not len(keys):
        return out
    order = np.argsort(own_keys[owned], kind="stable")
    sorted_keys = own_keys[owned][order]
    at = np.searchsorted(sorted_keys, keys)
    at_clipped = np.minimum(at, len(sorted_keys) - 1)
    hit = sorted_keys[at_clipped] == keys
    out[hit] = owned[order[at_clipped[hit]]]
    return out
