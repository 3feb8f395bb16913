"""Side features: context and feature maps hashed into ``2**feature_bits`` CSR columns.

Each map entry becomes one feature:

* a string or boolean value ``k: v`` → slot ``hash(map, k, v)`` with value 1 (one-hot);
* a number ``k: x`` → slot ``hash(map, k)`` with value the running z-score of ``x``
  (:class:`~service.preprocess.scaling.RunningStandardizer`);
* ``null`` or an absent key listed in ``missing_features`` → with policy ``indicator`` a
  slot ``hash(map, k, <missing>)`` with value 1, so a model can learn what missing means;
  with ``skip``, nothing.

Crosses ``a*b`` add one slot ``hash(a, b)`` per event where both parts are present, e.g.
``item*context.device`` lets a linear model learn that an item does well on phones.

Features describe an exposure: an impression (or a rating). An action event (click,
add-to-cart, purchase) reaches a model only as the impression it resolves, with that
impression's features (:mod:`~service.preprocess.labels`), or, when no impression of it
was seen, as a stand-in for that unseen impression. So an action event gets the features
of the entries it states and nothing that only actions would get:

* no missing-value indicators: an action that leaves a key out has not reported it, it
  does not say the impression lacked it (trackers often send clicks with ids only, and a
  "device is missing" slot on them would name the positives);
* ``event_type`` in a cross takes the value ``impression``;
* its numbers are scaled but not learned by the running statistics: they restate the
  impression's, and counting them again would skew the scaling towards clicked values.

All hashing and scaling runs in compiled kernels over the batch's packed maps
(:class:`~service.events.maps.PackedMaps`, as the decoder hands them over): no Python
object per event or per entry. Lists of dicts are accepted too and packed first.

Example
-------
>>> import numpy as np
>>> from service.preprocess.config import PreprocessConfig
>>> f = FeatureHasher(PreprocessConfig(feature_bits=8, crosses=["item*context.device"]))
>>> indptr, idx, val = f.transform(
...     context=[{"device": "ios", "position": 3}, None, None],
...     user_features=[None, None, None], item_features=[None, {"new": True}, None],
...     user_key=np.array([1, 2, 2], dtype=np.uint64),
...     item_key=np.array([5, 6, 6], dtype=np.uint64),
...     event_type=np.array([0, 0, 1], dtype=np.int8))  # impression, impression, click
>>> indptr.tolist()  # 2 context entries + 1 cross; device missing + item_features.new; none
[0, 3, 5, 5]
>>> bool(idx.max() < 2**8)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from service.events.maps import BOOL, FLOAT, INT, NULL, TEXT, PackedMaps
from service.events.model import EventType
from service.preprocess.config import PreprocessConfig
from service.preprocess.hashing import (
    U64,
    combine,
    combine_arrays,
    hash_packed,
    hash_strings,
    seed_for,
)
from service.preprocess.scaling import RunningStandardizer

MAP_FIELDS = ("context", "user_features", "item_features")
NUMERIC_SLOTS = 4096

FeatureMaps = Sequence[dict[str, Any] | None] | PackedMaps
_TEXT, _INT, _FLOAT, _BOOL, _NULL = TEXT, INT, FLOAT, BOOL, NULL
_IMPRESSION = EventType.IMPRESSION.code
_ACTIONS = np.array([EventType.CLICK.code, EventType.ADD_TO_CART.code,
                     EventType.PURCHASE.code], dtype=np.int8)


@dataclass(frozen=True, slots=True)
class _Entries:
    owner: npt.NDArray[np.int64]
    idx: npt.NDArray[np.int64]
    val: npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class _Flat:
    """The non-null entries of one map field across the batch."""

    owner: npt.NDArray[np.int64]
    key_hash: U64
    value_hash: U64
    entries: _Entries


def _lookup(flat: _Flat | None, key_hash: int, n: int) -> tuple[U64, npt.NDArray[np.bool_]]:
    """Per event: the value hash of key ``key_hash`` and whether it is present (not null)."""
    hv = np.zeros(n, dtype=np.uint64)
    present = np.zeros(n, dtype=np.bool_)
    if flat is not None:
        at = np.flatnonzero(flat.key_hash == np.uint64(key_hash))
        hv[flat.owner[at]] = flat.value_hash[at]
        present[flat.owner[at]] = True
    return hv, present


def _broadcast(value: int, n: int) -> U64:
    return np.full(n, np.uint64(value), dtype=np.uint64)


class FeatureHasher:
    """Turns the maps of a batch into CSR side features.

    Parameters
    ----------
    config
        Uses ``feature_bits``, ``hash_seed``, ``crosses``, ``missing_features`` and
        ``numeric_clip``.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        self.bits = config.feature_bits
        self._mask = np.uint64((1 << config.feature_bits) - 1)
        seed = config.hash_seed
        self._map_seed = {f: seed_for(f, seed) for f in MAP_FIELDS}
        self._text_seed = seed_for("text", seed)
        self._true = seed_for("true", seed)
        self._false = seed_for("false", seed)
        self._missing = seed_for("<missing>", seed)
        self._type_seed = seed_for("event_type", seed)
        self._number_seed = seed_for("number", seed)
        self.scaler = RunningStandardizer(NUMERIC_SLOTS, config.numeric_clip)
        self._indicators = [
            (name.split(".", 1)[0], name.split(".", 1)[1])
            for name, policy in sorted(config.missing_features.items())
            if policy == "indicator"
        ]
        self._indicator_keys = {
            (f, k): int(hash_strings([k], self._map_seed[f])[0]) for f, k in self._indicators
        }
        self._crosses = [
            (tuple(part for part in cross.split("*")), seed_for("cross:" + cross, seed))
            for cross in config.crosses
        ]

    def transform(
        self,
        context: FeatureMaps,
        user_features: FeatureMaps,
        item_features: FeatureMaps,
        user_key: U64,
        item_key: U64,
        event_type: npt.NDArray[np.int8],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """``(indptr, idx, val)`` of the side features of each event, in CSR layout.

        Action events (``event_type`` click, add-to-cart, purchase) get the features of an
        impression with their entries, but no missing-value indicators (see the module).
        """
        n = len(user_key)
        action = np.isin(event_type, _ACTIONS)
        flat = {
            "context": self._flatten("context", context, action),
            "user_features": self._flatten("user_features", user_features, action),
            "item_features": self._flatten("item_features", item_features, action),
        }
        parts = [f.entries for f in flat.values() if f is not None]
        for name, key in self._indicators:
            _, present = _lookup(flat[name], self._indicator_keys[(name, key)], n)
            owner = np.flatnonzero(~present & ~action)
            if len(owner):
                hk = _broadcast(self._indicator_keys[(name, key)], len(owner))
                idx = combine_arrays(hk, _broadcast(self._missing, len(owner))) & self._mask
                parts.append(_Entries(owner, idx.astype(np.int64),
                                      np.ones(len(owner), dtype=np.float32)))
        shown_as = np.where(action, np.int8(_IMPRESSION), event_type)
        for (a, b), cross_seed in self._crosses:
            ha, pa = self._part_hash(a, flat, user_key, item_key, shown_as)
            hb, pb = self._part_hash(b, flat, user_key, item_key, shown_as)
            owner = np.flatnonzero(pa & pb)
            if len(owner):
                h = combine_arrays(combine_arrays(ha[owner], hb[owner]),
                                   _broadcast(cross_seed, len(owner)))
                parts.append(_Entries(owner, (h & self._mask).astype(np.int64),
                                      np.ones(len(owner), dtype=np.float32)))
        return _to_csr(parts, n)

    # -- pieces ---------------------------------------------------------------------------

    def _flatten(self, name: str, column: FeatureMaps,
                 action: npt.NDArray[np.bool_]) -> _Flat | None:
        """Every entry of one map field: owner event, key hash, value hash, features.

        Numbers of ``action`` events are scaled without being learned from."""
        maps = column if isinstance(column, PackedMaps) else PackedMaps.from_dicts(column)
        if maps.n_entries == 0:
            return None
        n = len(maps)
        owner = np.repeat(np.arange(n, dtype=np.int64), np.diff(maps.indptr))
        hk = hash_packed(maps.keys, self._map_seed[name])
        kind = maps.kind
        # hv: the value as a category (also for numbers, so crosses can use them).
        text_hash = hash_packed(maps.texts, self._text_seed)
        hv, idx = _entry_hashes(kind, maps.number.view(np.uint64), hk, text_hash,
                                np.uint64(self._true), np.uint64(self._false),
                                np.uint64(self._number_seed), self._mask)
        val = np.ones(len(kind), dtype=np.float32)
        num_at = np.flatnonzero((kind == _INT) | (kind == _FLOAT))
        if len(num_at):
            # One slot per numeric key (idx = its key hash); the value carries x.
            slots = (hk[num_at] % np.uint64(NUMERIC_SLOTS)).astype(np.int64)
            val[num_at] = self.scaler.transform(slots, maps.number[num_at],
                                                learn=~action[owner[num_at]])
        keep = kind != _NULL  # nulls are missing values: see the indicators
        if keep.all():
            return _Flat(owner, hk, hv, _Entries(owner, idx, val))
        owner = owner[keep]
        return _Flat(owner, hk[keep], hv[keep], _Entries(owner, idx[keep], val[keep]))

    def _part_hash(
        self,
        part: str,
        flat: dict[str, _Flat | None],
        user_key: U64,
        item_key: U64,
        event_type: npt.NDArray[np.int8],
    ) -> tuple[U64, npt.NDArray[np.bool_]]:
        n = len(user_key)
        if part == "user":
            return user_key, np.ones(n, dtype=np.bool_)
        if part == "item":
            return item_key, np.ones(n, dtype=np.bool_)
        if part == "event_type":
            codes = event_type.astype(np.uint64)
            return combine_arrays(codes, _broadcast(self._type_seed, n)), np.ones(n, np.bool_)
        field, key = part.split(".", 1)
        hk = int(hash_strings([key], self._map_seed[field])[0])
        hv, present = _lookup(flat[field], hk, n)
        return combine_arrays(_broadcast(hk, n), hv), present

    # -- state ----------------------------------------------------------------------------

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        return self.scaler.get_state()

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        self.scaler.set_state(arrays, meta)


@njit(cache=True)
def _entry_hashes(
    kind: npt.NDArray[np.int8], bits: U64, hk: U64, text_hash: U64, true: np.uint64,
    false: np.uint64, number_seed: np.uint64, mask: np.uint64,
) -> tuple[U64, npt.NDArray[np.int64]]:
    """Per entry: the value's hash (``bits`` are the float64 bits of numbers) and the
    feature slot, ``hash(key, value)`` or, for a number, ``hash(key)``."""
    m = len(kind)
    hv = np.zeros(m, dtype=np.uint64)
    idx = np.empty(m, dtype=np.int64)
    for e in range(m):
        k = kind[e]
        if k in (_INT, _FLOAT):
            hv[e] = combine(bits[e], number_seed)
            idx[e] = np.int64(hk[e] & mask)
            continue
        if k == _TEXT:
            hv[e] = text_hash[e]
        elif k == _BOOL:
            hv[e] = true if bits[e] != np.uint64(0) else false
        idx[e] = np.int64(combine(hk[e], hv[e]) & mask)
    return hv, idx


@njit(cache=True)
def _scatter_csr(
    owner: npt.NDArray[np.int64], idx: npt.NDArray[np.int64], val: npt.NDArray[np.float32],
    n: int,
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """A counting sort by owner, stable: the order of a stable argsort, in O(entries)."""
    indptr = np.zeros(n + 1, dtype=np.int64)
    for k in range(len(owner)):
        indptr[owner[k] + 1] += 1
    for i in range(n):
        indptr[i + 1] += indptr[i]
    cursor = indptr[:-1].copy()
    out_idx = np.empty(len(idx), dtype=np.int64)
    out_val = np.empty(len(val), dtype=np.float32)
    for k in range(len(owner)):
        at = cursor[owner[k]]
        out_idx[at] = idx[k]
        out_val[at] = val[k]
        cursor[owner[k]] = at + 1
    return indptr, out_idx, out_val


def _to_csr(
    parts: list[_Entries], n: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    if not parts:
        return np.zeros(n + 1, dtype=np.int64), np.zeros(0, dtype=np.int64), np.zeros(
            0, dtype=np.float32)
    return _scatter_csr(  # type: ignore[no-any-return]
        np.concatenate([p.owner for p in parts]), np.concatenate([p.idx for p in parts]),
        np.concatenate([p.val for p in parts]).astype(np.float32, copy=False), n)
