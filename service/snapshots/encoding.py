"""Mapping original user and item ids to model rows (and item rows back to ids) for serving.

The manifest's ``encoding`` dict is opaque to the registry, except for two optional
entries that let :func:`~service.snapshots.client.load_snapshot` accept original string
ids without the preprocessing code:

``encoding["user"]`` / ``encoding["item"]``, each one of

* ``{"kind": "vocabulary", "utf8": NAME, "offsets": NAME}``: row ``r`` is the id
  ``utf8[offsets[r]:offsets[r + 1]].decode()``, with both arrays stored as snapshot
  encoding arrays (build them with :func:`vocabulary_arrays`). Row 0 is "unknown".
* ``{"kind": "identity"}``: ids are decimal integers equal to their row.
* anything else (e.g. ``{"kind": "hash", "seed": 7, "bits": 20}``): the client needs
  an :class:`IdEncoder` from the preprocessing code, passed as ``encoder=``.

Example
-------
>>> import numpy as np
>>> arrays = vocabulary_arrays(["", "alice", "bob"])
>>> enc = encoder_from_snapshot(
...     {"user": {"kind": "vocabulary", "utf8": "u8", "offsets": "uo"},
...      "item": {"kind": "identity"}},
...     {"u8": arrays[0], "uo": arrays[1]})
>>> enc.user_rows(["bob", "carol"]).tolist(), enc.item_ids(np.array([3, 0])).tolist()
([2, 0], ['3', '0'])
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

IntArray = npt.NDArray[np.int64]


@runtime_checkable
class IdEncoder(Protocol):
    """Maps original ids to model rows; unknown ids map to row 0."""

    def user_rows(self, ids: Sequence[str]) -> IntArray: ...

    def item_rows(self, ids: Sequence[str]) -> IntArray: ...

    def item_ids(self, rows: IntArray) -> npt.NDArray[np.str_]:
        """Original ids of item rows; raise ``LookupError`` if the encoding is one-way."""
        ...


def vocabulary_arrays(ids: Sequence[str]) -> tuple[npt.NDArray[np.uint8], IntArray]:
    """Pack ``ids`` (index = row) as UTF-8 bytes plus offsets: compact and pickle-free."""
    encoded = [s.encode("utf-8") for s in ids]
    offsets = np.zeros(len(encoded) + 1, dtype=np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return np.frombuffer(b"".join(encoded), dtype=np.uint8).copy(), offsets


class Vocabulary:
    """Row <-> id table unpacked from :func:`vocabulary_arrays` output."""

    def __init__(self, utf8: npt.NDArray[np.uint8], offsets: IntArray) -> None:
        if offsets.ndim != 1 or len(offsets) < 1 or offsets[-1] != len(utf8):
            raise ValueError("vocabulary offsets must be 1-d and end at len(utf8)")
        raw = utf8.tobytes()
        self.ids = np.array(
            [raw[a:b].decode("utf-8") for a, b in itertools.pairwise(offsets.tolist())],
            dtype=np.str_,
        )
        # Later rows win on duplicates, like a dict built in stream order.
        self._rows = {s: r for r, s in enumerate(self.ids.tolist())}
        self._rows.pop("", None)  # "" marks the reserved row 0 / free rows

    def rows(self, ids: Sequence[str]) -> IntArray:
        get = self._rows.get
        return np.fromiter((get(str(i), 0) for i in ids), dtype=np.int64, count=len(ids))

    def lookup(self, rows: IntArray) -> npt.NDArray[np.str_]:
        return self.ids[np.asarray(rows, dtype=np.int64)]


class _Identity:
    def rows(self, ids: Sequence[str]) -> IntArray:
        try:
            return np.asarray([int(i) for i in ids], dtype=np.int64)
        except ValueError as exc:
            raise ValueError(f"identity-encoded ids must be integers: {exc}") from exc

    def lookup(self, rows: IntArray) -> npt.NDArray[np.str_]:
        return np.asarray(rows, dtype=np.int64).astype(np.str_)


class _OneWay:
    def __init__(self, side: str, kind: str) -> None:
        self.side, self.kind = side, kind

    def _fail(self) -> LookupError:
        return LookupError(
            f"{self.side} ids of this snapshot are encoded with kind {self.kind!r}, which the "
            "client cannot reproduce on its own: pass encoder=<IdEncoder from the "
            "preprocessing code> to load_snapshot, or use predict_rows/recommend_rows"
        )

    def rows(self, ids: Sequence[str]) -> IntArray:
        raise self._fail()

    def lookup(self, rows: IntArray) -> npt.NDArray[np.str_]:
        raise self._fail()


class TableEncoder:
    """An :class:`IdEncoder` built from the snapshot's own encoding entries."""

    def __init__(self, users: Any, items: Any) -> None:
        self._users, self._items = users, items

    def user_rows(self, ids: Sequence[str]) -> IntArray:
        return self._users.rows(ids)  # type: ignore[no-any-return]

    def item_rows(self, ids: Sequence[str]) -> IntArray:
        return self._items.rows(ids)  # type: ignore[no-any-return]

    def item_ids(self, rows: IntArray) -> npt.NDArray[np.str_]:
        return self._items.lookup(rows)  # type: ignore[no-any-return]


def _side(
    side: str, spec: Any, arrays: Mapping[str, npt.NDArray[Any]]
) -> Vocabulary | _Identity | _OneWay:
    if not isinstance(spec, Mapping) or "kind" not in spec:
        return _OneWay(side, "unspecified")
    kind = spec["kind"]
    if kind == "identity":
        return _Identity()
    if kind == "vocabulary":
        try:
            return Vocabulary(arrays[spec["utf8"]], arrays[spec["offsets"]])
        except KeyError as exc:
            raise ValueError(
                f"{side} vocabulary names encoding array {exc}, which the snapshot lacks"
            ) from exc
    return _OneWay(side, str(kind))


def encoder_from_snapshot(
    encoding: Mapping[str, Any], arrays: Mapping[str, npt.NDArray[Any]]
) -> TableEncoder:
    """The encoder that the manifest's ``encoding`` and encoding arrays describe."""
    return TableEncoder(
        _side("user", encoding.get("user"), arrays), _side("item", encoding.get("item"), arrays)
    )
