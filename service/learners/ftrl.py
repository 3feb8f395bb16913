"""FTRL-Proximal logistic regression over hashed features.

The user id, the item id and every side feature are hashed into one weight vector of
``2 ** feature_bits`` coordinates (plus a bias). Each coordinate keeps two numbers,
``z`` and ``n``; its weight is derived lazily when it is used,

    w_i = 0                                                  if |z_i| <= l1
    w_i = -(z_i - sign(z_i) l1) / ((beta + sqrt(n_i)) / alpha + l2)    otherwise,

and after predicting ``p = sigmoid(w . x)`` with gradient ``g_i = (p - y) x_i``:
``s_i = (sqrt(n_i + g_i^2) - sqrt(n_i)) / alpha``, ``z_i += g_i - s_i w_i``,
``n_i += g_i^2``. The per-coordinate rate is AdaGrad's, and L1 gives exact zeros
(sparse models) without hurting accuracy.

References
----------
McMahan et al. (2013). Ad click prediction: a view from the trenches. KDD.
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
from service.learners.hashing import BIAS_FIELD, ITEM_FIELD, USER_FIELD, hash_array, hash_index
from service.learners.optim import FASTMATH, Optimizer, all_finite, clip, finite
from service.learners.strategies import Strategy

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@njit(cache=True, inline="always")
def _gather(n: int, user: IntArray, item: IntArray, indptr: IntArray, fidx: IntArray,
            fval: F32, mask: int, rows: IntArray, xs: F64) -> int:
    rows[0] = hash_index(BIAS_FIELD, 0, mask)
    xs[0] = 1.0
    m = 1
    if user[n] != 0:
        rows[m] = hash_index(USER_FIELD, user[n], mask)
        xs[m] = 1.0
        m += 1
    if item[n] != 0:
        rows[m] = hash_index(ITEM_FIELD, item[n], mask)
        xs[m] = 1.0
        m += 1
    for j in range(indptr[n], indptr[n + 1]):
        if fval[j] != 0.0:
            rows[m] = fidx[j]
            xs[m] = fval[j]
            m += 1
    return m


@njit(cache=True, inline="always")
def _weight(z: float, nsum: float, alpha: float, beta: float, l1: float, l2: float) -> float:
    if abs(z) <= l1:
        return 0.0
    sign = 1.0 if z > 0 else -1.0
    return -(z - sign * l1) / ((beta + math.sqrt(nsum)) / alpha + l2)


@njit(cache=True, inline="always")
def _sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


@njit(cache=True)
def _predict_kernel(user: IntArray, item: IntArray, indptr: IntArray, fidx: IntArray,
                    fval: F32, mask: int, Z: F64, N: F64, alpha: float, beta: float,
                    l1: float, l2: float, out: F32, rows: IntArray, xs: F64) -> None:
    for n in range(len(user)):
        m = _gather(n, user, item, indptr, fidx, fval, mask, rows, xs)
        dot = 0.0
        for j in range(m):
            r = rows[j]
            dot += _weight(Z[r], N[r], alpha, beta, l1, l2) * xs[j]
        out[n] = _sigmoid(dot)


@njit(cache=True)
def _learn_events(
    user: IntArray, item: IntArray, indptr: IntArray, fidx: IntArray, fval: F32, y: F32,
    w: F32, mask: int, Z: F64, N: F64, alpha: float, beta: float, l1: float, l2: float,
    clip_g: float, out: F32, rows: IntArray, xs: F64, ws: F64,
) -> tuple[int, int]:
    updates = 0
    skipped = 0
    for n in range(len(user)):
        m = _gather(n, user, item, indptr, fidx, fval, mask, rows, xs)
        dot = 0.0
        for j in range(m):
            r = rows[j]
            ws[j] = _weight(Z[r], N[r], alpha, beta, l1, l2)
            dot += ws[j] * xs[j]
        p = _sigmoid(dot)
        out[n] = p
        yn = y[n]
        wn = w[n]
        if not all_finite(yn, wn, dot):
            skipped += 1
            continue
        if wn <= 0.0:
            continue
        g = clip(wn * (p - yn), clip_g)
        total = 0.0
        for j in range(m):
            total += g * xs[j]
        # Finite g and features mean finite z and n: one check covers the whole update.
        if not finite(total):
            skipped += 1
            continue
        for j in range(m):
            r = rows[j]
            gi = g * xs[j]
            nr = N[r]
            sigma = (math.sqrt(nr + gi * gi) - math.sqrt(nr)) / alpha
            Z[r] += gi - sigma * ws[j]
            N[r] = nr + gi * gi
        updates += 1
    return updates, skipped


@njit(cache=True, error_model="numpy", fastmath=FASTMATH)
def _learn_segments(
    bounds: IntArray, user: IntArray, item: IntArray, indptr: IntArray, fidx: IntArray,
    fval: F32, y: F32, w: F32, mask: int, Z: F64, N: F64, alpha: float, beta: float,
    l1: float, l2: float, clip_g: float, out: F32, tr: IntArray, tx: F64, tw: F64, tg: F64,
    start: IntArray,
) -> tuple[int, int]:
    """Micro-batches: the weights frozen per mini-batch, each coordinate's updates summed.

    The mini-batch's touches are copied to flat arrays (``tr``, ``tx``; example ``n``'s
    are ``start[n - lo]`` to ``start[n - lo + 1]``), which the passes below then walk in
    order. Deduplicating the coordinates first (row slots, an open-addressing table, or
    marking each coordinate's last touch) to derive each weight and apply each update
    once cost more than the square roots it saved: 0.68-0.91M events/s against 1.1-1.2M
    per event on clicks-wide, where this kernel runs 1.3x per event.
    """
    updates = 0
    skipped = 0
    bias = hash_index(BIAS_FIELD, 0, mask)
    inv_alpha = 1.0 / alpha
    c0 = beta / alpha + l2
    for seg in range(len(bounds) - 1):
        lo = bounds[seg]
        hi = bounds[seg + 1]
        # 1. Every (coordinate, value) the mini-batch touches, in event order, into flat
        #    scratch; example n's touches are start[n - lo] .. start[n - lo + 1]. (This is
        #    _gather written out: inlined here, its loop kept numba's reference counting of
        #    the arrays it is passed, seven atomic increments and decrements per example,
        #    which this kernel is otherwise free of.)
        t = 0
        for n in range(lo, hi):
            start[n - lo] = t
            tr[t] = bias
            tx[t] = 1.0
            t += 1
            if user[n] != 0:
                tr[t] = hash_index(USER_FIELD, user[n], mask)
                tx[t] = 1.0
                t += 1
            if item[n] != 0:
                tr[t] = hash_index(ITEM_FIELD, item[n], mask)
                tx[t] = 1.0
                t += 1
            for j in range(indptr[n], indptr[n + 1]):
                if fval[j] != 0.0:
                    tr[t] = fidx[j]
                    tx[t] = fval[j]
                    t += 1
        start[hi - lo] = t
        touches = t
        # 2. The frozen weight of every touch, in one branch-free loop: its loads are
        #    independent, so the cache misses of rare coordinates overlap (the per-event
        #    kernel waits for each event's updates before the next event's weights).
        for t in range(touches):
            r = tr[t]
            z = Z[r]
            tw[t] = -math.copysign(max(abs(z) - l1, 0.0), z) / (c0 + math.sqrt(N[r]) * inv_alpha)
        # 3. Score every example with the frozen weights; its gradient per touch (zero for
        #    an example that is skipped or has no weight).
        for n in range(lo, hi):
            a = start[n - lo]
            b = start[n - lo + 1]
            dot = 0.0
            for t in range(a, b):
                dot += tw[t] * tx[t]
            p = _sigmoid(dot)
            out[n] = p
            yn = y[n]
            wn = w[n]
            g = 0.0
            if not all_finite(yn, wn, dot):
                skipped += 1
            elif wn > 0.0:
                g = clip(wn * (p - yn), clip_g)
                total = 0.0
                for t in range(a, b):
                    total += g * tx[t]
                # Finite g and features mean finite z and n: one check per example.
                if finite(total):
                    updates += 1
                else:
                    skipped += 1
                    g = 0.0
            if g == 0.0:
                for t in range(a, b):
                    tg[t] = 0.0  # a zero gradient leaves z and n exactly as they are
            else:
                for t in range(a, b):
                    tg[t] = g * tx[t]
        # 4. Each touch's update with the weight frozen at its value before the mini-batch.
        #    The sigmas of one coordinate's successive touches telescope, so this is the
        #    coordinate's summed update, (sqrt(n + sum g^2) - sqrt(n)) / alpha.
        for t in range(touches):
            gi = tg[t]
            r = tr[t]
            nr = N[r]
            n2 = nr + gi * gi
            Z[r] += gi - (math.sqrt(n2) - math.sqrt(nr)) * inv_alpha * tw[t]
            N[r] = n2
    return updates, skipped


class FTRL(ArrayLearner):
    """FTRL-Proximal logistic regression over hashed user, item and side features.

    Parameters
    ----------
    n_users, n_items, feature_bits
        Ids are hashed with their field into ``2 ** feature_bits`` coordinates, shared
        with the (already hashed) side features.
    alpha, beta
        Per-coordinate learning rate ``alpha / (beta + sqrt n_i)``. The defaults are
        River's ``FTRLProximal`` and McMahan et al.'s (a smaller alpha suits wide inputs,
        where many coordinates move the logit at once).
    l1, l2
        Regularisation of the weights. L1 (default 1) gives exact zeros: coordinates whose
        accumulated gradient stays small (noise fields, rare hashed values) keep weight 0
        instead of fitting noise; measured on ``clicks-wide``: log loss 0.5864 against
        0.5867 without it, and a sparse model.
    optimizer
        Only ``clip_gradient`` is used: FTRL has its own update.
    strategy
        With ``MicroBatch`` the mini-batch is scored with the weights from before it, and
        each coordinate then takes the sum of its examples' per-event updates with the
        weight frozen (``z += sum g - sigma w``, ``n += sum g^2``: the sigmas of
        successive updates telescope, so only the frozen weight differs from per event).
    seed, seen_per_user, ema_decay
        See :class:`~service.learners.array_learner.ArrayLearner`.

    Example
    -------
    >>> import numpy as np
    >>> from service.examples import ExampleBatch
    >>> rng = np.random.default_rng(0)
    >>> n = 20_000
    >>> users, items = rng.integers(1, 100, n), rng.integers(1, 50, n)
    >>> clicked = (rng.random(n) < np.where(items % 2 == 0, 0.7, 0.1)).astype(np.float32)
    >>> model = FTRL(n_users=100, n_items=50, feature_bits=12)
    >>> p, stats = model.learn(ExampleBatch.from_arrays(users, items, clicked))
    >>> even = items[-2000:] % 2 == 0
    >>> bool(p[-2000:][even].mean() > p[-2000:][~even].mean() + 0.25)  # true rates 0.7, 0.1
    True
    """

    model_type: ClassVar[str] = "ftrl"
    task: Task = "binary"
    PARAMETERS: ClassVar[tuple[str, ...]] = ("z", "n")

    def __init__(
        self,
        n_users: int,
        n_items: int,
        feature_bits: int = 18,
        *,
        alpha: float = 0.05,
        beta: float = 1.0,
        l1: float = 1.0,
        l2: float = 1.0,
        optimizer: Optimizer | None = None,
        seed: int = 42,
        strategy: Strategy | None = None,
        seen_per_user: int = 16,
        ema_decay: float = 0.0,
    ) -> None:
        for name, value, positive in (("alpha", alpha, True), ("beta", beta, False),
                                      ("l1", l1, False), ("l2", l2, False)):
            ok = value > 0 if positive else value >= 0
            if not (ok and math.isfinite(value)):
                raise ValueError(
                    f"{name} must be a {'positive' if positive else 'non-negative'} finite "
                    f"number, got {value}"
                )
        self.alpha = float(alpha)
        self.beta = float(beta)
        self.l1 = float(l1)
        self.l2 = float(l2)
        super().__init__(n_users, n_items, feature_bits, optimizer=optimizer, seed=seed,
                         strategy=strategy, seen_per_user=seen_per_user, ema_decay=ema_decay)
        # Micro-batch scratch (one mini-batch's touches), grown on demand and reused.
        self._touches: tuple[IntArray, F64, F64, F64] | None = None
        self._starts: IntArray | None = None

    @property
    def mask(self) -> int:
        return (1 << self.feature_bits) - 1

    def _hyperparameters(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "beta": self.beta, "l1": self.l1, "l2": self.l2}

    def _allocate(self, rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
        size = 1 << self.feature_bits
        return {"z": np.zeros(size, dtype=np.float64), "n": np.zeros(size, dtype=np.float64)}

    def _work(self, batch: ExampleBatch) -> tuple[IntArray, F64, F64]:
        width = int(np.diff(batch.feat_indptr).max(initial=0)) + 3
        return (np.empty(width, dtype=np.int64), np.empty(width, dtype=np.float64),
                np.empty(width, dtype=np.float64))

    def _predict(self, batch: ExampleBatch) -> FloatArray:
        out = np.empty(len(batch), dtype=np.float32)
        rows, xs, _ = self._work(batch)
        _predict_kernel(batch.user, batch.item, batch.feat_indptr, batch.feat_idx,
                        batch.feat_val, self.mask, self.arrays["z"], self.arrays["n"],
                        self.alpha, self.beta, self.l1, self.l2, out, rows, xs)
        return out

    def _learn(self, batch: ExampleBatch, bounds: IntArray | None) -> tuple[FloatArray, int, int]:
        out = np.empty(len(batch), dtype=np.float32)
        rows, xs, ws = self._work(batch)
        head = (batch.user, batch.item, batch.feat_indptr, batch.feat_idx, batch.feat_val,
                batch.y, batch.weight, self.mask, self.arrays["z"], self.arrays["n"],
                self.alpha, self.beta, self.l1, self.l2, self.optimizer.clip_gradient, out,
                rows, xs, ws)
        if bounds is None:
            updates, skipped = _learn_events(*head)
        else:
            size = int(np.diff(bounds).max())
            # Touches of the widest possible mini-batch: its size times the widest example.
            capacity = size * len(rows)
            if self._touches is None or len(self._touches[0]) < capacity:
                self._touches = (np.empty(capacity, dtype=np.int64),
                                 np.empty(capacity, dtype=np.float64),
                                 np.empty(capacity, dtype=np.float64),
                                 np.empty(capacity, dtype=np.float64))
            if self._starts is None or len(self._starts) < size + 1:
                self._starts = np.empty(size + 1, dtype=np.int64)
            updates, skipped = _learn_segments(bounds, *head[:-3], *self._touches,
                                               self._starts)
        return out, int(updates), int(skipped)

    def weights(self, rows: IntArray) -> F64:
        """The lazily derived weights of coordinates ``rows`` (vectorised)."""
        z = self.arrays["z"][rows]
        n = self.arrays["n"][rows]
        w = -(z - np.sign(z) * self.l1) / ((self.beta + np.sqrt(n)) / self.alpha + self.l2)
        w[np.abs(z) <= self.l1] = 0.0
        return w

    def _item_scores(self, user: int) -> FloatArray:
        # A linear model has no user x item interaction: the user's own weight is the
        # same for every item, so the ranking is by item weight (which is still useful:
        # it is the click propensity learned from the stream, fresher than raw counts).
        item_rows = hash_array(ITEM_FIELD, np.arange(self.n_items), self.feature_bits)
        return self.weights(item_rows).astype(np.float32)

    def _reset(self, users: IntArray, items: IntArray) -> None:
        # Only the id coordinates are reset; hashed side features are shared by design.
        rows = np.concatenate([hash_array(USER_FIELD, users, self.feature_bits),
                               hash_array(ITEM_FIELD, items, self.feature_bits)])
        self.arrays["z"][rows] = 0.0
        self.arrays["n"][rows] = 0.0

    def _rows_of(self, name: str, users: IntArray, items: IntArray) -> IntArray | None:
        return np.concatenate([hash_array(USER_FIELD, users, self.feature_bits),
                               hash_array(ITEM_FIELD, items, self.feature_bits)])
