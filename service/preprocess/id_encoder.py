"""Ids to rows at serving time for hashed encodings, without the training-time state.

A snapshot whose ``encoding`` says ``{"kind": "hash", "seed": S, "bits": B}`` for a side
maps an id to ``1 + hash(id, S) mod (2**B - 1)``; the client cannot reproduce that on its
own, so it takes this encoder (``load_snapshot(..., encoder=HashedIdEncoder(encoding))``).
Vocabulary sides are read from the snapshot's arrays. Hashing is one-way: row → item id
raises ``LookupError``.

Example
-------
>>> enc = HashedIdEncoder({"user": {"kind": "hash", "seed": 1, "bits": 4},
...                        "item": {"kind": "hash", "seed": 2, "bits": 4}})
>>> rows = enc.user_rows(["u1", "u2", "u1"])
>>> bool(rows[0] == rows[2]) and bool(((rows >= 1) & (rows < 16)).all())
True
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from service.preprocess.hashing import hash_strings
from service.preprocess.vocabulary import HashingEncoder


class HashedIdEncoder:
    """Implements ``service.snapshots.encoding.IdEncoder`` for hashed user and item ids.

    Parameters
    ----------
    encoding
        The snapshot manifest's ``encoding`` dict (from ``Preprocessor.encoding()``).
    """

    def __init__(self, encoding: Mapping[str, Any]) -> None:
        self._sides: dict[str, tuple[int, HashingEncoder]] = {}
        for side in ("user", "item"):
            spec = encoding.get(side)
            if isinstance(spec, Mapping) and spec.get("kind") == "hash":
                self._sides[side] = (int(spec["seed"]), HashingEncoder(int(spec["bits"])))

    def _rows(self, side: str, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        if side not in self._sides:
            raise LookupError(f"{side} ids of this snapshot are not hashed: read them from "
                              "the snapshot's vocabulary instead")
        seed, encoder = self._sides[side]
        rows, _ = encoder.encode(hash_strings([str(i) for i in ids], seed))
        return rows

    def user_rows(self, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        return self._rows("user", ids)

    def item_rows(self, ids: Sequence[str]) -> npt.NDArray[np.int64]:
        return self._rows("item", ids)

    def item_ids(self, rows: npt.NDArray[np.int64]) -> npt.NDArray[np.str_]:
        raise LookupError("hashed item ids cannot be recovered from rows: keep your own "
                          "item catalogue and score it with item_rows")
