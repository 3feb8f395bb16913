"""Events to training labels, including impressions that become negatives after a window.

``task="regression"``: each rating is an example with its value as target.

``task="binary"``: clicks, add-to-carts and purchases are positives at once (weights from
config). An impression waits ``attribution_window_ms`` of event time for a click (or
add-to-cart, or purchase) by the same user on the same item:

* a click inside the window turns it positive: the click's own positive is the only
  example, the impression emits nothing;
* otherwise, when the newest event time seen passes the end of its window, the impression
  is emitted as a negative (with the features it had when shown, position included);
* a click after its impression was already emitted as a negative is a *late click*: it is
  still a positive, the negative is not taken back, and ``late_clicks`` counts it so the
  window can be tuned;
* events arrive out of order: a click remembered for one window absorbs an impression
  that arrives after it, and a repeated impression of a pair already pending is merged.

Pending impressions (and remembered clicks) live in a ring of ``max_pending`` slots; when
it is full the oldest is resolved early as a negative and counted in
``pending_evicted``. Resolved negatives are remembered for one more window in a second
ring of the same size, to recognise late clicks.

Example
-------
>>> import numpy as np
>>> from service.preprocess.config import PreprocessConfig
>>> lab = Labeler(PreprocessConfig(task="binary", attribution_window_ms=100, max_pending=16))
>>> imp, clk = 0, 1
>>> out = lab.binary(
...     codes=np.array([imp, imp, clk], dtype=np.int8), ts=np.array([0, 10, 50]),
...     pair=np.array([1, 2, 1], dtype=np.uint64), user_row=np.array([1, 2, 1]),
...     item_row=np.array([1, 1, 1]), user_key=np.array([11, 12, 11], dtype=np.uint64),
...     item_key=np.array([21, 21, 21], dtype=np.uint64),
...     holdout=np.zeros(3, dtype=np.bool_), indptr=np.zeros(4, dtype=np.int64),
...     fidx=np.zeros(0, dtype=np.int64), fval=np.zeros(0, dtype=np.float32))
>>> out.positives.tolist(), len(out.neg_ts)  # the click is the positive; pair 2 waits
([2], 0)
>>> out = lab.binary(codes=np.array([clk], dtype=np.int8), ts=np.array([500]),
...     pair=np.array([3], dtype=np.uint64), user_row=np.array([3]), item_row=np.array([1]),
...     user_key=np.array([13], dtype=np.uint64), item_key=np.array([21], dtype=np.uint64),
...     holdout=np.zeros(1, dtype=np.bool_), indptr=np.zeros(2, dtype=np.int64),
...     fidx=np.zeros(0, dtype=np.int64), fval=np.zeros(0, dtype=np.float32))
>>> out.neg_ts.tolist()  # time moved past 10 + 100: impression of pair 2 is a negative
[10]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from service.events.model import EventType
from service.preprocess.config import PreprocessConfig
from service.preprocess.table import (
    find,
    insert,
    new_table,
    nonzero,
    remove,
    reserve,
    value_at,
)
from service.residency import prefault

IMPRESSION = EventType.IMPRESSION.code
CLICK = EventType.CLICK.code
ADD_TO_CART = EventType.ADD_TO_CART.code
PURCHASE = EventType.PURCHASE.code
RATING = EventType.RATING.code

_INT64_MIN = np.iinfo(np.int64).min
_DEAD, _PENDING, _CLICKED = 0, 1, 2
# A table value at or above this is a slot of the resolved ring, below it of the main one.
_RESOLVED = 1 << 40
_INITIAL = 1024  # ring slots allocated before the first doubling
# meta slots
(_HEAD, _SIZE, _RHEAD, _RSIZE, _WATERMARK, _LATE, _NEG, _EVICTED, _MERGED, _ABSORBED,
 _CONVERTED, _TRUNCATED, _NPENDING) = range(13)
_COUNTERS: dict[str, int] = {
    "late_clicks": _LATE, "negatives_emitted": _NEG, "pending_evicted": _EVICTED,
    "impressions_merged": _MERGED, "impressions_absorbed": _ABSORBED,
    "impressions_converted": _CONVERTED, "features_truncated": _TRUNCATED,
}
_MAIN = ("kind", "key", "ts", "user", "item", "ukey", "ikey", "hold", "nf")
_RING = ("key", "ts", "alive")

# The rings below hold at most ``cap`` entries (max_pending) but are allocated smaller and
# doubled by the caller before each batch, so that a batch never outgrows them: indices
# wrap at the allocated length, and only a full-grown ring ever reaches ``cap``.


@njit(cache=True)
def _remember_resolved(
    key: np.uint64, ts: int, cap: int, table: Any, r_key: Any, r_ts: Any, r_alive: Any,
    meta: Any,
) -> None:
    length = len(r_key)
    if meta[_RSIZE] == cap:
        h = meta[_RHEAD]
        if r_alive[h]:
            remove(table, r_key[h])
        meta[_RHEAD] = (h + 1) % length
        meta[_RSIZE] -= 1
    t = (meta[_RHEAD] + meta[_RSIZE]) % length
    r_key[t] = key
    r_ts[t] = ts
    r_alive[t] = True
    insert(table, key, _RESOLVED + t)
    meta[_RSIZE] += 1


@njit(cache=True)
def _pop_head(
    cap: int, table: Any, m_kind: Any, m_key: Any, m_ts: Any, m_user: Any,
    m_item: Any, m_ukey: Any, m_ikey: Any, m_hold: Any, m_nf: Any, m_fidx: Any, m_fval: Any,
    r_key: Any, r_ts: Any, r_alive: Any, meta: Any,
    o_user: Any, o_item: Any, o_ukey: Any, o_ikey: Any, o_ts: Any, o_hold: Any, o_nf: Any,
    o_fidx: Any, o_fval: Any, n_out: int,
) -> int:
    """Drop the oldest ring entry; a pending impression is written out as a negative."""
    h = meta[_HEAD]
    kind = m_kind[h]
    if kind != _DEAD:
        remove(table, m_key[h])
    if kind == _PENDING:
        o_user[n_out] = m_user[h]
        o_item[n_out] = m_item[h]
        o_ukey[n_out] = m_ukey[h]
        o_ikey[n_out] = m_ikey[h]
        o_ts[n_out] = m_ts[h]
        o_hold[n_out] = m_hold[h]
        nf = m_nf[h]
        o_nf[n_out] = nf
        o_fidx[n_out, :nf] = m_fidx[h, :nf]
        o_fval[n_out, :nf] = m_fval[h, :nf]
        n_out += 1
        meta[_NEG] += 1
        meta[_NPENDING] -= 1
        _remember_resolved(m_key[h], m_ts[h], cap, table, r_key, r_ts, r_alive, meta)
    m_kind[h] = _DEAD
    meta[_HEAD] = (h + 1) % len(m_kind)
    meta[_SIZE] -= 1
    return n_out


@njit(cache=True)
def _binary(
    codes: Any, ts: Any, pair: Any, user_row: Any, item_row: Any, user_key: Any, item_key: Any,
    hold: Any, indptr: Any, fidx: Any, fval: Any, window: int, cap: int,
    table: Any, m_kind: Any, m_key: Any, m_ts: Any, m_user: Any, m_item: Any,
    m_ukey: Any, m_ikey: Any, m_hold: Any, m_nf: Any, m_fidx: Any, m_fval: Any,
    r_key: Any, r_ts: Any, r_alive: Any, meta: Any,
    o_user: Any, o_item: Any, o_ukey: Any, o_ikey: Any, o_ts: Any, o_hold: Any, o_nf: Any,
    o_fidx: Any, o_fval: Any,
) -> tuple[Any, int]:
    length = len(m_kind)
    fmax = m_fidx.shape[1]
    n = len(codes)
    positives = np.empty(n, dtype=np.int64)
    n_pos = 0
    n_out = 0
    for i in range(n):
        c = codes[i]
        t = ts[i]
        if t > meta[_WATERMARK]:
            meta[_WATERMARK] = t
        key = nonzero(pair[i])
        s = find(table, key)
        slot = value_at(table, s) if s >= 0 else -1
        if c == IMPRESSION:
            if 0 <= slot < _RESOLVED:
                if m_kind[slot] == _PENDING:
                    meta[_MERGED] += 1
                    continue
                # A remembered click: absorbs this impression if inside its window.
                if t <= m_ts[slot] <= t + window:
                    meta[_ABSORBED] += 1
                    continue
                remove(table, key)
                m_kind[slot] = _DEAD
            elif slot >= _RESOLVED:
                remove(table, key)
                r_alive[slot - _RESOLVED] = False
            kind = _PENDING
        elif c in (CLICK, ADD_TO_CART, PURCHASE):
            positives[n_pos] = i
            n_pos += 1
            if 0 <= slot < _RESOLVED:
                if m_kind[slot] == _PENDING:
                    if m_ts[slot] <= t <= m_ts[slot] + window:
                        meta[_CONVERTED] += 1
                        meta[_NPENDING] -= 1
                        m_kind[slot] = _CLICKED  # remembered, for impressions arriving late
                        m_ts[slot] = t
                    elif t > m_ts[slot] + window:
                        meta[_LATE] += 1
                # A repeated click keeps the first click's time: refreshing it in place
                # would hold the ring's head back and delay every negative behind it.
                continue
            if slot >= _RESOLVED:
                meta[_LATE] += 1  # its impression was already emitted as a negative
                remove(table, key)
                r_alive[slot - _RESOLVED] = False
                continue
            kind = _CLICKED
        else:
            continue
        if meta[_SIZE] == cap:
            n_out = _pop_head(cap, table, m_kind, m_key, m_ts, m_user, m_item, m_ukey,
                              m_ikey, m_hold, m_nf, m_fidx, m_fval, r_key, r_ts, r_alive, meta,
                              o_user, o_item, o_ukey, o_ikey, o_ts, o_hold, o_nf, o_fidx,
                              o_fval, n_out)
            meta[_EVICTED] += 1
        tail = (meta[_HEAD] + meta[_SIZE]) % length
        m_kind[tail] = kind
        m_key[tail] = key
        m_ts[tail] = t
        m_user[tail] = user_row[i]
        m_item[tail] = item_row[i]
        m_ukey[tail] = user_key[i]
        m_ikey[tail] = item_key[i]
        m_hold[tail] = hold[i]
        nf = 0
        if kind == _PENDING:
            meta[_NPENDING] += 1
            a, b = indptr[i], indptr[i + 1]
            nf = min(b - a, fmax)
            if b - a > fmax:
                meta[_TRUNCATED] += 1
            m_fidx[tail, :nf] = fidx[a:a + nf]
            m_fval[tail, :nf] = fval[a:a + nf]
        m_nf[tail] = nf
        insert(table, key, tail)
        meta[_SIZE] += 1
    return positives[:n_pos], n_out


@njit(cache=True)
def _count_due(window: int, m_kind: Any, m_ts: Any, meta: Any) -> int:
    length = len(m_kind)
    due = 0
    for k in range(meta[_SIZE]):
        h = (meta[_HEAD] + k) % length
        if m_kind[h] == _DEAD:
            continue
        if m_ts[h] + window >= meta[_WATERMARK]:
            break
        if m_kind[h] == _PENDING:
            due += 1
    return due


@njit(cache=True)
def _sweep(
    window: int, cap: int, table: Any, m_kind: Any, m_key: Any, m_ts: Any, m_user: Any,
    m_item: Any, m_ukey: Any, m_ikey: Any, m_hold: Any, m_nf: Any, m_fidx: Any, m_fval: Any,
    r_key: Any, r_ts: Any, r_alive: Any, meta: Any,
    o_user: Any, o_item: Any, o_ukey: Any, o_ikey: Any, o_ts: Any, o_hold: Any, o_nf: Any,
    o_fidx: Any, o_fval: Any,
) -> int:
    n_out = 0
    w = meta[_WATERMARK]
    while meta[_SIZE] > 0:
        h = meta[_HEAD]
        if m_kind[h] != _DEAD and m_ts[h] + window >= w:
            break
        n_out = _pop_head(cap, table, m_kind, m_key, m_ts, m_user, m_item, m_ukey,
                          m_ikey, m_hold, m_nf, m_fidx, m_fval, r_key, r_ts, r_alive, meta,
                          o_user, o_item, o_ukey, o_ikey, o_ts, o_hold, o_nf, o_fidx, o_fval,
                          n_out)
    # Resolved negatives are remembered one more window, to count late clicks.
    length = len(r_key)
    while meta[_RSIZE] > 0:
        h = meta[_RHEAD]
        if r_alive[h] and r_ts[h] + 2 * window >= w:
            break
        if r_alive[h]:
            remove(table, r_key[h])
            r_alive[h] = False
        meta[_RHEAD] = (h + 1) % length
        meta[_RSIZE] -= 1
    return n_out


@njit(cache=True)
def _rebuild(table: Any, m_kind: Any, m_key: Any, r_key: Any, r_alive: Any,
             meta: Any) -> None:
    length = len(m_kind)
    for k in range(meta[_SIZE]):
        h = (meta[_HEAD] + k) % length
        if m_kind[h] != _DEAD:
            insert(table, m_key[h], h)
    for k in range(meta[_RSIZE]):
        h = (meta[_RHEAD] + k) % len(r_key)
        if r_alive[h]:
            insert(table, r_key[h], _RESOLVED + h)


@njit(cache=True)
def _pack_features(nf: Any, fidx: Any, fval: Any, head: int) -> tuple[Any, Any]:
    """The first ``nf[k]`` features of ring entry ``head + k``, end to end."""
    total = 0
    for k in range(len(nf)):
        total += nf[k]
    out_idx = np.empty(total, dtype=np.int32)
    out_val = np.empty(total, dtype=np.float32)
    at = 0
    length = len(fidx)
    for k in range(len(nf)):
        h = (head + k) % length
        for j in range(nf[k]):  # scalar loops: a slice per row costs more than its copy
            out_idx[at] = fidx[h, j]
            out_val[at] = fval[h, j]
            at += 1
    return out_idx, out_val


@njit(cache=True)
def _unpack_features(nf: Any, idx: Any, val: Any, fidx: Any, fval: Any) -> None:
    at = 0
    for k in range(len(nf)):
        for j in range(nf[k]):
            fidx[k, j] = idx[at]
            fval[k, j] = val[at]
            at += 1


@dataclass(slots=True)
class BinaryLabels:
    """What :meth:`Labeler.binary` produced for one batch.

    ``positives`` are positions of input events that are positive examples. The ``neg_*``
    columns are impressions resolved as negatives in this batch (possibly from earlier
    batches), with their stored side features in fixed-width rows of ``neg_nf`` entries.
    """

    positives: npt.NDArray[np.int64]
    neg_user: npt.NDArray[np.int64]
    neg_item: npt.NDArray[np.int64]
    neg_user_key: npt.NDArray[np.uint64]
    neg_item_key: npt.NDArray[np.uint64]
    neg_ts: npt.NDArray[np.int64]
    neg_holdout: npt.NDArray[np.bool_]
    neg_nf: npt.NDArray[np.int64]
    neg_fidx: npt.NDArray[np.int32]
    neg_fval: npt.NDArray[np.float32]


def _out_buffers(n: int, f: int) -> tuple[Any, ...]:
    return (np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.uint64),
            np.zeros(n, np.uint64), np.zeros(n, np.int64), np.zeros(n, np.bool_),
            np.zeros(n, np.int64), np.zeros((n, f), np.int32), np.zeros((n, f), np.float32))


class Labeler:
    """Turns events into labelled examples; holds the pending impressions of the binary task.

    The rings of pending impressions and resolved negatives start small and double as they
    fill, up to ``max_pending`` entries each; :meth:`get_state` exports only the entries
    between head and tail, with each pending impression's features unpadded.

    Parameters
    ----------
    config
        Uses ``task``, the weights, ``attribution_window_ms``, ``max_pending`` and
        ``max_pending_features``.
    """

    def __init__(self, config: PreprocessConfig) -> None:
        self.task = config.task
        self.window = config.attribution_window_ms
        self.capacity = config.max_pending
        self.max_features = config.max_pending_features
        w = np.zeros(len(EventType), dtype=np.float32)
        w[CLICK], w[ADD_TO_CART] = config.click_weight, config.add_to_cart_weight
        w[PURCHASE], w[IMPRESSION] = config.purchase_weight, config.impression_weight
        w[RATING] = config.rating_weight
        self.weights = w
        self._meta = np.zeros(13, dtype=np.int64)
        self._meta[_WATERMARK] = _INT64_MIN
        # A regression labeler never holds anything: do not allocate for it.
        initial = min(self.capacity, _INITIAL) if self.task == "binary" else 1
        self._m = self._main_ring(initial)
        # Impressions already emitted as negatives, remembered to recognise late clicks.
        self._r = self._resolved_ring(initial)
        self._table = new_table(2 * initial)

    def _main_ring(self, length: int) -> dict[str, npt.NDArray[Any]]:
        f = self.max_features
        return {
            "kind": np.zeros(length, np.int8), "key": np.zeros(length, np.uint64),
            "ts": np.zeros(length, np.int64), "user": np.zeros(length, np.int64),
            "item": np.zeros(length, np.int64), "ukey": np.zeros(length, np.uint64),
            "ikey": np.zeros(length, np.uint64), "hold": np.zeros(length, np.bool_),
            "nf": np.zeros(length, np.int64), "fidx": np.zeros((length, f), np.int32),
            "fval": np.zeros((length, f), np.float32),
        }

    @staticmethod
    def _resolved_ring(length: int) -> dict[str, npt.NDArray[Any]]:
        return {"key": np.zeros(length, np.uint64), "ts": np.zeros(length, np.int64),
                "alive": np.zeros(length, np.bool_)}

    def preallocate(self) -> None:
        """Grow both rings to ``max_pending`` now and fault their pages in."""
        if self.task != "binary":
            return
        self._reserve(self.capacity, self.capacity)
        for array in (*self._m.values(), *self._r.values(), self._table):
            prefault(array)

    def relevant(self, codes: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
        """Events that make or may make examples for the task (the others are only counted)."""
        if self.task == "regression":
            return codes == RATING  # type: ignore[no-any-return]
        return codes != RATING  # type: ignore[no-any-return]

    @property
    def pending(self) -> int:
        """Impressions waiting for their window to close."""
        return int(self._meta[_NPENDING])

    def counters(self) -> dict[str, int]:
        return {name: int(self._meta[k]) for name, k in _COUNTERS.items()}

    @property
    def nbytes(self) -> int:
        """Bytes allocated now (grows with the entries held, up to ``max_pending``)."""
        return (sum(a.nbytes for a in self._m.values()) + sum(a.nbytes for a in self._r.values())
                + self._table.nbytes)

    # -- ring storage ----------------------------------------------------------------------

    def _ordered(self, ring: dict[str, npt.NDArray[Any]], head: int, size: int,
                 names: tuple[str, ...]) -> dict[str, npt.NDArray[Any]]:
        """Copies of the live entries of ``ring``, oldest first (slices where possible)."""
        length = len(ring["key"])
        if head + size <= length:
            return {k: ring[k][head:head + size].copy() for k in names}
        return {k: np.concatenate([ring[k][head:], ring[k][: head + size - length]])
                for k in names}

    def _reserve(self, main: int, resolved: int) -> None:
        """Room for ``main`` more pending entries and ``resolved`` more resolved ones
        (doubling, within ``capacity``)."""
        size, rsize = int(self._meta[_SIZE]), int(self._meta[_RSIZE])
        need_m = min(self.capacity, size + main)
        need_r = min(self.capacity, rsize + resolved)
        have_m, have_r = len(self._m["kind"]), len(self._r["key"])
        if need_m > have_m or need_r > have_r:
            if need_m > have_m:
                live = self._ordered(self._m, int(self._meta[_HEAD]), size, tuple(self._m))
                self._m = self._main_ring(min(self.capacity, max(need_m, 2 * have_m)))
                for k, v in live.items():
                    self._m[k][:size] = v
                self._meta[_HEAD] = 0
            if need_r > have_r:
                live = self._ordered(self._r, int(self._meta[_RHEAD]), rsize, _RING)
                self._r = self._resolved_ring(min(self.capacity, max(need_r, 2 * have_r)))
                for k, v in live.items():
                    self._r[k][:rsize] = v
                self._meta[_RHEAD] = 0
            # Entries moved: the table's slot numbers are rebuilt, not patched.
            self._table = new_table(max(len(self._m["kind"]) + len(self._r["key"]),
                                    len(self._table) // 2))
            _rebuild(self._table, self._m["kind"], self._m["key"], self._r["key"],
                     self._r["alive"], self._meta)
        else:
            self._table = reserve(self._table, need_m + need_r)

    def binary(
        self,
        codes: npt.NDArray[np.int8],
        ts: npt.NDArray[np.int64],
        pair: npt.NDArray[np.uint64],
        user_row: npt.NDArray[np.int64],
        item_row: npt.NDArray[np.int64],
        user_key: npt.NDArray[np.uint64],
        item_key: npt.NDArray[np.uint64],
        holdout: npt.NDArray[np.bool_],
        indptr: npt.NDArray[np.int64],
        fidx: npt.NDArray[np.int64],
        fval: npt.NDArray[np.float32],
    ) -> BinaryLabels:
        """Positives of this batch and the impressions resolved as negatives, in order."""
        n = len(codes)
        self._reserve(n, n)  # each event adds at most one entry, and evicts at most one
        m, r = self._m, self._r
        early = _out_buffers(n, self.max_features)
        positives, n_early = _binary(
            np.ascontiguousarray(codes, dtype=np.int8), np.ascontiguousarray(ts, dtype=np.int64),
            np.ascontiguousarray(pair, dtype=np.uint64), np.asarray(user_row, dtype=np.int64),
            np.asarray(item_row, dtype=np.int64), np.asarray(user_key, dtype=np.uint64),
            np.asarray(item_key, dtype=np.uint64), np.asarray(holdout, dtype=np.bool_),
            np.asarray(indptr, dtype=np.int64), np.asarray(fidx, dtype=np.int64),
            np.asarray(fval, dtype=np.float32), self.window, self.capacity,
            self._table, m["kind"], m["key"], m["ts"], m["user"], m["item"],
            m["ukey"], m["ikey"], m["hold"], m["nf"], m["fidx"], m["fval"],
            r["key"], r["ts"], r["alive"], self._meta, *early,
        )
        due = _count_due(self.window, m["kind"], m["ts"], self._meta)
        if due:
            # Each negative resolved by the sweep is remembered in the resolved ring.
            self._reserve(0, due)
            m, r = self._m, self._r
        swept = _out_buffers(due, self.max_features)
        n_swept = _sweep(
            self.window, self.capacity, self._table, m["kind"], m["key"], m["ts"], m["user"],
            m["item"], m["ukey"], m["ikey"], m["hold"], m["nf"], m["fidx"], m["fval"],
            r["key"], r["ts"], r["alive"], self._meta, *swept,
        )
        cols = [np.concatenate([a[:n_early], b[:n_swept]]) for a, b in zip(early, swept,
                                                                           strict=True)]
        return BinaryLabels(positives, *cols)

    # -- state ----------------------------------------------------------------------------

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Ring contents oldest first, features unpadded (the lookup table is rebuilt on
        load): proportional to the entries held, not to ``max_pending``."""
        size, rsize = int(self._meta[_SIZE]), int(self._meta[_RSIZE])
        main = self._ordered(self._m, int(self._meta[_HEAD]), size, _MAIN)
        fidx, fval = _pack_features(main["nf"], self._m["fidx"], self._m["fval"],
                                    int(self._meta[_HEAD]))
        arrays = {f"m_{k}": v for k, v in main.items()}
        arrays |= {"m_fidx": fidx, "m_fval": fval}
        arrays |= {f"r_{k}": v for k, v in
                   self._ordered(self._r, int(self._meta[_RHEAD]), rsize, _RING).items()}
        meta = {"capacity": self.capacity, "max_features": self.max_features,
                "watermark": int(self._meta[_WATERMARK]),
                "counters": self.counters()}
        return arrays, meta

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        if (meta.get("capacity"), meta.get("max_features")) != (self.capacity,
                                                                 self.max_features):
            raise ValueError(
                f"pending-impression state is for max_pending={meta.get('capacity')} and "
                f"max_pending_features={meta.get('max_features')}; this one has "
                f"{self.capacity} and {self.max_features}: restore with the same settings"
            )
        size, rsize = len(arrays["m_kind"]), len(arrays["r_key"])
        if max(size, rsize) > self.capacity:
            raise ValueError(f"pending-impression state holds {max(size, rsize)} entries, "
                             f"more than max_pending={self.capacity}")
        self._m = self._main_ring(min(self.capacity, max(size, _INITIAL)))
        self._r = self._resolved_ring(min(self.capacity, max(rsize, _INITIAL)))
        for k in _MAIN:
            self._m[k][:size] = arrays[f"m_{k}"]
        for k in _RING:
            self._r[k][:rsize] = arrays[f"r_{k}"]
        _unpack_features(self._m["nf"][:size], np.asarray(arrays["m_fidx"], np.int32),
                         np.asarray(arrays["m_fval"], np.float32), self._m["fidx"],
                         self._m["fval"])
        self._meta[:] = 0
        self._meta[_SIZE], self._meta[_RSIZE] = size, rsize
        self._meta[_WATERMARK] = int(meta["watermark"])
        self._meta[_NPENDING] = int((self._m["kind"][:size] == _PENDING).sum())
        for name, slot in _COUNTERS.items():
            self._meta[slot] = int(meta["counters"][name])
        self._table = new_table(len(self._m["kind"]) + len(self._r["key"]))
        _rebuild(self._table, self._m["kind"], self._m["key"], self._r["key"],
                 self._r["alive"], self._meta)
