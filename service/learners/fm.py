"""Factorisation machine over the user, the item and hashed side features.

Every example is a sparse vector over one table of rows: its user row, its item row and
its hashed side features (the ExampleBatch CSR arrays, e.g. device, page, crosses). The
model is

    y_hat = w_0 + sum_j w_j x_j + sum_{j<l} <v_j, v_l> x_j x_l

computed in O(k . nnz) with Rendle's identity
``sum_{j<l} <v_j, v_l> x_j x_l``
``= 1/2 sum_f [(sum_j v_jf x_j)^2 - sum_j v_jf^2 x_j^2]``.
With only a user and an item it reduces to biased MF; side features add context effects
and their interactions with taste. Regression uses squared loss (predictions clipped to
the target range seen), ``binary`` uses log loss and predicts a probability.

References
----------
Rendle (2010). Factorization machines. ICDM.
Rendle (2012). Factorization machines with libFM. ACM TIST 3(3).
"""

from __future__ import annotations

import math
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
from numba import njit

from service.examples import ExampleBatch
from service.learners.array_learner import ArrayLearner, FloatArray, IntArray
from service.learners.base import Task
from service.learners.layout import RowSpan
from service.learners.optim import (
    FASTMATH,
    Optimizer,
    all_finite,
    clip,
    finite,
    scheduled_lr,
    soft_threshold,
    step_at,
    store,
    store_row,
)
from service.learners.rng import (
    STREAM_FEATURES,
    STREAM_ITEMS,
    STREAM_USERS,
    fill_init,
    init_rows,
)
from service.learners.row_slots import RowSlots, add_gradient, apply_slots, claim_row, tally
from service.learners.strategies import Strategy
from service.learners.target_stats import clip_prediction, mean, new_stats, observe

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I32 = npt.NDArray[np.int32]


@njit(cache=True, inline="always")
def _gather(n: int, user: IntArray, item: IntArray, indptr: IntArray, fidx: IntArray,
            fval: F32, n_users: int, n_items: int, rows: IntArray, xs: F32) -> int:
    """The rows and values of example ``n`` in the joint table; returns how many."""
    m = 0
    if user[n] != 0:
        rows[m] = user[n]
        xs[m] = 1.0
        m += 1
    if item[n] != 0:
        rows[m] = n_users + item[n]
        xs[m] = 1.0
        m += 1
    base = n_users + n_items
    for j in range(indptr[n], indptr[n + 1]):
        if fval[j] != 0.0:
            rows[m] = base + fidx[j]
            xs[m] = fval[j]
            m += 1
    return m


@njit(cache=True, fastmath=FASTMATH, inline="always")
def _forward(rows: IntArray, xs: F32, m: int, w0: F64, W: F32, V: F32, s: F32) -> float:
    lin = w0[0]
    for j in range(m):
        lin += W[rows[j]] * xs[j]
    k = V.shape[1]
    for f in range(k):
        s[f] = 0.0
    sq = 0.0
    for j in range(m):
        r = rows[j]
        x = xs[j]
        for f in range(k):
            v = V[r, f] * x
            s[f] += v
            sq += v * v
    tot = 0.0
    for f in range(k):
        tot += s[f] * s[f]
    return lin + 0.5 * (tot - sq)


@njit(cache=True, inline="always")
def _output(raw: float, binary: bool, stats: F64) -> float:
    if binary:
        if raw >= 0:
            return 1.0 / (1.0 + math.exp(-raw))
        e = math.exp(raw)
        return e / (1.0 + e)
    return clip_prediction(raw + mean(stats), stats)


@njit(cache=True, inline="always")
def _dloss(raw: float, y: float, binary: bool, stats: F64) -> float:
    """Derivative of the loss with respect to the raw score."""
    if binary:
        return _output(raw, True, stats) - y
    return raw + mean(stats) - y


