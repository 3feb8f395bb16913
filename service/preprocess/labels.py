"""Events to training labels: an impression becomes one example when its window closes.

``task="regression"``: each rating is an example with its value as target.

``task="binary"``: an example is an impression as it was when shown: its user and item
rows, its side features and its holdout flag, all as they were at impression time, and
its time. It waits ``attribution_window_ms`` of event time for a click, add-to-cart or
purchase by the same user on the same item; when the newest event time seen passes the
end of its window it is emitted once:

* as a positive (label 1) with the weight of the strongest positive that came inside the
  window (click 1, add-to-cart 2, purchase 4 by default; a click then a purchase is one
  example of weight 4);
* otherwise as a negative (label 0, ``impression_weight``).

Nothing a positive event carries or changes reaches the example: not its context or
feature maps (a click sent without context would otherwise be recognisable by that
alone), not a row its sighting admitted or recycled, not the holdout draw of its own
event id, not its time. Nor does the label decide *when* the example comes out: a
positive is held until its impression's window closes, like a negative. Emitting clicks
at once and negatives a window later lets timing alone give labels away to predict-then-
learn: the model has always learned a window's worth of positives more than negatives,
and the first window of a stream is positives only. On random clicks over ids only,
FTRL's progressive AUC was 0.56-0.62 that way, 0.50 with both held the same window. The
price is freshness: a click is learned up to one window after its impression.

Events out of order, and positives without an impression:

* a positive with no impression of its pair waiting to cover it (never published, not
  arrived yet, or the positive came after the window) waits one window from its own
  time, and an impression of the pair that arrives meanwhile and whose window holds the
  positive is *absorbed*: the example becomes that impression, as shown, with the
  positive's label. A positive still alone when its window closes is not learned
  (``positives_without_impression`` counts it): an example made of its own event would
  carry the maps the positive states, not an impression's (an action event gets no
  missing-value indicators either: see :mod:`~service.preprocess.features`), and a model
  learns to tell positives by that shape. On a real click log where most positives were
  alone (Open Bandit, a user cohort as the user), FTRL's progressive AUC was 0.93 with
  the labels *shuffled*. ``learn_positives_without_impression`` learns them (the
  default for ``bpr``, whose implicit feedback has no impressions: its negatives are
  sampled, so no shape gives a label away);
* a positive after its impression's window is a *late click*: its impression stays a
  negative (already emitted or not), the positive waits alone as above, and
  ``late_clicks`` counts it so the window can be tuned;
* a repeated impression of a pair waiting unclicked is merged into the first; more
  positives inside an example's window are merged into it (``clicks_merged``);
* the lookup finds a pair's newest entry only: an event that cannot join it (an
  impression after the click, a click outside the window) opens a new one, and the older
  entry is emitted as it stands when its window closes.

Entries wait in a ring of ``max_pending`` slots in arrival order; when it is full the
oldest is resolved early, positive or negative as it stands (``pending_evicted``).
Resolved negatives are remembered for one more window in a second ring of the same size,
to recognise late clicks.

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
>>> len(out.y)  # pair 1 was clicked, pair 2 not: both wait for their window to close
0
>>> out = lab.binary(codes=np.array([clk], dtype=np.int8), ts=np.array([500]),
...     pair=np.array([3], dtype=np.uint64), user_row=np.array([3]), item_row=np.array([1]),
...     user_key=np.array([13], dtype=np.uint64), item_key=np.array([21], dtype=np.uint64),
...     holdout=np.zeros(1, dtype=np.bool_), indptr=np.zeros(2, dtype=np.int64),
...     fidx=np.zeros(0, dtype=np.int64), fval=np.zeros(0, dtype=np.float32))
>>> out.ts.tolist(), out.y.tolist()  # time moved past 10 + 100: both impressions, in order
([0, 10], [1.0, 0.0])
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
# Entry kinds: an impression waiting unclicked, an impression with a positive, and a
# positive whose impression has not been seen (it waits for one to arrive late).
_DEAD, _PENDING, _CLICKED, _UNSEEN = 0, 1, 2, 3
# A table value at or above this is a slot of the resolved ring, below it of the main one.
_RESOLVED = 1 << 40
_INITIAL = 1024  # ring slots allocated before the first doubling
# meta slots
(_HEAD, _SIZE, _RHEAD, _RSIZE, _WATERMARK, _LATE, _NEG, _EVICTED, _MERGED, _ABSORBED,
 _CONVERTED, _TRUNCATED, _NPENDING, _CLICKS_MERGED, _ALONE, _UNLEARNED) = range(16)
_COUNTERS: dict[str, int] = {
    "late_clicks": _LATE, "negatives_emitted": _NEG, "pending_evicted": _EVICTED,
    "impressions_merged": _MERGED, "impressions_absorbed": _ABSORBED,
    "impressions_converted": _CONVERTED, "features_truncated": _TRUNCATED,
    "clicks_merged": _CLICKS_MERGED, "clicks_without_impression": _ALONE,
    "positives_without_impression": _UNLEARNED,
}
# Main ring columns, in the order of the ``ring`` tuple the kernels take (then fidx, fval).
_MAIN = ("kind", "key", "ts", "cts", "w", "user", "item", "ukey", "ikey", "hold", "nf")
_RING = ("key", "ts", "alive")

# The rings below hold at most ``cap`` entries (max_pending) but are allocated smaller and
# doubled by the caller before each batch, so that a batch never outgrows them: indices
# wrap at the allocated length, and only a full-grown ring ever reaches ``cap``.
#
# Kernels take the rings as tuples: ``ring`` = the main ring's _MAIN columns then fidx and
# fval; ``resolved`` = the _RING columns; ``event`` = the batch's user_row, item_row,
# user_key, item_key, holdout, indptr, fidx, fval; ``out`` = the emitted examples' user,
# item, user_key, item_key, ts, holdout, y, weight, nf, fidx, fval.


@njit(cache=True)
def _remember_resolved(key: np.uint64, ts: int, cap: int, table: Any, resolved: Any,
                       meta: Any) -> None:
    r_key, r_ts, r_alive = resolved
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
def _store(slot: int, i: int, event: Any, ring: Any, meta: Any) -> None:
    """Event ``i``'s rows, keys, holdout flag and side features (truncated to the ring's
    width) into ring slot ``slot``."""
    user_row, item_row, user_key, item_key, hold, indptr, fidx, fval = event
    m_user, m_item, m_ukey, m_ikey, m_hold, m_nf, m_fidx, m_fval = ring[5:]
    m_user[slot] = user_row[i]
    m_item[slot] = item_row[i]
    m_ukey[slot] = user_key[i]
    m_ikey[slot] = item_key[i]
    m_hold[slot] = hold[i]
    a, b = indptr[i], indptr[i + 1]
    nf = min(b - a, m_fidx.shape[1])
    if b - a > nf:
        meta[_TRUNCATED] += 1
    m_fidx[slot, :nf] = fidx[a:a + nf]
    m_fval[slot, :nf] = fval[a:a + nf]
    m_nf[slot] = nf


@njit(cache=True)
def _pop_head(cap: int, neg_weight: float, learn_alone: bool, table: Any, ring: Any,
              resolved: Any, meta: Any, out: Any, n_out: int) -> int:
    """Drop the oldest ring entry, writing it out as an example unless it is dead (or a
    positive no impression claimed, unless ``learn_alone``)."""
    (m_kind, m_key, m_ts, _, m_w, m_user, m_item, m_ukey, m_ikey, m_hold, m_nf, m_fidx,
     m_fval) = ring
    o_user, o_item, o_ukey, o_ikey, o_ts, o_hold, o_y, o_w, o_nf, o_fidx, o_fval = out
    h = meta[_HEAD]
    kind = m_kind[h]
    if kind != _DEAD:
        # The table holds the pair's newest entry only: leave it if a newer one replaced
        # this one.
        s = find(table, m_key[h])
        newest = s >= 0 and value_at(table, s) == h
        if newest:
            remove(table, m_key[h])
    if kind == _UNSEEN and not learn_alone:
        # A positive no impression claimed: it has no "as shown" to be. Built from the
        # positive's own event it is recognisable by its shape (the maps a click states
        # are not an impression's), and predict-then-learn then scores it by shape: the
        # leak is counted, not learned.
        meta[_UNLEARNED] += 1
    elif kind != _DEAD:
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
        if kind == _PENDING:
            o_y[n_out] = 0.0
            o_w[n_out] = neg_weight
            meta[_NEG] += 1
            meta[_NPENDING] -= 1
            if newest:
                _remember_resolved(m_key[h], m_ts[h], cap, table, resolved, meta)
        else:
            o_y[n_out] = 1.0
            o_w[n_out] = m_w[h]
        n_out += 1
    m_kind[h] = _DEAD
    meta[_HEAD] = (h + 1) % len(m_kind)
    meta[_SIZE] -= 1
    return n_out


@njit(cache=True)
def _binary(
    codes: Any, ts: Any, pair: Any, event: Any, weights: Any, window: int, cap: int,
    learn_alone: bool, table: Any, ring: Any, resolved: Any, meta: Any, out: Any,
) -> int:
    m_kind, m_key, m_ts, m_cts, m_w = ring[:5]
    r_alive = resolved[2]
    length = len(m_kind)
    n_out = 0
    for i in range(len(codes)):
        c = codes[i]
        t = ts[i]
        if t > meta[_WATERMARK]:
            meta[_WATERMARK] = t
        if c != IMPRESSION and c != CLICK and c != ADD_TO_CART and c != PURCHASE:
            continue
        key = nonzero(pair[i])
        s = find(table, key)
        slot = value_at(table, s) if s >= 0 else -1
        if slot >= _RESOLVED:
            # The pair's impression was emitted as a negative: a positive now is late, an
            # impression now a new one. Either way the pair starts afresh.
            remove(table, key)
            r_alive[slot - _RESOLVED] = False
            if c != IMPRESSION:
                meta[_LATE] += 1
            slot = -1
        wc = weights[c]
        if c == IMPRESSION:
            if slot >= 0:
                if m_kind[slot] == _PENDING:
                    meta[_MERGED] += 1
                    continue
                if t <= m_cts[slot] <= t + window:
                    # The pair's positive lies inside this impression's window too.
                    meta[_ABSORBED] += 1
                    if m_kind[slot] == _UNSEEN:
                        # The positive waited for its impression: this one, as shown.
                        _store(slot, i, event, ring, meta)
                        m_ts[slot] = t
                        m_kind[slot] = _CLICKED
                    continue
            kind = _PENDING
        else:
            if slot >= 0:
                k = m_kind[slot]
                # A positive joins an impression's window; positives without one join
                # each other within a window either way (out of order among themselves).
                start = m_ts[slot] - window if k == _UNSEEN else m_ts[slot]
                if start <= t <= m_ts[slot] + window:
                    if k == _PENDING:
                        # Only the label and weight change: the entry keeps the impression's
                        # time and its place in the ring, so it comes out when it would
                        # have as a negative, and is scored by the same model.
                        meta[_CONVERTED] += 1
                        meta[_NPENDING] -= 1
                        m_kind[slot] = _CLICKED
                        m_cts[slot] = t
                        m_w[slot] = wc
                    else:
                        meta[_CLICKS_MERGED] += 1
                        m_w[slot] = max(m_w[slot], wc)
                    continue
                if k == _PENDING and t > m_ts[slot] + window:
                    meta[_LATE] += 1
            kind = _UNSEEN
            meta[_ALONE] += 1
        if meta[_SIZE] == cap:
            n_out = _pop_head(cap, weights[IMPRESSION], learn_alone, table, ring, resolved,
                              meta, out, n_out)
            meta[_EVICTED] += 1
        tail = (meta[_HEAD] + meta[_SIZE]) % length
        m_kind[tail] = kind
        m_key[tail] = key
        m_ts[tail] = t
        m_cts[tail] = t
        m_w[tail] = wc if kind == _UNSEEN else 0.0
        _store(tail, i, event, ring, meta)
        if kind == _PENDING:
            meta[_NPENDING] += 1
        insert(table, key, tail)  # replaces an older entry of the pair, if any
        meta[_SIZE] += 1
    return n_out


@njit(cache=True)
def _count_due(window: int, m_kind: Any, m_ts: Any, meta: Any) -> int:
    """Entries the sweep will emit now (the ring is in arrival order: it stops at the
    first live entry whose window is still open)."""
    length = len(m_kind)
    due = 0
    for k in range(meta[_SIZE]):
        h = (meta[_HEAD] + k) % length
        if m_kind[h] == _DEAD:
            continue
        if m_ts[h] + window >= meta[_WATERMARK]:
            break
        due += 1
    return due


@njit(cache=True)
def _sweep(window: int, cap: int, neg_weight: float, learn_alone: bool, table: Any,
           ring: Any, resolved: Any, meta: Any, out: Any) -> int:
    m_kind, m_ts = ring[0], ring[2]
    r_key, r_ts, r_alive = resolved
    n_out = 0
    w = meta[_WATERMARK]
    while meta[_SIZE] > 0:
        h = meta[_HEAD]
        if m_kind[h] != _DEAD and m_ts[h] + window >= w:
            break
        n_out = _pop_head(cap, neg_weight, learn_alone, table, ring, resolved, meta, out,
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
    """The examples :meth:`Labeler.binary` resolved in one batch, in the order their
    windows closed (possibly opened in earlier batches).

    Each is an impression as stored when it was shown (or a positive that never met its
    impression): rows and the keys that owned them then, event time, holdout flag, label
    ``y`` and ``weight``, and side features in fixed-width rows of ``nf`` entries.
    """

    user: npt.NDArray[np.int64]
    item: npt.NDArray[np.int64]
    user_key: npt.NDArray[np.uint64]
    item_key: npt.NDArray[np.uint64]
    ts: npt.NDArray[np.int64]
    holdout: npt.NDArray[np.bool_]
    y: npt.NDArray[np.float32]
    weight: npt.NDArray[np.float32]
    nf: npt.NDArray[np.int64]
    fidx: npt.NDArray[np.int32]
    fval: npt.NDArray[np.float32]


def _out_buffers(n: int, f: int) -> tuple[Any, ...]:
    return (np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n, np.uint64),
            np.zeros(n, np.uint64), np.zeros(n, np.int64), np.zeros(n, np.bool_),
            np.zeros(n, np.float32), np.zeros(n, np.float32), np.zeros(n, np.int64),
            np.zeros((n, f), np.int32), np.zeros((n, f), np.float32))


class Labeler:
    """Turns events into labelled examples; holds the pending impressions of the binary task.

    The rings of pending entries (impressions, clicked or not, and positives waiting for
    their impression) and of resolved negatives start small and double as they fill, up
    to ``max_pending`` entries each; :meth:`get_state` exports only the entries between
    head and tail, with each entry's features unpadded.

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
        self.learn_alone = bool(config.learn_positives_without_impression)
        self._meta = np.zeros(16, dtype=np.int64)
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
            "ts": np.zeros(length, np.int64), "cts": np.zeros(length, np.int64),
            "w": np.zeros(length, np.float32), "user": np.zeros(length, np.int64),
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
        """Impressions waiting unclicked for their window to close."""
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
        """The examples whose windows closed in this batch (or that a full ring resolved
        early), in order."""
        n = len(codes)
        self._reserve(n, n)  # each event adds at most one entry, and evicts at most one
        event = (np.asarray(user_row, dtype=np.int64), np.asarray(item_row, dtype=np.int64),
                 np.asarray(user_key, dtype=np.uint64), np.asarray(item_key, dtype=np.uint64),
                 np.asarray(holdout, dtype=np.bool_), np.asarray(indptr, dtype=np.int64),
                 np.asarray(fidx, dtype=np.int64), np.asarray(fval, dtype=np.float32))
        early = _out_buffers(n, self.max_features)
        n_early = _binary(
            np.ascontiguousarray(codes, dtype=np.int8), np.ascontiguousarray(ts, dtype=np.int64),
            np.ascontiguousarray(pair, dtype=np.uint64), event, self.weights, self.window,
            self.capacity, self.learn_alone, self._table, self._ring(), self._resolved(),
            self._meta, early,
        )
        due = _count_due(self.window, self._m["kind"], self._m["ts"], self._meta)
        if due:
            # Each negative resolved by the sweep is remembered in the resolved ring.
            self._reserve(0, due)
        swept = _out_buffers(due, self.max_features)
        n_swept = _sweep(self.window, self.capacity, self.weights[IMPRESSION],
                         self.learn_alone, self._table, self._ring(), self._resolved(),
                         self._meta, swept)
        cols = [np.concatenate([a[:n_early], b[:n_swept]]) for a, b in zip(early, swept,
                                                                           strict=True)]
        return BinaryLabels(*cols)

    def _ring(self) -> tuple[npt.NDArray[Any], ...]:
        return (*(self._m[k] for k in _MAIN), self._m["fidx"], self._m["fval"])

    def _resolved(self) -> tuple[npt.NDArray[Any], ...]:
        return tuple(self._r[k] for k in _RING)

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
        # Entries are saved packed (each with its own feature count), so a state saved with
        # fewer features per entry fits a wider ring as it is: raising
        # max_pending_features (its default went from 16 to 64) keeps checkpoints usable.
        saved_features = int(meta.get("max_features", -1))
        if meta.get("capacity") != self.capacity or not 0 <= saved_features <= self.max_features:
            raise ValueError(
                f"pending-impression state is for max_pending={meta.get('capacity')} and "
                f"max_pending_features={meta.get('max_features')}; this one has "
                f"{self.capacity} and {self.max_features}: restore with the same max_pending "
                "and at least as many max_pending_features"
            )
        if "m_cts" not in arrays:
            arrays = _from_format_2(arrays)
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
            self._meta[slot] = int(meta["counters"].get(name, 0))  # format 2 had fewer
        self._table = new_table(len(self._m["kind"]) + len(self._r["key"]))
        _rebuild(self._table, self._m["kind"], self._m["key"], self._r["key"],
                 self._r["alive"], self._meta)


def _from_format_2(arrays: dict[str, npt.NDArray[Any]]) -> dict[str, npt.NDArray[Any]]:
    """A ring saved before positives waited in it (preprocessor state format 2), in
    today's columns. Its pending impressions carry over as they are. Its clicked entries
    (kind 2 then, with no features) were positives emitted already, kept only to absorb
    late impressions: they are dropped, so such an impression becomes a negative."""
    kind = np.asarray(arrays["m_kind"], np.int8).copy()
    kind[kind == _CLICKED] = _DEAD
    return {**arrays, "m_kind": kind, "m_cts": np.asarray(arrays["m_ts"], np.int64).copy(),
            "m_w": np.zeros(len(kind), np.float32)}
