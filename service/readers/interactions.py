"""The columnar form every public data set is read into before it is replayed.

A data set is one of three kinds, and the kind decides which events a row becomes
(:mod:`service.readers.replay`) and which task the learners solve:

* ``ratings`` — explicit ratings (MovieLens): ``value`` holds the rating;
* ``clicks`` — impressions with a 0/1 ``label`` (Criteo, Avazu): a row is an impression,
  and a click when its label is 1;
* ``implicit`` — engagements without negatives (views, add-to-carts, purchases):
  ``event_type`` holds freshrec's event type of each row.

Ids are kept as the strings the data set uses (the replay sends them as the events'
``user_id``/``item_id``; each contender encodes them its own way). Side features live in
``features``: the event contract's three maps (``context``, ``user_features``,
``item_features``), each a dict of column name to one value per row: an object array of
strings (``None`` = missing) or a float64 array (NaN = missing).

Example
-------
>>> import numpy as np
>>> t = Interactions.build("ratings", user=["u1", "u2"], item=["i1", "i1"],
...                        ts_ms=[2000, 1000], value=[4.0, 3.0])
>>> t = t.time_ordered()
>>> t.user.tolist(), t.value.tolist(), t.task
(['u2', 'u1'], [3.0, 4.0], 'regression')
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Kind = Literal["ratings", "clicks", "implicit"]
KINDS: tuple[Kind, ...] = ("ratings", "clicks", "implicit")
MAPS = ("context", "user_features", "item_features")
# The event contract's limit on entries per map (docs/events.md).
MAX_MAP_ENTRIES = 16
# Event types an implicit row may have: the contract's positive types.
IMPLICIT_TYPES = ("click", "add_to_cart", "purchase")

ObjArray = npt.NDArray[np.object_]
Column = npt.NDArray[Any]
Features = dict[str, dict[str, Column]]


def _column(values: Sequence[Any] | npt.NDArray[Any]) -> Column:
    """A feature column: float64 when every value is a number (or missing), else strings."""
    arr = np.asarray(values)
    if arr.dtype.kind in "fiub":
        return arr.astype(np.float64)
    out = np.empty(len(arr), dtype=object)
    for k, v in enumerate(arr.tolist()):
        out[k] = None if v is None or v == "" else str(v)
    return out


def _strings(values: Sequence[Any] | npt.NDArray[Any]) -> ObjArray:
    out = np.empty(len(values), dtype=object)
    out[:] = [str(v) for v in (values.tolist() if isinstance(values, np.ndarray) else values)]
    return out


@dataclass(slots=True)
class Interactions:
    """Rows of one data set, columnar.

    Parameters
    ----------
    kind
        ``"ratings"``, ``"clicks"`` or ``"implicit"`` (see the module docstring).
    user, item
        Ids as strings, one per row.
    ts_ms
        Event time of each row in epoch milliseconds (for clicks: the impression's).
    value
        Ratings (``ratings`` only).
    label
        1.0 for a clicked impression, 0.0 otherwise (``clicks`` only).
    event_type
        freshrec event type of each row (``implicit`` only): ``click``, ``add_to_cart``
        or ``purchase``.
    features
        Side features by map (``context``, ``user_features``, ``item_features``), each at
        most 16 columns (the event contract's limit).
    name
        What the data set is called in tables and plots.
    synthetic_time
        True when the file has no timestamps and ``ts_ms`` was made up from file order.
    """

    kind: Kind
    user: ObjArray
    item: ObjArray
    ts_ms: npt.NDArray[np.int64]
    value: npt.NDArray[np.float32] | None = None
    label: npt.NDArray[np.float32] | None = None
    event_type: ObjArray | None = None
    features: Features = field(default_factory=dict)
    name: str = "data"
    synthetic_time: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        n = len(self.user)
        if len(self.item) != n or len(self.ts_ms) != n:
            raise ValueError(f"user ({n}), item ({len(self.item)}) and ts_ms "
                             f"({len(self.ts_ms)}) must have one entry per row")
        needs = {"ratings": "value", "clicks": "label", "implicit": "event_type"}[self.kind]
        for name in ("value", "label", "event_type"):
            col = getattr(self, name)
            if (col is None) == (name == needs):
                raise ValueError(f"a {self.kind} table needs {needs} and no other target "
                                 f"column (got {name}={'none' if col is None else 'a column'})")
            if col is not None and len(col) != n:
                raise ValueError(f"{name} has {len(col)} entries for {n} rows")
        if self.event_type is not None:
            bad = sorted(set(self.event_type.tolist()) - set(IMPLICIT_TYPES))
            if bad:
                raise ValueError(f"implicit rows must be one of {IMPLICIT_TYPES}, got {bad[:5]}")
        for map_name, cols in self.features.items():
            if map_name not in MAPS:
                raise ValueError(f"feature map {map_name!r} is not one of {MAPS}")
            if len(cols) > MAX_MAP_ENTRIES:
                raise ValueError(
                    f"{map_name} has {len(cols)} columns; the event contract allows "
                    f"{MAX_MAP_ENTRIES} entries per map: spread them over {MAPS}")
            for key, col in cols.items():
                if len(col) != n:
                    raise ValueError(f"{map_name}.{key} has {len(col)} values for {n} rows")

    @classmethod
    def build(cls, kind: Kind, *, user: Sequence[Any] | npt.NDArray[Any],
              item: Sequence[Any] | npt.NDArray[Any], ts_ms: Sequence[int] | npt.NDArray[Any],
              value: Sequence[float] | npt.NDArray[Any] | None = None,
              label: Sequence[float] | npt.NDArray[Any] | None = None,
              event_type: Sequence[str] | npt.NDArray[Any] | None = None,
              features: Mapping[str, Mapping[str, Sequence[Any] | npt.NDArray[Any]]]
              | None = None,
              name: str = "data", synthetic_time: bool = False) -> Interactions:
        """A table from plain sequences, cast to the canonical column types."""
        return cls(
            kind=kind, user=_strings(user), item=_strings(item),
            ts_ms=np.asarray(ts_ms, dtype=np.int64),
            value=None if value is None else np.asarray(value, dtype=np.float32),
            label=None if label is None else np.asarray(label, dtype=np.float32),
            event_type=None if event_type is None else _strings(event_type),
            features={m: {k: _column(v) for k, v in cols.items()}
                      for m, cols in (features or {}).items() if cols},
            name=name, synthetic_time=synthetic_time,
        )

    def __len__(self) -> int:
        return len(self.user)

    @property
    def task(self) -> str:
        """The learning task: ``regression`` for ratings, ``binary`` otherwise."""
        return "regression" if self.kind == "ratings" else "binary"

    def target(self) -> npt.NDArray[np.float32]:
        """What a row teaches: the rating, the click label, or 1 for an engagement."""
        if self.value is not None:
            return self.value
        if self.label is not None:
            return self.label
        return np.ones(len(self), dtype=np.float32)

    def take(self, rows: npt.NDArray[np.int64] | slice) -> Interactions:
        """The rows at ``rows`` (an index array or a slice), every column alike."""
        def pick(col: Any) -> Any:
            return None if col is None else col[rows]

        return replace(
            self, user=self.user[rows], item=self.item[rows], ts_ms=self.ts_ms[rows],
            value=pick(self.value), label=pick(self.label), event_type=pick(self.event_type),
            features={m: {k: c[rows] for k, c in cols.items()}
                      for m, cols in self.features.items()})

    def head(self, n: int | None) -> Interactions:
        """The first ``n`` rows (all of them when ``n`` is None)."""
        return self if n is None or n >= len(self) else self.take(slice(0, n))

    def time_ordered(self) -> Interactions:
        """Rows sorted by event time; rows with equal times keep their file order."""
        if len(self) < 2 or bool(np.all(np.diff(self.ts_ms) >= 0)):
            return self
        return self.take(np.argsort(self.ts_ms, kind="stable"))