@njit(cache=True, fastmath=FASTMATH)
def _predict_kernel(user: IntArray, item: IntArray, indptr: IntArray, fidx: IntArray,
                    fval: F32, n_users: int, n_items: int, w0: F64, W: F32, V: F32,
                    stats: F64, binary: bool, out: F32, rows: IntArray, xs: F32,
                    s: F32) -> None:
    for n in range(len(user)):
        m = _gather(n, user, item, indptr, fidx, fval, n_users, n_items, rows, xs)
        out[n] = _output(_forward(rows, xs, m, w0, W, V, s), binary, stats)


@njit(cache=True, fastmath=FASTMATH)
def _learn_events(
    user: IntArray, item: IntArray, indptr: IntArray, fidx: IntArray, fval: F32, y: F32,
    w: F32, n_users: int, n_items: int, w0: F64, W: F32, V: F32, aW: F32, aV: F32,
    stats: F64, binary: bool, lr: float, power_t: float, t0: int, adagrad: bool,
    l1: float, l2_w: float, l2_v: float, clip_g: float, out: F32, rows: IntArray,
    xs: F32, s: F32, tW: F32, taW: F32, tV: F32, taV: F32,
) -> tuple[int, int]:
    k = V.shape[1]
    updates = 0
    skipped = 0
    for n in range(len(user)):
        m = _gather(n, user, item, indptr, fidx, fval, n_users, n_items, rows, xs)
        raw = _forward(rows, xs, m, w0, W, V, s)
        out[n] = _output(raw, binary, stats)
        yn = y[n]
        wn = w[n]
        if not all_finite(yn, wn, raw):
            skipped += 1
            continue
        if wn <= 0.0:
            continue
        g = clip(wn * _dloss(raw, yn, binary, stats), clip_g)
        eta = scheduled_lr(lr, power_t, t0 + updates)
        total = w0[0] - eta * g
        for j in range(m):
            r = rows[j]
            x = xs[j]
            tW[j], taW[j] = step_at(W[r], g * x, l2_w, aW, r, eta, adagrad)
            tW[j] = soft_threshold(tW[j], eta * l1)
            total += tW[j]
            for f in range(k):
                v = V[r, f]
                tV[j, f], taV[j, f] = step_at(v, g * x * (s[f] - v * x), l2_v, aV, (r, f),
                                              eta, adagrad)
                total += tV[j, f]
        if not finite(total):
            skipped += 1
            continue
        w0[0] -= eta * g
        for j in range(m):
            r = rows[j]
            store(W, aW, r, tW[j], taW[j], adagrad)
            store_row(V, aV, r, tV[j], taV[j], adagrad)
        if not binary:
            observe(stats, yn, wn)
        updates += 1
    return updates, skipped


