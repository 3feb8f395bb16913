"""Biased matrix factorisation for explicit ratings, learned one event at a time.

The predicted rating of user ``u`` for item ``i`` is

    r_hat = mu + b_u + b_i + <p_u, q_i>

with mu the running (weighted) mean rating, ``b`` biases and ``p``, ``q`` latent factors.
Every event takes one SGD (or AdaGrad) step on the squared error with L2 decay, in a
compiled kernel over the batch's arrays; predictions are clipped to the range of ratings
seen so far, which is free accuracy on bounded scales.

References
----------
Koren, Bell and Volinsky (2009). Matrix factorization techniques for recommender
systems. IEEE Computer 42(8).
Funk (2006). Netflix update: try this at home.
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
from service.learners.optim import FASTMATH, Optimizer, clip, scheduled_lr, step
from service.learners.rng import STREAM_ITEMS, STREAM_USERS, fill_init
from service.learners.strategies import Strategy, row_rate
from service.learners.target_stats import clip_prediction, mean, new_stats, observe

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

@njit(cache=True, fastmath=FASTMATH, inline="always")
def _raw(stats: F64, bu: F32, bi: F32, P: F32, Q: F32, u: int, i: int) -> float:
    mu = mean(stats)
    dot = np.float32(0.0)
    for f in range(P.shape[1]):
        dot += P[u, f] * Q[i, f]
    return mu + bu[u] + bi[i] + dot


@njit(cache=True, fastmath=FASTMATH)
def _predict_kernel(user: IntArray, item: IntArray, stats: F64, bu: F32, bi: F32, P: F32,
                    Q: F32, out: F32) -> None:
    for n in range(len(user)):
        out[n] = clip_prediction(_raw(stats, bu, bi, P, Q, user[n], item[n]), stats)


@njit(cache=True, fastmath=FASTMATH)
def _learn_events(
    user: IntArray, item: IntArray, y: F32, w: F32, stats: F64,
    bu: F32, bi: F32, P: F32, Q: F32, abu: F32, abi: F32, aP: F32, aQ: F32,
    lr: float, power_t: float, t0: int, adagrad: bool, l2: float, l2_bias: float,
    clip_g: float, out: F32, tp: F32, tq: F32, tap: F32, taq: F32,
) -> tuple[int, int]:
    k = P.shape[1]
    updates = 0
    skipped = 0
    for n in range(len(user)):
        u = user[n]
        i = item[n]
        raw = _raw(stats, bu, bi, P, Q, u, i)
        out[n] = clip_prediction(raw, stats)
        yn = y[n]
        wn = w[n]
        if not (math.isfinite(yn) and math.isfinite(wn) and math.isfinite(raw)):
            skipped += 1
            continue
        if wn <= 0.0:
            continue
        g = clip(wn * (raw - yn), clip_g)
        eta = scheduled_lr(lr, power_t, t0 + updates)
        nbu, nabu = bu[u], 0.0
        nbi, nabi = bi[i], 0.0
        total = 0.0
        if u != 0:
            nbu, nabu = step(bu[u], g + l2_bias * bu[u], abu[u] if adagrad else 0.0, eta,
                             adagrad)
            total += nbu
        if i != 0:
            nbi, nabi = step(bi[i], g + l2_bias * bi[i], abi[i] if adagrad else 0.0, eta,
                             adagrad)
            total += nbi
        if u != 0 and i != 0:
            for f in range(k):
                pu = P[u, f]
                qi = Q[i, f]
                tp[f], tap[f] = step(pu, g * qi + l2 * pu, aP[u, f] if adagrad else 0.0, eta,
                                     adagrad)
                tq[f], taq[f] = step(qi, g * pu + l2 * qi, aQ[i, f] if adagrad else 0.0, eta,
                                     adagrad)
                total += tp[f] * tq[f]
        # The guard: one finite check on a sum of every new value catches any inf/NaN.
        if not math.isfinite(total):
            skipped += 1
            continue
        if u != 0:
            bu[u] = nbu
            if adagrad:
                abu[u] = nabu
        if i != 0:
            bi[i] = nbi
            if adagrad:
                abi[i] = nabi
        if u != 0 and i != 0:
            for f in range(k):
                P[u, f] = tp[f]
                Q[i, f] = tq[f]
                if adagrad:
                    aP[u, f] = tap[f]
                    aQ[i, f] = taq[f]
        observe(stats, yn, wn)
        updates += 1
    return updates, skipped


@njit(cache=True, fastmath=FASTMATH)
def _apply_rows(rows: IntArray, m: int, count: npt.NDArray[np.int32], gb: F32, gF: F32,
                b: F32, F: F32, ab: F32, aF: F32, eta: float, adagrad: bool, l2: float,
                l2_bias: float, tmp: F32, tmpa: F32) -> int:
    """Apply the per-row averaged gradient to ``m`` touched rows; clear the scratch.

    With SGD, a row touched by ``c`` examples takes one step along its mean gradient with
    the rate ``c`` sequential steps have on a quadratic loss (:func:`row_rate`), so
    popular rows learn about as fast as they would per event instead of ``c`` times
    slower.
    """
    k = F.shape[1]
    skipped = 0
    for j in range(m):
        r = rows[j]
        c = count[r]
        # AdaGrad keeps eta (its accumulator already grows slower under averaging; see
        # fm._learn_segments, where row_rate on top of AdaGrad was measured to overshoot).
        rate = eta if adagrad else row_rate(eta, c)
        nb, nab = step(b[r], gb[r] / c + l2_bias * b[r], ab[r] if adagrad else 0.0, rate,
                       adagrad)
        total = nb
        for f in range(k):
            tmp[f], tmpa[f] = step(F[r, f], gF[r, f] / c + l2 * F[r, f],
                                   aF[r, f] if adagrad else 0.0, rate, adagrad)
            total += tmp[f]
            gF[r, f] = 0.0
        gb[r] = 0.0
        count[r] = 0
        if not math.isfinite(total):
            skipped += 1
            continue
        b[r] = nb
        if adagrad:
            ab[r] = nab
        for f in range(k):
            F[r, f] = tmp[f]
            if adagrad:
                aF[r, f] = tmpa[f]
    return skipped


@njit(cache=True, fastmath=FASTMATH)
def _learn_segments(
    bounds: IntArray, user: IntArray, item: IntArray, y: F32, w: F32, stats: F64,
    bu: F32, bi: F32, P: F32, Q: F32, abu: F32, abi: F32, aP: F32, aQ: F32,
    lr: float, power_t: float, t0: int, adagrad: bool, l2: float, l2_bias: float,
    clip_g: float, out: F32, tmp: F32, tmpa: F32,
    gbu: F32, gbi: F32, gP: F32, gQ: F32, cu: npt.NDArray[np.int32],
    ci: npt.NDArray[np.int32], ru: IntArray, ri: IntArray, raws: F64,
) -> tuple[int, int]:
    k = P.shape[1]
    updates = 0
    skipped = 0
    for s in range(len(bounds) - 1):
        a = bounds[s]
        b = bounds[s + 1]
        # Score the whole mini-batch first with the parameters from before it. The target
        # statistics (global mean, range) are the exception: they are running sums that
        # cost nothing to keep per event, so each example sees the targets of every
        # example before it, as per event. Otherwise every example of the first
        # mini-batch would be scored with no mean at all (a cold start as long as the
        # mini-batch, which dominates the error of short streams).
        for n in range(a, b):
            raw = _raw(stats, bu, bi, P, Q, user[n], item[n])
            raws[n - a] = raw
            out[n] = clip_prediction(raw, stats)
            yn = y[n]
            wn = w[n]
            if math.isfinite(yn) and math.isfinite(wn) and math.isfinite(raw) and wn > 0.0:
                observe(stats, yn, wn)
        mu = 0
        mi = 0
        learned = 0
        for n in range(a, b):
            u = user[n]
            i = item[n]
            raw = raws[n - a]
            yn = y[n]
            wn = w[n]
            if not (math.isfinite(yn) and math.isfinite(wn) and math.isfinite(raw)):
                skipped += 1
                continue
            if wn <= 0.0:
                continue
            g = clip(wn * (raw - yn), clip_g)
            if u != 0:
                if cu[u] == 0:
                    ru[mu] = u
                    mu += 1
                cu[u] += 1
                gbu[u] += g
            if i != 0:
                if ci[i] == 0:
                    ri[mi] = i
                    mi += 1
                ci[i] += 1
                gbi[i] += g
            if u != 0 and i != 0:
                for f in range(k):
                    gP[u, f] += g * Q[i, f]
                    gQ[i, f] += g * P[u, f]
            learned += 1
        eta = scheduled_lr(lr, power_t, t0 + updates + learned)
        rejected = _apply_rows(ru, mu, cu, gbu, gP, bu, P, abu, aP, eta, adagrad, l2, l2_bias,
                               tmp, tmpa)
        rejected += _apply_rows(ri, mi, ci, gbi, gQ, bi, Q, abi, aQ, eta, adagrad, l2,
                                l2_bias, tmp, tmpa)
        # A rejected row step counts as one skipped example (at most the mini-batch's).
        rejected = min(rejected, learned)
        updates += learned - rejected
        skipped += rejected
    return updates, skipped


class BiasedMF(ArrayLearner):
    """Biased matrix factorisation for explicit feedback (ratings).

    Parameters
    ----------
    n_users, n_items, feature_bits
        Table sizes (``feature_bits`` is unused: this model has no side features).
    n_factors
        Latent dimensions.
    init_std
        Standard deviation of the initial factors.
    l2_bias
        L2 decay of the biases (the factors use ``optimizer.l2``).
    optimizer, seed, strategy, seen_per_user, ema_decay
        See :class:`~service.learners.array_learner.ArrayLearner`.

    Example
    -------
    >>> import numpy as np
    >>> from service.examples import ExampleBatch
    >>> rng = np.random.default_rng(0)
    >>> users, items = rng.integers(1, 50, 20_000), rng.integers(1, 40, 20_000)
    >>> ratings = 3.0 + (users % 2) - (items % 3 == 0)   # planted user and item effects
    >>> model = BiasedMF(n_users=50, n_items=40, n_factors=8)
    >>> preds, stats = model.learn(ExampleBatch.from_arrays(users, items, ratings))
    >>> stats.n_updates
    20000
    >>> err = np.abs(preds[-2000:] - ratings[-2000:]).mean()  # progressive, unseen data
    >>> bool(err < 0.1)
    True
    >>> rows, scores = model.recommend(user=1, k=3)
    >>> len(rows), bool(scores[0] >= scores[-1])
    (3, True)
    """

    model_type: ClassVar[str] = "biased_mf"
    task: Task = "regression"
    PARAMETERS: ClassVar[tuple[str, ...]] = ("user_bias", "item_bias", "user_factors",
                                             "item_factors")

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
        self._scratch: dict[str, npt.NDArray[Any]] = {}

    @classmethod
    def default_optimizer(cls, task: str | None = None) -> Optimizer:
        return Optimizer(kind="sgd", learning_rate=0.07, l2=0.015, clip_gradient=10.0)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"n_factors": self.n_factors, "init_std": self.init_std, "l2_bias": self.l2_bias}

    def _factors(self, rng: np.random.Generator, rows: int) -> F32:
        return rng.normal(0.0, self.init_std, (rows, self.n_factors)).astype(np.float32)

    def _allocate(self, rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
        # The factors are filled by _initialise, row by row from the seed.
        P = np.empty((self.n_users, self.n_factors), dtype=np.float32)
        Q = np.empty((self.n_items, self.n_factors), dtype=np.float32)
        adagrad = self.optimizer.adagrad
        return {
            "stats": new_stats(),
            "user_bias": np.zeros(self.n_users, dtype=np.float32),
            "item_bias": np.zeros(self.n_items, dtype=np.float32),
            "user_factors": P,
            "item_factors": Q,
            # AdaGrad accumulators exist only when used (a 1-element placeholder otherwise).
            "acc_user_bias": np.zeros(self.n_users if adagrad else 1, dtype=np.float32),
            "acc_item_bias": np.zeros(self.n_items if adagrad else 1, dtype=np.float32),
            "acc_user_factors": np.zeros(P.shape if adagrad else (1, 1), dtype=np.float32),
            "acc_item_factors": np.zeros(Q.shape if adagrad else (1, 1), dtype=np.float32),
        }

    def _initialise(self, users_from: int, items_from: int, rest: bool) -> None:
        for name, stream, start in (("user_factors", STREAM_USERS, users_from),
                                    ("item_factors", STREAM_ITEMS, items_from)):
            table = self.arrays[name]
            fill_init(table[start:], self.seed, stream, start, self.init_std)
            if start == 0:
                table[0] = 0.0  # the unknown row scores with the shared terms only

    def row_spans(self) -> dict[str, tuple[RowSpan, ...]]:
        users: tuple[RowSpan, ...] = (RowSpan("users"),)
        items: tuple[RowSpan, ...] = (RowSpan("items"),)
        spans = {"user_bias": users, "item_bias": items, "user_factors": users,
                 "item_factors": items}
        if self.optimizer.adagrad:  # otherwise the accumulators are 1-row placeholders
            spans |= {"acc_user_bias": users, "acc_item_bias": items,
                      "acc_user_factors": users, "acc_item_factors": items}
        return spans

    def _predict(self, batch: ExampleBatch) -> FloatArray:
        a = self.arrays
        out = np.empty(len(batch), dtype=np.float32)
        _predict_kernel(batch.user, batch.item, a["stats"], a["user_bias"], a["item_bias"],
                        a["user_factors"], a["item_factors"], out)
        return out

    def _learn(self, batch: ExampleBatch, bounds: IntArray | None) -> tuple[FloatArray, int, int]:
        a = self.arrays
        o = self.optimizer
        k = self.n_factors
        out = np.empty(len(batch), dtype=np.float32)
        common = (a["stats"], a["user_bias"], a["item_bias"], a["user_factors"],
                  a["item_factors"], a["acc_user_bias"], a["acc_item_bias"],
                  a["acc_user_factors"], a["acc_item_factors"], o.learning_rate,
                  o.effective_power_t, self.n_updates, o.adagrad, o.l2, self.l2_bias,
                  o.clip_gradient, out)
        if bounds is None:
            t = np.empty((4, k), dtype=np.float32)
            updates, skipped = _learn_events(batch.user, batch.item, batch.y, batch.weight,
                                             *common, t[0], t[1], t[2], t[3])
        else:
            s = self._segment_scratch()
            updates, skipped = _learn_segments(
                bounds, batch.user, batch.item, batch.y, batch.weight, *common,
                s["tmp"][0], s["tmp"][1], s["gbu"], s["gbi"], s["gP"], s["gQ"], s["cu"],
                s["ci"], s["ru"], s["ri"],
                np.empty(int(np.diff(bounds).max()), dtype=np.float64))
        return out, int(updates), int(skipped)

    def _segment_scratch(self) -> dict[str, npt.NDArray[Any]]:
        # Gradient accumulators for micro-batches, kept zeroed between calls by the kernel.
        if not self._scratch:
            k = self.n_factors
            self._scratch = {
                "tmp": np.zeros((2, k), dtype=np.float32),
                "gbu": np.zeros(self.n_users, dtype=np.float32),
                "gbi": np.zeros(self.n_items, dtype=np.float32),
                "gP": np.zeros((self.n_users, k), dtype=np.float32),
                "gQ": np.zeros((self.n_items, k), dtype=np.float32),
                "cu": np.zeros(self.n_users, dtype=np.int32),
                "ci": np.zeros(self.n_items, dtype=np.int32),
                "ru": np.zeros(self.n_users, dtype=np.int64),
                "ri": np.zeros(self.n_items, dtype=np.int64),
            }
        return self._scratch

    def _item_scores(self, user: int) -> FloatArray:
        a = self.arrays
        scores: FloatArray = a["item_factors"] @ a["user_factors"][user] + a["item_bias"]
        return scores

    def _reset(self, users: IntArray, items: IntArray, rng: np.random.Generator) -> None:
        a = self.arrays
        a["user_factors"][users] = self._factors(rng, len(users))
        a["item_factors"][items] = self._factors(rng, len(items))
        a["user_bias"][users] = 0.0
        a["item_bias"][items] = 0.0
        if self.optimizer.adagrad:
            for name, rows in (("acc_user_bias", users), ("acc_item_bias", items),
                               ("acc_user_factors", users), ("acc_item_factors", items)):
                a[name][rows] = 0.0

    def _rows_of(self, name: str, users: IntArray, items: IntArray) -> IntArray | None:
        return users if name.startswith("user") else items
