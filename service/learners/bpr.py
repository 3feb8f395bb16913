"""BPR-MF: implicit-feedback ranking from positives and sampled negatives.

Implicit feedback (clicks, purchases, plays) only says what a user engaged with. BPR
learns that a user prefers an observed item ``i`` over an item ``j`` drawn at random,
maximising ``ln sigmoid(x_ui - x_uj)`` with ``x_ui = b_i + <p_u, q_i>``. Each positive
event draws one negative inside the compiled kernel from a SplitMix64 generator whose state is
part of the model's arrays, so a run is reproducible from a seed or from a checkpoint.

The score returned for each event (before learning from it) is ``x_hat_ui``; use sampled
ranking metrics (``service.evaluation``) to judge it.

References
----------
Rendle et al. (2009). BPR: Bayesian personalized ranking from implicit feedback. UAI.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from numba import njit

from service.examples import ExampleBatch
from service.learners.array_learner import ArrayLearner, FloatArray, IntArray
from service.learners.base import Task
from service.learners.layout import RowSpan
from service.learners.optim import (
    ADAGRAD_EPS,
    FASTMATH,
    Optimizer,
    all_finite,
    clip,
    finite,
    scheduled_lr,
    step_at,
    store,
    store_row,
)
from service.learners.rng import STREAM_ITEMS, STREAM_USERS, fill_init, init_rows, uniform_int
from service.learners.row_slots import FactorScratch, apply_slots, tally
from service.learners.strategies import Strategy

F32 = npt.NDArray[np.float32]
U64 = npt.NDArray[np.uint64]
I32 = npt.NDArray[np.int32]


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _score(bi: F32, P: F32, Q: F32, u: int, i: int) -> float:
    dot = np.float32(0.0)
    for f in range(P.shape[1]):
        dot += P[u, f] * Q[i, f]
    return bi[i] + dot


@njit(cache=True, inline="always")
def _negative(rng: U64, n_neg: int, i: int) -> int:
    """The negative of a pair with positive ``i``: uniform over the item rows
    ``1 .. n_neg - 1`` other than ``i``, drawn from the model's sampler ``rng`` (per event
    and micro-batch draw the same stream)."""
    j = uniform_int(rng, 1, n_neg - 1)
    if j >= i:
        j += 1
    return j


@njit(cache=True, inline="always")
def _pair_gradient(x: float, w: float, clip_g: float) -> float:
    """The loss gradient of a pair whose score difference is ``x = x_ui - x_uj``, with
    weight ``w``: ``d(-w ln sigmoid(x))/dx = -w sigmoid(-x)``, clipped; below -30 the
    sigmoid is 1 to double precision (and ``exp(-x)`` could overflow)."""
    return clip(-w / (1.0 + math.exp(x)) if x > -30 else -w, clip_g)


@njit(cache=True, fastmath=FASTMATH)
def _predict_kernel(user: IntArray, item: IntArray, bi: F32, P: F32, Q: F32,
                    out: F32) -> None:
    for n in range(len(user)):
        out[n] = _score(bi, P, Q, user[n], item[n])


@njit(cache=True, fastmath=FASTMATH)
def _learn_events(
    user: IntArray, item: IntArray, y: F32, w: F32, bi: F32, P: F32, Q: F32, abi: F32,
    aP: F32, aQ: F32, rng: U64, n_neg: int, lr: float, power_t: float, t0: int,
    adagrad: bool, l2: float, l2_bias: float, clip_g: float, out: F32, tp: F32, tq: F32,
    tj: F32, tap: F32, taq: F32, taj: F32,
) -> tuple[int, int]:
    k = P.shape[1]
    updates = 0
    skipped = 0
    for n in range(len(user)):
        u = user[n]
        i = item[n]
        xi = _score(bi, P, Q, u, i)
        out[n] = xi
        yn = y[n]
        wn = w[n]
        if not all_finite(yn, wn, xi):
            skipped += 1
            continue
        if wn <= 0.0 or yn <= 0.0 or i == 0 or n_neg < 3:
            continue
        j = _negative(rng, n_neg, i)
        g = _pair_gradient(xi - _score(bi, P, Q, u, j), wn, clip_g)
        eta = scheduled_lr(lr, power_t, t0 + updates)
        nbi, nabi = step_at(bi[i], g, l2_bias, abi, i, eta, adagrad)
        nbj, nabj = step_at(bi[j], -g, l2_bias, abi, j, eta, adagrad)
        total = nbi + nbj
        for f in range(k):
            pu = P[u, f]
            qi = Q[i, f]
            qj = Q[j, f]
            if u != 0:
                tp[f], tap[f] = step_at(pu, g * (qi - qj), l2, aP, (u, f), eta, adagrad)
            tq[f], taq[f] = step_at(qi, g * pu, l2, aQ, (i, f), eta, adagrad)
            tj[f], taj[f] = step_at(qj, -g * pu, l2, aQ, (j, f), eta, adagrad)
            total += tq[f] + tj[f] + (tp[f] if u != 0 else 0.0)
        if not finite(total):
            skipped += 1
            continue
        store(bi, abi, i, nbi, nabi, adagrad)
        store(bi, abi, j, nbj, nabj, adagrad)
        if u != 0:
            store_row(P, aP, u, tp, tap, adagrad)
        store_row(Q, aQ, i, tq, taq, adagrad)
        store_row(Q, aQ, j, tj, taj, adagrad)
        updates += 1
    return updates, skipped


@njit(cache=True, inline="always")
def _slot(slot: I32, rows: IntArray, count: I32, r: int, n: int) -> tuple[int, int]:
    """The slot of row ``r`` if more than one pair touches it (a new one, counted, if it
    has none yet), or -1; ``n`` is the number of slots in use, returned updated. Between
    the passes of :func:`_learn_segments` the map holds ``-1 - c`` for a row that ``c``
    pairs touch."""
    e = slot[r]
    if e >= 0:
        return e, n
    if e == -2:
        return -1, n
    slot[r] = n
    rows[n] = r
    count[n] = -1 - e
    return n, n + 1


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _learn_segments(
    bounds: IntArray, user: IntArray, item: IntArray, y: F32, w: F32, bi: F32, P: F32,
    Q: F32, abi: F32, aP: F32, aQ: F32, rng: U64, n_neg: int, lr: float, power_t: float,
    t0: int, adagrad: bool, l2: float, l2_bias: float, clip_g: float, out: F32,
    slot_u: I32, rows_u: IntArray, cnt_u: I32, gbu: F32, gbu2: F32, GU: F32, GU2: F32,
    slot_i: I32, rows_i: IntArray, cnt_i: I32, gbi: F32, gbi2: F32, GQ: F32, GQ2: F32,
    tmpa: F32, neg: IntArray, grad: F32, tp: F32, tq: F32, tj: F32, tap: F32, taq: F32,
    taj: F32,
) -> tuple[int, int]:
    """Micro-batches in two passes; see :class:`BPR` (``strategy``) for the design.

    Between the passes a row's map entry ``slot[r]`` is ``-1 - c`` for a row that ``c``
    learned pairs touch; pass 2 steps a row touched once in place and gives a slot
    (``>= 0``) only to a row touched more than once. Every entry is ``-1`` again after the
    mini-batch.
    """
    k = P.shape[1]
    l2f = np.float32(l2)
    l2b = np.float32(l2_bias)
    eps = np.float32(ADAGRAD_EPS)
    updates = 0
    skipped = 0
    for seg in range(len(bounds) - 1):
        lo = bounds[seg]
        hi = bounds[seg + 1]
        learned = 0
        # 1. Score each positive and its negative with the frozen parameters, drawing the
        #    negatives in the same order as per event (the sampler's stream does not
        #    depend on the strategy); count the rows each learned pair touches.
        for n in range(lo, hi):
            neg[n - lo] = -1
            u = user[n]
            i = item[n]
            xi = _score(bi, P, Q, u, i)
            out[n] = xi
            yn = y[n]
            wn = w[n]
            if not all_finite(yn, wn, xi):
                skipped += 1
                continue
            if wn <= 0.0 or yn <= 0.0 or i == 0 or n_neg < 3:
                continue
            j = _negative(rng, n_neg, i)
            g = np.float32(_pair_gradient(xi - _score(bi, P, Q, u, j), wn, clip_g))
            if not finite(g):
                skipped += 1
                continue
            neg[n - lo] = j
            grad[n - lo] = g
            slot_i[i] -= 1
            slot_i[j] -= 1
            if u != 0:
                slot_u[u] -= 1
            learned += 1
        eta = scheduled_lr(lr, power_t, t0 + updates + learned)
        rate = np.float32(eta)
        nu = 0
        ni = 0
        rejected = 0
        # 2. Per pair, rows touched once take their step now (exactly the per-event step:
        #    no other pair of the mini-batch reads them) and rows touched more often add
        #    the pair's gradient to their slot. Every gradient reads frozen values: a
        #    row is written here only by the one pair that touches it, after its
        #    gradients are computed.
        for n in range(lo, hi):
            j = neg[n - lo]
            if j < 0:
                continue
            u = user[n]
            i = item[n]
            g = grad[n - lo]
            # The slot of each row touched more than once; -1 for a row touched once (and
            # for the unknown user, which is never learned).
            su = -1
            if u != 0:
                su, nu = _slot(slot_u, rows_u, cnt_u, u, nu)
            sis, ni = _slot(slot_i, rows_i, cnt_i, i, ni)
            sjs, ni = _slot(slot_i, rows_i, cnt_i, j, ni)
            # New values of the rows touched once (checked before any is written).
            total = np.float32(0.0)
            nbi = np.float32(0.0)
            nabi = np.float32(0.0)
            nbj = np.float32(0.0)
            nabj = np.float32(0.0)
            # The factor rows' steps stay written out, the AdaGrad and SGD loops apart
            # (float32, so that each vectorises): through step_at, AdaGrad ran 3% slower
            # with the loops apart and 16% slower with one loop branching per factor.
            if sis < 0:
                nbi, nabi = step_at(bi[i], g, l2b, abi, i, rate, adagrad, eps)
                total += nbi
                if adagrad:
                    for f in range(k):
                        q = Q[i, f]
                        gq = g * P[u, f] + l2f * q
                        a = aQ[i, f] + gq * gq
                        taq[f] = a
                        tq[f] = q - rate * gq / (np.sqrt(a) + eps)
                        total += tq[f]
                else:
                    for f in range(k):
                        q = Q[i, f]
                        tq[f] = q - rate * (g * P[u, f] + l2f * q)
                        total += tq[f]
            if sjs < 0:
                nbj, nabj = step_at(bi[j], -g, l2b, abi, j, rate, adagrad, eps)
                total += nbj
                if adagrad:
                    for f in range(k):
                        q = Q[j, f]
                        gq = -g * P[u, f] + l2f * q
                        a = aQ[j, f] + gq * gq
                        taj[f] = a
                        tj[f] = q - rate * gq / (np.sqrt(a) + eps)
                        total += tj[f]
                else:
                    for f in range(k):
                        q = Q[j, f]
                        tj[f] = q - rate * (-g * P[u, f] + l2f * q)
                        total += tj[f]
            user_once = u != 0 and su < 0
            if user_once:
                if adagrad:
                    for f in range(k):
                        p = P[u, f]
                        gp = g * (Q[i, f] - Q[j, f]) + l2f * p
                        a = aP[u, f] + gp * gp
                        tap[f] = a
                        tp[f] = p - rate * gp / (np.sqrt(a) + eps)
                        total += tp[f]
                else:
                    for f in range(k):
                        p = P[u, f]
                        tp[f] = p - rate * (g * (Q[i, f] - Q[j, f]) + l2f * p)
                        total += tp[f]
            if not finite(total):
                # The pair is skipped: its once-touched rows keep their values and its
                # slots lose one example.
                rejected += 1
                if su >= 0:
                    cnt_u[su] -= 1
                if sis >= 0:
                    cnt_i[sis] -= 1
                if sjs >= 0:
                    cnt_i[sjs] -= 1
            else:
                # Gradients into the slots first: they read the frozen rows written below.
                # (AdaGrad steps also need the sums of squares; SGD does not read them.)
                if su >= 0:
                    for f in range(k):
                        GU[su, f] += g * (Q[i, f] - Q[j, f])
                    if adagrad:
                        for f in range(k):
                            gp = g * (Q[i, f] - Q[j, f])
                            GU2[su, f] += gp * gp
                if sis >= 0:
                    gbi[sis] += g
                    for f in range(k):
                        GQ[sis, f] += g * P[u, f]
                    if adagrad:
                        gbi2[sis] += g * g
                        for f in range(k):
                            gq = g * P[u, f]
                            GQ2[sis, f] += gq * gq
                if sjs >= 0:
                    gbi[sjs] -= g
                    for f in range(k):
                        GQ[sjs, f] -= g * P[u, f]
                    if adagrad:
                        gbi2[sjs] += g * g
                        for f in range(k):
                            gq = g * P[u, f]
                            GQ2[sjs, f] += gq * gq
                if sis < 0:
                    store(bi, abi, i, nbi, nabi, adagrad)
                    store_row(Q, aQ, i, tq, taq, adagrad)
                if sjs < 0:
                    store(bi, abi, j, nbj, nabj, adagrad)
                    store_row(Q, aQ, j, tj, taj, adagrad)
                if user_once:
                    store_row(P, aP, u, tp, tap, adagrad)
            # Once-touched rows are done with: their map entries go back to -1.
            if sis < 0:
                slot_i[i] = -1
            if sjs < 0:
                slot_i[j] = -1
            if user_once:
                slot_u[u] = -1
        # 3. One step per row touched more than once (row_slots.apply_slots).
        # Users have no bias: their slots pass the item bias arrays, which are not read.
        rej = apply_slots(slot_u, rows_u, cnt_u, nu, gbu, gbu2, GU, GU2, bi, P, abi, aP, eta,
                          adagrad, False, 0.0, 0.0, l2, tmpa)
        rej += apply_slots(slot_i, rows_i, cnt_i, ni, gbi, gbi2, GQ, GQ2, bi, Q, abi, aQ,
                           eta, adagrad, True, 0.0, l2_bias, l2, tmpa)
        updates, skipped = tally(updates, skipped, learned, rejected + rej)
    return updates, skipped


class BPR(ArrayLearner):
    """BPR matrix factorisation with one uniformly sampled negative per positive.

    Events with ``y > 0`` are positives; others are scored but not learned from.

    Parameters
    ----------
    n_users, n_items, feature_bits
        Table sizes (``feature_bits`` is unused).
    n_factors
        Latent dimensions.
    init_std
        Standard deviation of the initial factors.
    l2_bias
        L2 decay of the item biases (the factors use ``optimizer.l2``).
    optimizer, seed, strategy, seen_per_user, ema_decay
        See :class:`~service.learners.array_learner.ArrayLearner`. With ``MicroBatch``
        every touched row takes one step per mini-batch along its mean gradient (as
        biased MF), the parameters frozen for the mini-batch and the negatives drawn in
        the same order as per event. The rows of a pair are mostly distinct within a
        mini-batch, so the kernel first scores the pairs and counts each row's pairs,
        then steps a row touched once in place (the per-event step: no other pair reads
        it) and gives a gradient slot (``row_slots``) only to rows touched more often:
        1.97x the per-event throughput on ``ratings``, where the slots for every row
        made it 0.86x.

    Negatives are drawn from the item rows in use (below the ``used_items`` high-water
    mark, which covers the current batch): rows no item id has reached yet are not items,
    and sampling them would waste updates and make every row of the table "used".

    Example
    -------
    >>> import numpy as np
    >>> from service.examples import ExampleBatch
    >>> rng = np.random.default_rng(0)
    >>> users = rng.integers(1, 100, 30_000)
    >>> items = np.where(users % 2 == 0, rng.integers(1, 10, 30_000),   # two tastes
    ...                  rng.integers(10, 20, 30_000))
    >>> model = BPR(n_users=100, n_items=20, n_factors=8)
    >>> _ = model.learn(ExampleBatch.from_arrays(users, items, np.ones(30_000)))
    >>> rows, _ = model.recommend(user=2, k=5, exclude_seen=False)
    >>> bool((rows < 10).all())     # an even user gets items 1..9
    True
    """

    model_type: ClassVar[str] = "bpr"
    task: Task = "ranking"
    PARAMETERS: ClassVar[tuple[str, ...]] = ("item_bias", "user_factors", "item_factors")

    def __init__(
        self,
        n_users: int,
        n_items: int,
        feature_bits: int = 18,
        *,
        n_factors: int = 32,
        init_std: float = 0.1,
        l2_bias: float = 0.0,
        optimizer: Optimizer | None = None,
        seed: int = 42,
        strategy: Strategy | None = None,
        seen_per_user: int = 16,
        ema_decay: float = 0.0,
    ) -> None:
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        if not (init_std >= 0 and math.isfinite(init_std)):
            raise ValueError(f"init_std must be a non-negative number, got {init_std}")
        if not (l2_bias >= 0 and math.isfinite(l2_bias)):
            raise ValueError(f"l2_bias must be a non-negative number, got {l2_bias}")
        self.n_factors = int(n_factors)
        self.init_std = float(init_std)
        self.l2_bias = float(l2_bias)
        super().__init__(n_users, n_items, feature_bits, optimizer=optimizer, seed=seed,
                         strategy=strategy, seen_per_user=seen_per_user, ema_decay=ema_decay)
        # Micro-batch scratch: slots of the users and items a mini-batch touches.
        self._scratch: FactorScratch | None = None

    @classmethod
    def default_optimizer(cls, task: str | None = None) -> Optimizer:
        return Optimizer(kind="sgd", learning_rate=0.05, l2=0.001, clip_gradient=10.0)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"n_factors": self.n_factors, "init_std": self.init_std, "l2_bias": self.l2_bias}

    def _allocate(self, rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
        # The factors are filled by _initialise, row by row from the seed.
        P = np.empty((self.n_users, self.n_factors), dtype=np.float32)
        Q = np.empty((self.n_items, self.n_factors), dtype=np.float32)
        adagrad = self.optimizer.adagrad
        return {
            "item_bias": np.zeros(self.n_items, dtype=np.float32),
            "user_factors": P,
            "item_factors": Q,
            "acc_item_bias": np.zeros(self.n_items if adagrad else 1, dtype=np.float32),
            "acc_user_factors": np.zeros(P.shape if adagrad else (1, 1), dtype=np.float32),
            "acc_item_factors": np.zeros(Q.shape if adagrad else (1, 1), dtype=np.float32),
            "sampler": np.array([rng.integers(0, 2**63 - 1)], dtype=np.uint64),
        }

    def _initialise(self, users_from: int, items_from: int, rest: bool) -> None:
        for name, stream, start in (("user_factors", STREAM_USERS, users_from),
                                    ("item_factors", STREAM_ITEMS, items_from)):
            table = self.arrays[name]
            fill_init(table[start:], self.seed, stream, start, self.init_std)
            if start == 0:
                table[0] = 0.0

    def row_spans(self) -> dict[str, tuple[RowSpan, ...]]:
        users: tuple[RowSpan, ...] = (RowSpan("users"),)
        items: tuple[RowSpan, ...] = (RowSpan("items"),)
        spans = {"item_bias": items, "user_factors": users, "item_factors": items}
        if self.optimizer.adagrad:  # otherwise the accumulators are 1-row placeholders
            spans |= {"acc_item_bias": items, "acc_user_factors": users,
                      "acc_item_factors": items}
        return spans

    def _predict(self, batch: ExampleBatch) -> FloatArray:
        a = self.arrays
        out = np.empty(len(batch), dtype=np.float32)
        _predict_kernel(batch.user, batch.item, a["item_bias"], a["user_factors"],
                        a["item_factors"], out)
        return out

    def _learn(self, batch: ExampleBatch, bounds: IntArray | None) -> tuple[FloatArray, int, int]:
        a = self.arrays
        o = self.optimizer
        out = np.empty(len(batch), dtype=np.float32)
        # Negatives come from rows 1..n_neg-1; a pair needs two candidates, so the range
        # (and with it the mark) is at least rows 1 and 2.
        self._advance_marks(0, 3)
        n_neg = self.used_items
        common = (a["item_bias"], a["user_factors"], a["item_factors"], a["acc_item_bias"],
                  a["acc_user_factors"], a["acc_item_factors"], a["sampler"], n_neg,
                  o.learning_rate, o.effective_power_t, self.n_updates, o.adagrad, o.l2,
                  self.l2_bias, o.clip_gradient, out)
        if bounds is None:
            t = np.empty((6, self.n_factors), dtype=np.float32)
            updates, skipped = _learn_events(batch.user, batch.item, batch.y, batch.weight,
                                             *common, t[0], t[1], t[2], t[3], t[4], t[5])
        else:
            size = int(np.diff(bounds).max())
            if self._scratch is None:
                self._scratch = FactorScratch(self.n_users, self.n_items, self.n_factors)
            # A positive and a negative item per example.
            su, GU, gbu, si, GQ, gbi, tmpa = self._scratch.arrays(size, 2 * size)
            k = self.n_factors
            # Per example: its negative (-1: not learned) and its loss gradient; the new
            # values of the rows a pair touches once.
            neg = np.empty(size, dtype=np.int64)
            grad = np.empty(size, dtype=np.float32)
            t = np.empty((6, k), dtype=np.float32)
            updates, skipped = _learn_segments(bounds, batch.user, batch.item, batch.y,
                                               batch.weight, *common, *su, gbu[0], gbu[1],
                                               GU[0], GU[1], *si, gbi[0], gbi[1], GQ[0],
                                               GQ[1], tmpa, neg, grad, t[0], t[1], t[2],
                                               t[3], t[4], t[5])
        return out, int(updates), int(skipped)

    def score_pairs(self, users: IntArray, items: IntArray) -> FloatArray:
        """Scores of arbitrary (user, item) pairs (for sampled ranking metrics)."""
        return self.predict(ExampleBatch.from_arrays(users, items, np.ones(len(users))))

    def _item_scores(self, user: int) -> FloatArray:
        a = self.arrays
        scores: FloatArray = a["item_factors"] @ a["user_factors"][user] + a["item_bias"]
        return scores

    def _reset(self, users: IntArray, items: IntArray) -> None:
        a = self.arrays
        k, std = self.n_factors, self.init_std
        a["user_factors"][users] = init_rows(self.seed, STREAM_USERS, users, k, std)
        a["item_factors"][items] = init_rows(self.seed, STREAM_ITEMS, items, k, std)
        a["item_bias"][items] = 0.0
        if self.optimizer.adagrad:
            a["acc_user_factors"][users] = 0.0
            a["acc_item_factors"][items] = 0.0
            a["acc_item_bias"][items] = 0.0

    def _rows_of(self, name: str, users: IntArray, items: IntArray) -> IntArray | None:
        return users if name.startswith("user") else items
