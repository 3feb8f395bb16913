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
from service.preprocess.table import find, insert, new_table, nonzero, remove, value_at

IMPRESSION = EventType.IMPRESSION.code
CLICK = EventType.CLICK.code
ADD_TO_CART = EventType.ADD_TO_CART.code
PURCHASE = EventType.PURCHASE.code
RATING = EventType.RATING.code

_INT64_MIN = np.iinfo(np.int64).min
_DEAD, _PENDING, _CLICKED = 0, 1, 2
# meta slots
(_HEAD, _SIZE, _RHEAD, _RSIZE, _WATERMARK, _LATE, _NEG, _EVICTED, _MERGED, _ABSORBED,
 _CONVERTED, _TRUNCATED) = range(12)
_COUNTERS: dict[str, int] = {
    "late_clicks": _LATE, "negatives_emitted": _NEG, "pending_evicted": _EVICTED,
    "impressions_merged": _MERGED, "impressions_absorbed": _ABSORBED,
    "impressions_converted": _CONVERTED, "features_truncated": _TRUNCATED,
}


@njit(cache=True)
def _remember_resolved(
    key: np.uint64, ts: int, table: Any, r_key: Any, r_ts: Any, r_alive: Any,
    meta: Any, p: int,
) -> None:
    cap = len(r_key)
    if meta[_RSIZE] == cap:
        h = meta[_RHEAD]
        if r_alive[h]:
            remove(table, r_key[h])
        meta[_RHEAD] = (h + 1) % cap
        meta[_RSIZE] -= 1
    t = (meta[_RHEAD] + meta[_RSIZE]) % cap
    r_key[t] = key
    r_ts[t] = ts
    r_alive[t] = True
    insert(table, key, p + t)
    meta[_RSIZE] += 1


@njit(cache=True)
def _pop_head(
    emit: bool, table: Any, m_kind: Any, m_key: Any, m_ts: Any, m_user: Any,
    m_item: Any, m_ukey: Any, m_ikey: Any, m_hold: Any, m_nf: Any, m_fidx: Any, m_fval: Any,
    r_key: Any, r_ts: Any, r_alive: Any, meta: Any,
    o_user: Any, o_item: Any, o_ukey: Any, o_ikey: Any, o_ts: Any, o_hold: Any, o_nf: Any,
    o_fidx: Any, o_fval: Any, n_out: int,
) -> int:
    """Drop the oldest ring entry; a pending impression is written out as a negative."""
    p = len(m_kind)
    h = meta[_HEAD]
    kind = m_kind[h]
    if kind != _DEAD:
        remove(table, m_key[h])
    if kind == _PENDING and emit:
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
        _remember_resolved(m_key[h], m_ts[h], table, r_key, r_ts, r_alive, meta, p)
    m_kind[h] = _DEAD
    meta[_HEAD] = (h + 1) % p
    meta[_SIZE] -= 1
    return n_out