@njit(cache=True, fastmath=FASTMATH, error_model="numpy")
def _learn_segments(
    bounds: IntArray, user: IntArray, item: IntArray, indptr: IntArray, fidx: IntArray,
    fval: F32, y: F32, w: F32, n_users: int, n_items: int, w0: F64, W: F32, V: F32,
    aW: F32, aV: F32, stats: F64, binary: bool, lr: float, power_t: float, t0: int,
    adagrad: bool, l1: float, l2_w: float, l2_v: float, clip_g: float, out: F32,
    rows: IntArray, xs: F32, s: F32, slot: I32, srows: IntArray, cnt: I32, gW: F32,
    gW2: F32, GV: F32, GV2: F32, tmpa: F32,
) -> tuple[int, int]:
    k = V.shape[1]
    updates = 0
    skipped = 0
    for seg in range(len(bounds) - 1):
        nt = 0
        g0 = 0.0
        learned = 0
        # One pass scores each example and adds its gradient to the slots of its rows
        # while they are in cache (the forward pass's sums ``s`` are the gradient's too):
        # the parameters are frozen for the mini-batch, so this is the same as scoring
        # it first. The running target mean is per event (as per event: no cold start as
        # long as the mini-batch), and the gradient uses the mean its prediction used.
        for n in range(bounds[seg], bounds[seg + 1]):
            m = _gather(n, user, item, indptr, fidx, fval, n_users, n_items, rows, xs)
            raw = _forward(rows, xs, m, w0, W, V, s)
            out[n] = _output(raw, binary, stats)
            yn = y[n]
            wn = w[n]
            if not all_finite(yn, wn, raw):
                skipped += 1
                continue
            if wn <= 0.0:
                continue
            g = np.float32(clip(wn * _dloss(raw, yn, binary, stats), clip_g))
            if not binary:
                observe(stats, yn, wn)
            g0 += float(g)
            for j in range(m):
                r = rows[j]
                x = xs[j]
                sl, nt = claim_row(slot, srows, cnt, r, nt)
                gx = g * x
                add_gradient(gW, gW2, sl, gx)
                if adagrad:
                    for f in range(k):
                        gv = gx * (s[f] - V[r, f] * x)
                        GV[sl, f] += gv
                        GV2[sl, f] += gv * gv
                else:
                    for f in range(k):
                        GV[sl, f] += gx * (s[f] - V[r, f] * x)
            learned += 1
        eta = scheduled_lr(lr, power_t, t0 + updates + learned)
        # The global bias keeps eta and the mean gradient (measured: slightly better than
        # row_rate); every other row steps once along its own mean gradient.
        if learned:
            w0[0] -= eta * g0 / learned
        # Binary: no coordinate moves more than one per-event step can (eta). The summed
        # AdaGrad step moves a coordinate up to eta sqrt(c); at the start of a stream the
        # dozens of hashed features most examples share all take it in the same direction
        # (the gradients are computed with the model frozen) and the logit overshoots:
        # log loss 0.729 over the first 5,000 events of clicks-wide against 0.623 with
        # the cap (per event 0.612); over the stream 0.5883 against 0.5914 (per event
        # 0.5890). Regression is slightly worse with it (RMSE 0.6765 against 0.6761).
        rejected = apply_slots(slot, srows, cnt, nt, gW, gW2, GV, GV2, W, V, aW, aV, eta,
                               adagrad, True, l1, l2_w, l2_v, tmpa,
                               eta if binary else 0.0)
        updates, skipped = tally(updates, skipped, learned, rejected)
    return updates, skipped