@njit(cache=True)
def _binary(
    codes: Any, ts: Any, pair: Any, user_row: Any, item_row: Any, user_key: Any, item_key: Any,
    hold: Any, indptr: Any, fidx: Any, fval: Any, window: int,
    table: Any, m_kind: Any, m_key: Any, m_ts: Any, m_user: Any, m_item: Any,
    m_ukey: Any, m_ikey: Any, m_hold: Any, m_nf: Any, m_fidx: Any, m_fval: Any,
    r_key: Any, r_ts: Any, r_alive: Any, meta: Any,
    o_user: Any, o_item: Any, o_ukey: Any, o_ikey: Any, o_ts: Any, o_hold: Any, o_nf: Any,
    o_fidx: Any, o_fval: Any,
) -> tuple[Any, int]:
    p = len(m_kind)
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
            if slot >= 0 and slot < p:
                if m_kind[slot] == _PENDING:
                    meta[_MERGED] += 1
                    continue
                # A remembered click: absorbs this impression if inside its window.
                if t <= m_ts[slot] <= t + window:
                    meta[_ABSORBED] += 1
                    continue
                remove(table, key)
                m_kind[slot] = _DEAD
            elif slot >= p:
                remove(table, key)
                r_alive[slot - p] = False
            kind = _PENDING
        elif c in (CLICK, ADD_TO_CART, PURCHASE):
            positives[n_pos] = i
            n_pos += 1
            if slot >= 0 and slot < p:
                if m_kind[slot] == _PENDING:
                    if m_ts[slot] <= t <= m_ts[slot] + window:
                        meta[_CONVERTED] += 1
                        m_kind[slot] = _CLICKED  # remembered, for impressions arriving late
                        m_ts[slot] = t
                    elif t > m_ts[slot] + window:
                        meta[_LATE] += 1
                # A repeated click keeps the first click's time: refreshing it in place
                # would hold the ring's head back and delay every negative behind it.
                continue
            if slot >= p:
                meta[_LATE] += 1  # its impression was already emitted as a negative
                remove(table, key)
                r_alive[slot - p] = False
                continue
            kind = _CLICKED
        else:
            continue
        if meta[_SIZE] == p:
            n_out = _pop_head(True, table, m_kind, m_key, m_ts, m_user, m_item, m_ukey,
                              m_ikey, m_hold, m_nf, m_fidx, m_fval, r_key, r_ts, r_alive, meta,
                              o_user, o_item, o_ukey, o_ikey, o_ts, o_hold, o_nf, o_fidx,
                              o_fval, n_out)
            meta[_EVICTED] += 1
        tail = (meta[_HEAD] + meta[_SIZE]) % p
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
    p = len(m_kind)
    due = 0
    for k in range(meta[_SIZE]):
        h = (meta[_HEAD] + k) % p
        if m_kind[h] == _DEAD:
            continue
        if m_ts[h] + window >= meta[_WATERMARK]:
            break
        if m_kind[h] == _PENDING:
            due += 1
    return due


@njit(cache=True)
def _sweep(
    window: int, table: Any, m_kind: Any, m_key: Any, m_ts: Any, m_user: Any,
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
        n_out = _pop_head(True, table, m_kind, m_key, m_ts, m_user, m_item, m_ukey,
                          m_ikey, m_hold, m_nf, m_fidx, m_fval, r_key, r_ts, r_alive, meta,
                          o_user, o_item, o_ukey, o_ikey, o_ts, o_hold, o_nf, o_fidx, o_fval,
                          n_out)
    # Resolved negatives are remembered one more window, to count late clicks.
    cap = len(r_key)
    while meta[_RSIZE] > 0:
        h = meta[_RHEAD]
        if r_alive[h] and r_ts[h] + 2 * window >= w:
            break
        if r_alive[h]:
            remove(table, r_key[h])
            r_alive[h] = False
        meta[_RHEAD] = (h + 1) % cap
        meta[_RSIZE] -= 1
    return n_out


@njit(cache=True)
def _rebuild(table: Any, m_kind: Any, m_key: Any, r_key: Any, r_alive: Any,
             meta: Any) -> None:
    p = len(m_kind)
    for k in range(meta[_SIZE]):
        h = (meta[_HEAD] + k) % p
        if m_kind[h] != _DEAD:
            insert(table, m_key[h], h)
    for k in range(meta[_RSIZE]):
        h = (meta[_RHEAD] + k) % len(r_key)
        if r_alive[h]:
            insert(table, r_key[h], p + h)


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
        p, f = self.capacity, self.max_features
        self._table = new_table(2 * p)
        # np.full rather than np.zeros: pages are touched now, not in the hot loop.
        self._m: dict[str, npt.NDArray[Any]] = {
            "kind": np.full(p, 0, np.int8), "key": np.full(p, 0, np.uint64),
            "ts": np.full(p, 0, np.int64), "user": np.full(p, 0, np.int64),
            "item": np.full(p, 0, np.int64), "ukey": np.full(p, 0, np.uint64),
            "ikey": np.full(p, 0, np.uint64), "hold": np.full(p, 0, np.bool_),
            "nf": np.full(p, 0, np.int64), "fidx": np.full((p, f), 0, np.int32),
            "fval": np.full((p, f), 0, np.float32),
        }
        # Impressions already emitted as negatives, remembered to recognise late clicks.
        self._r: dict[str, npt.NDArray[Any]] = {
            "key": np.full(p, 0, np.uint64), "ts": np.full(p, 0, np.int64),
            "alive": np.full(p, 0, np.bool_),
        }
        self._meta = np.zeros(12, dtype=np.int64)
        self._meta[_WATERMARK] = _INT64_MIN

    def relevant(self, codes: npt.NDArray[np.int8]) -> npt.NDArray[np.bool_]:
        """Events that make or may make examples for the task (the others are only counted)."""
        if self.task == "regression":
            return codes == RATING  # type: ignore[no-any-return]
        return codes != RATING  # type: ignore[no-any-return]

    @property
    def pending(self) -> int:
        """Impressions waiting for their window to close."""
        m = self._m
        head, size = int(self._meta[_HEAD]), int(self._meta[_SIZE])
        order = (head + np.arange(size)) % self.capacity
        return int((m["kind"][order] == _PENDING).sum())

    def counters(self) -> dict[str, int]:
        return {name: int(self._meta[k]) for name, k in _COUNTERS.items()}

    @property
    def nbytes(self) -> int:
        return (sum(a.nbytes for a in self._m.values()) + sum(a.nbytes for a in self._r.values())
                + self._table.nbytes)

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
        m, r = self._m, self._r
        n = len(codes)
        early = _out_buffers(n, self.max_features)
        positives, n_early = _binary(
            np.ascontiguousarray(codes, dtype=np.int8), np.ascontiguousarray(ts, dtype=np.int64),
            np.ascontiguousarray(pair, dtype=np.uint64), np.asarray(user_row, dtype=np.int64),
            np.asarray(item_row, dtype=np.int64), np.asarray(user_key, dtype=np.uint64),
            np.asarray(item_key, dtype=np.uint64), np.asarray(holdout, dtype=np.bool_),
            np.asarray(indptr, dtype=np.int64), np.asarray(fidx, dtype=np.int64),
            np.asarray(fval, dtype=np.float32), self.window,
            self._table, m["kind"], m["key"], m["ts"], m["user"], m["item"],
            m["ukey"], m["ikey"], m["hold"], m["nf"], m["fidx"], m["fval"],
            r["key"], r["ts"], r["alive"], self._meta, *early,
        )
        due = _count_due(self.window, m["kind"], m["ts"], self._meta)
        swept = _out_buffers(due, self.max_features)
        n_swept = _sweep(
            self.window, self._table, m["kind"], m["key"], m["ts"], m["user"],
            m["item"], m["ukey"], m["ikey"], m["hold"], m["nf"], m["fidx"], m["fval"],
            r["key"], r["ts"], r["alive"], self._meta, *swept,
        )
        cols = [np.concatenate([a[:n_early], b[:n_swept]]) for a, b in zip(early, swept,
                                                                           strict=True)]
        return BinaryLabels(positives, *cols)

    # -- state ----------------------------------------------------------------------------

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Ring contents oldest first (the lookup table is rebuilt on load)."""
        head, size = int(self._meta[_HEAD]), int(self._meta[_SIZE])
        rhead, rsize = int(self._meta[_RHEAD]), int(self._meta[_RSIZE])
        order = (head + np.arange(size)) % self.capacity
        rorder = (rhead + np.arange(rsize)) % self.capacity
        arrays = {f"m_{k}": v[order].copy() for k, v in self._m.items()}
        arrays |= {f"r_{k}": v[rorder].copy() for k, v in self._r.items()}
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
        for k, v in self._m.items():
            src = np.asarray(arrays[f"m_{k}"])
            v[...] = 0
            v[: len(src)] = src
        for k, v in self._r.items():
            src = np.asarray(arrays[f"r_{k}"])
            v[...] = 0
            v[: len(src)] = src
        self._meta[:] = 0
        self._meta[_SIZE] = len(arrays["m_kind"])
        self._meta[_RSIZE] = len(arrays["r_key"])
        self._meta[_WATERMARK] = int(meta["watermark"])
        for name, slot in _COUNTERS.items():
            self._meta[slot] = int(meta["counters"][name])
        self._table[:] = 0
        _rebuild(self._table, self._m["kind"], self._m["key"], self._r["key"],
                 self._r["alive"], self._meta)