class FM(ArrayLearner):
    """Factorisation machine over user, item and hashed side-feature fields.

    Parameters
    ----------
    n_users, n_items, feature_bits
        The joint table has ``n_users + n_items + 2 ** feature_bits`` rows.
    task
        ``"regression"`` (squared loss) or ``"binary"`` (log loss, probability output).
    n_factors
        Latent dimensions.
    init_std
        Standard deviation of the initial factors. The initial pairwise term sums
        ``m (m - 1) / 2`` products of ``k`` factors for ``m`` active fields, so its spread
        grows with the width: 0.01 keeps it negligible at 40 fields and 32 factors,
        where 0.1 made the untrained model's logits random with a spread of ~1.7.
    l2_weights
        L2 decay of the linear weights (the factors use ``optimizer.l2``); L1 on the
        linear weights is ``optimizer.l1``.
    optimizer, seed, strategy, seen_per_user, ema_decay
        See :class:`~service.learners.array_learner.ArrayLearner`. With ``MicroBatch``
        and ``task="binary"`` no coordinate moves more than ``eta`` per mini-batch (the
        most one per-event AdaGrad step can move it), so features shared by most of a
        mini-batch do not overshoot together at the start of a stream.

    Example
    -------
    >>> import numpy as np
    >>> from service.examples import ExampleBatch
    >>> rng = np.random.default_rng(0)
    >>> n = 20_000
    >>> users, items = rng.integers(1, 30, n), rng.integers(1, 20, n)
    >>> device = rng.integers(0, 2, n)                 # one side feature per example
    >>> clicked = (rng.random(n) < np.where(device == 1, 0.8, 0.2)).astype(np.float32)
    >>> batch = ExampleBatch.from_arrays(users, items, clicked)
    >>> batch.feat_indptr = np.arange(n + 1, dtype=np.int64)
    >>> batch.feat_idx, batch.feat_val = device.astype(np.int64), np.ones(n, np.float32)
    >>> model = FM(n_users=30, n_items=20, feature_bits=4, task="binary", n_factors=4)
    >>> p, _ = model.learn(batch)
    >>> bool(p[-1000:][device[-1000:] == 1].mean() > 0.7)   # the device effect is learned
    True
    """

    model_type: ClassVar[str] = "fm"
    PARAMETERS: ClassVar[tuple[str, ...]] = ("bias", "weights", "factors")

    def __init__(
        self,
        n_users: int,
        n_items: int,
        feature_bits: int = 18,
        *,
        task: Literal["regression", "binary"] = "regression",
        n_factors: int = 32,
        init_std: float = 0.01,
        l2_weights: float = 0.0,
        optimizer: Optimizer | None = None,
        seed: int = 42,
        strategy: Strategy | None = None,
        seen_per_user: int = 16,
        ema_decay: float = 0.0,
    ) -> None:
        if task not in ("regression", "binary"):
            raise ValueError(f"FM task must be 'regression' or 'binary', got {task!r}")
        if n_factors < 1:
            raise ValueError(f"n_factors must be >= 1, got {n_factors}")
        if not (init_std >= 0 and math.isfinite(init_std)):
            raise ValueError(f"init_std must be a non-negative number, got {init_std}")
        if not (l2_weights >= 0 and math.isfinite(l2_weights)):
            raise ValueError(f"l2_weights must be a non-negative number, got {l2_weights}")
        self.task: Task = task
        self.n_factors = int(n_factors)
        self.init_std = float(init_std)
        self.l2_weights = float(l2_weights)
        super().__init__(n_users, n_items, feature_bits, optimizer=optimizer, seed=seed,
                         strategy=strategy, seen_per_user=seen_per_user, ema_decay=ema_decay)
        # Micro-batch scratch: slots of the rows a mini-batch touches (row_slots.py).
        self._slots: RowSlots | None = None
        self._buffers: tuple[F32, F32, F32] | None = None

    @classmethod
    def default_optimizer(cls, task: str | None = None) -> Optimizer:
        # AdaGrad: with dozens of hashed features per example, a shared SGD rate is either
        # too slow for rare features or unstable for frequent ones.
        # Binary: about 40 features per example each take a first AdaGrad step of about
        # the learning rate, so the logit of the next example with the same features
        # moves by ~40 x lr; 0.01 keeps that below 1 (0.03 overshot: log loss 0.68 on the
        # first 5,000 events of clicks-wide, against 0.61).
        if task == "binary":
            return Optimizer(kind="adagrad", learning_rate=0.01, l2=0.02, clip_gradient=10.0)
        return Optimizer(kind="adagrad", learning_rate=0.1, l2=0.02, clip_gradient=10.0)

    @property
    def n_rows(self) -> int:
        return self.n_users + self.n_items + (1 << self.feature_bits)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"task": self.task, "n_factors": self.n_factors, "init_std": self.init_std,
                "l2_weights": self.l2_weights}

    def _allocate(self, rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
        R = self.n_rows
        V = np.empty((R, self.n_factors), dtype=np.float32)  # filled by _initialise
        adagrad = self.optimizer.adagrad
        return {
            "bias": np.zeros(1, dtype=np.float64),
            "weights": np.zeros(R, dtype=np.float32),
            "factors": V,
            "stats": new_stats(),
            "acc_weights": np.zeros(R if adagrad else 1, dtype=np.float32),
            "acc_factors": np.zeros(V.shape if adagrad else (1, 1), dtype=np.float32),
        }

    def _initialise(self, users_from: int, items_from: int, rest: bool) -> None:
        V = self.arrays["factors"]
        nu, ni = self.n_users, self.n_items
        fill_init(V[users_from:nu], self.seed, STREAM_USERS, users_from, self.init_std)
        fill_init(V[nu + items_from : nu + ni], self.seed, STREAM_ITEMS, items_from,
                  self.init_std)
        if rest:
            fill_init(V[nu + ni :], self.seed, STREAM_FEATURES, 0, self.init_std)
        # The unknown user and item rows are never learned and contribute nothing.
        if users_from == 0:
            V[0] = 0.0
        if items_from == 0:
            V[nu] = 0.0

    def row_spans(self) -> dict[str, tuple[RowSpan, ...]]:
        # One joint table: user rows, then item rows, then hashed features (kept whole).
        joint: tuple[RowSpan, ...] = (RowSpan("users", 0), RowSpan("items", self.n_users))
        spans = {"weights": joint, "factors": joint}
        if self.optimizer.adagrad:  # otherwise the accumulators are 1-row placeholders
            spans |= {"acc_weights": joint, "acc_factors": joint}
        return spans

    def _work(self, batch: ExampleBatch) -> tuple[IntArray, F32, F32]:
        lengths = np.diff(batch.feat_indptr)
        width = int(lengths.max(initial=0)) + 2
        return (np.empty(width, dtype=np.int64), np.empty(width, dtype=np.float32),
                np.empty(self.n_factors, dtype=np.float32))

    def _predict(self, batch: ExampleBatch) -> FloatArray:
        a = self.arrays
        out = np.empty(len(batch), dtype=np.float32)
        rows, xs, s = self._work(batch)
        _predict_kernel(batch.user, batch.item, batch.feat_indptr, batch.feat_idx,
                        batch.feat_val, self.n_users, self.n_items, a["bias"], a["weights"],
                        a["factors"], a["stats"], self.task == "binary", out, rows, xs, s)
        return out

    def _learn(self, batch: ExampleBatch, bounds: IntArray | None) -> tuple[FloatArray, int, int]:
        a = self.arrays
        o = self.optimizer
        out = np.empty(len(batch), dtype=np.float32)
        rows, xs, s = self._work(batch)
        head = (batch.user, batch.item, batch.feat_indptr, batch.feat_idx, batch.feat_val,
                batch.y, batch.weight, self.n_users, self.n_items, a["bias"], a["weights"],
                a["factors"], a["acc_weights"], a["acc_factors"], a["stats"],
                self.task == "binary", o.learning_rate, o.effective_power_t, self.n_updates,
                o.adagrad, o.l1, self.l2_weights, o.l2, o.clip_gradient, out, rows, xs, s)
        width = len(rows)
        if bounds is None:
            tW = np.empty(width, dtype=np.float32)
            tV = np.empty((width, self.n_factors), dtype=np.float32)
            updates, skipped = _learn_events(*head, tW, tW.copy(), tV, tV.copy())
        else:
            if self._slots is None:
                self._slots = RowSlots(self.n_rows)
            slot, srows, cnt = self._slots.arrays(int(np.diff(bounds).max()) * width)
            gW, GV, tmpa = self._segment_buffers(len(srows))
            updates, skipped = _learn_segments(bounds, *head, slot, srows, cnt, gW[0], gW[1],
                                               GV[0], GV[1], tmpa)
        return out, int(updates), int(skipped)

    def _segment_buffers(self, slots: int) -> tuple[F32, F32, F32]:
        """Per-slot gradient buffers for ``slots`` rows, reused across calls."""
        if self._buffers is None or self._buffers[0].shape[1] < slots:
            # Per slot: sums of gradients and of their squares (row_slots.apply_slots).
            self._buffers = (np.zeros((2, slots), dtype=np.float32),
                             np.zeros((2, slots, self.n_factors), dtype=np.float32),
                             np.zeros(self.n_factors, dtype=np.float32))
        return self._buffers

    def _item_scores(self, user: int) -> FloatArray:
        a = self.arrays
        lo, hi = self.n_users, self.n_users + self.n_items
        V, W = a["factors"], a["weights"]
        scores: FloatArray = V[lo:hi] @ V[user] + W[lo:hi]
        return scores

    def _reset(self, users: IntArray, items: IntArray) -> None:
        a = self.arrays
        rows = np.concatenate([users, items + self.n_users])
        k, std = self.n_factors, self.init_std
        a["factors"][users] = init_rows(self.seed, STREAM_USERS, users, k, std)
        a["factors"][items + self.n_users] = init_rows(self.seed, STREAM_ITEMS, items, k, std)
        a["weights"][rows] = 0.0
        if self.optimizer.adagrad:
            a["acc_weights"][rows] = 0.0
            a["acc_factors"][rows] = 0.0

    def _rows_of(self, name: str, users: IntArray, items: IntArray) -> IntArray | None:
        if name == "bias":
            return None
        return np.concatenate([users, items + self.n_users])
