"""Update strategies: when and how a learner turns examples into parameter updates.

* :class:`PerEvent` — for each example in stream order: predict, then take one SGD step.
  The most responsive, and what the compiled kernels are built for.
* :class:`MicroBatch` — cut the stream into mini-batches of ``size`` examples or
  ``interval_ms`` of event time, whichever comes first; predict the whole mini-batch with
  the parameters from before it, then apply one step per touched parameter row. Biased
  MF and FM score each example and add its gradient to the slots of its rows in one pass
  (:mod:`service.learners.row_slots`), then step each row once; BPR gives a slot only to
  rows the mini-batch touches more than once and steps the others in place; FTRL copies
  the mini-batch's features into flat arrays, computes every frozen weight in one pass
  and applies each coordinate's updates in order. Biased MF, FM and BPR step along the
  row's *mean* gradient (per row: an average over the whole mini-batch
  would shrink the step of a row seen once by the mini-batch size); with SGD, a row seen
  ``c`` times steps with :func:`row_rate` (``1 - (1 - eta) ** c``), so popular rows do
  not learn ``c`` times slower than per event. FTRL applies the *sum* of its
  coordinates' per-event updates with the weight frozen (its per-coordinate rate comes
  from the sum of squared gradients, which averaging would under-count). The running
  target statistics (global mean and range of regression targets) are not parameters:
  they are updated per example even within a mini-batch, as per event. Scoring the first
  mini-batch of a stream with no mean at all was most of the gap between micro-batch and
  per-event RMSE on short streams (0.912 against 0.809 on ``freshrec bench e2e
  --quick``). Every model has a micro-batch kernel: biased MF, FM, FTRL and BPR.
* :class:`WindowRetrain` — the batch approach online learning replaces: keep the last
  ``window`` examples, and every ``every`` examples train a fresh model from scratch on
  the window (``epochs`` passes) and swap it in. Predictions between retrains come from a
  frozen model. It exists to be compared against (``freshrec bench strategies``).

Mini-batches never straddle two ``learn`` calls: the runtime's poll batch is already a
natural boundary, and holding examples back across polls would delay learning.

What a mini-batch costs in accuracy is mostly not its step but that its parameters are
frozen while it is scored. On MovieLens, sorted by time, a mini-batch of 256 holds a
handful of users rating dozens of films each in one session (on 100k 8 users on
average, the busiest rating 121 films; items rarely repeat), and every one of a user's
ratings in it is
predicted with the user's row from before the session. Learning per event but scoring
each mini-batch with the parameters at its start gives BiasedMF an RMSE of 1.0153 on
MovieLens 100k, against 0.9566 per event and 1.0158 for the micro-batch step (sizes 64
and 16: 0.9892 and 0.9716, micro-batch 0.9908 and 0.9713); on 488k ratings of
MovieLens 1M 0.9361 against 0.9055 and 0.9398. FM's micro-batch is better than that
bound (1.0139 against 1.0994 on 100k). No step rule recovers what the frozen scores do
not see: smaller mini-batches do, and they stay fast (BiasedMF micro-batch of 16: 15M
events/s on 100k, 3.6 times per event, RMSE +1.5%; +0.6% on the 1M sample; FM +1.3%
and -1.3% at 1.9 times per event). Two AdaGrad step rules were measured against the
one :func:`~service.learners.row_slots.apply_slots` takes and rejected:

* the per-event sequence of steps with the gradients frozen, ``sum_j g_j / sqrt(A0 +
  sum_{l<=j} g_l^2)`` per row (SGD: the summed gradient): a row seen ``c`` times moves
  up to ``2 eta sqrt(c)``, twice the summed step, where per event the later gradients
  shrink as the row fits. RMSE on MovieLens 100k 1.0392 (BiasedMF), 1.0397 (FM), SGD
  BiasedMF 1.0757 against 1.0217; on the 1M sample 0.9524 against 0.9398; log loss on
  the Criteo head FM binary 0.5062 against 0.5070 with its step bound, 1.0006 without;
  slightly better on the generated ``ratings`` stream (0.7573 against 0.7584);
* an accumulator grown by the square of the summed gradient (as AdaRevision does for
  delayed gradients, McMahan and Streeter 2014), which bounds a mini-batch's step by
  ``eta`` when its gradients agree: learns too slowly, RMSE 1.0305 (BiasedMF) and 1.0256
  (FM) on 100k, log loss 0.5290 on the Criteo head.

References
----------
McMahan and Streeter (2014). Delay-tolerant algorithms for asynchronous distributed
online learning. NIPS.

Example
-------
>>> import numpy as np
>>> MicroBatch(size=3).bounds(np.zeros(7, dtype=np.int64)).tolist()
[0, 3, 6, 7]
>>> MicroBatch(size=100, interval_ms=10).bounds(np.array([0, 5, 10, 12, 30])).tolist()
[0, 2, 4, 5]
>>> MicroBatch(size=100).bounds(np.zeros(5, dtype=np.int64), np.array([1, 2, 1, 3, 4])).tolist()
[0, 2, 5]
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import numpy.typing as npt
from numba import njit

from service.examples import ExampleBatch
from service.learners.base import LearnStats, ModelState

if TYPE_CHECKING:
    from service.learners.base import Learner

IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class PerEvent:
    """Predict then learn, one example at a time."""

    name: ClassVar[str] = "per_event"

    def bounds(self, ts_ms: IntArray, users: IntArray | None = None) -> IntArray | None:
        return None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name}


@njit(cache=True)
def _segment_bounds(ts_ms: IntArray, users: IntArray, size: int, interval_ms: int,
                    one_per_user: bool) -> IntArray:
    n = len(ts_ms)
    out = np.empty(n + 1, dtype=np.int64)
    m = 0
    out[m] = 0
    m += 1
    start = 0
    for j in range(1, n):
        cut = j - start >= size or (interval_ms > 0 and ts_ms[j] - ts_ms[start] >= interval_ms)
        if not cut and one_per_user:
            # A scan of at most ``size`` rows: cheaper than a set at the sizes used.
            u = users[j]
            for k in range(start, j):
                if users[k] == u:
                    cut = True
                    break
        if cut:
            out[m] = j
            m += 1
            start = j
    if n > 0:
        out[m] = n
        m += 1
    return out[:m]


@njit(cache=True, inline="always")
def row_rate(eta: float, count: int) -> float:
    """Learning rate of one averaged step standing for ``count`` per-event steps.

    On a squared loss, ``count`` SGD steps of rate ``eta`` towards the same target close
    a share ``1 - (1 - eta) ** count`` of the error; one step along the mean gradient
    with that rate closes the same share. Averaging with the plain ``eta`` instead would
    make a row seen ``count`` times per mini-batch learn ``count`` times slower than per
    event (the popular items, under a Zipf law), and summing the gradients (``count *
    eta``) overshoots once ``count * eta > 2``. The rate never exceeds 1, so the step is
    stable for any ``count``; it is exactly ``eta`` for ``count == 1`` (a mini-batch of
    one is per-event SGD) and falls back to ``eta`` when ``eta >= 1``, where the
    closed form does not hold. For SGD only: AdaGrad's accumulator already grows slower
    under averaging, and the kernels keep ``eta`` for it.

    Example
    -------
    >>> row_rate(0.1, 1), round(row_rate(0.1, 2), 6), row_rate(0.1, 10**6)
    (0.1, 0.19, 1.0)
    """
    if count <= 1 or eta >= 1.0:
        return eta
    return 1.0 - (1.0 - eta) ** count


@dataclass(frozen=True, slots=True)
class MicroBatch:
    """One averaged step per ``size`` examples or ``interval_ms`` of event time.

    Parameters
    ----------
    size
        Most examples per mini-batch. The parameters are frozen while a mini-batch is
        scored, which on streams of sessions (a user's ratings one after another) costs
        accuracy in proportion to the size (see the module's notes: RMSE +1.5% at 16,
        +3.6% at 64, +6.2% at 256 on MovieLens 100k for BiasedMF), while the kernels'
        throughput barely depends on it.
    interval_ms
        Longest event-time span of a mini-batch (0: no time limit).
    one_per_user
        End a mini-batch before an example whose user row it already holds, so that no
        example is scored with parameters frozen before its own user's earlier example in
        the same mini-batch was learned. On streams of sessions that is what frozen
        scoring costs: MovieLens 100k RMSE +8% at 256 without, within 0.5% of per event
        with it (docs/learners.md). The mini-batches are then as long as the stream
        interleaves users, and no longer.
    """

    size: int = 256
    interval_ms: int = 0
    one_per_user: bool = True
    name: ClassVar[str] = "micro_batch"

    def __post_init__(self) -> None:
        if self.size < 1:
            raise ValueError(f"MicroBatch size must be >= 1, got {self.size}")
        if self.interval_ms < 0:
            raise ValueError(f"MicroBatch interval_ms must be >= 0, got {self.interval_ms}")

    def bounds(self, ts_ms: IntArray, users: IntArray | None = None) -> IntArray:
        """Start offsets of the mini-batches, then ``len(ts_ms)``.

        ``users`` (the examples' user rows) is needed for ``one_per_user``; without it
        mini-batches are cut by size and time only.
        """
        ts = np.ascontiguousarray(ts_ms, dtype=np.int64)
        rows = (np.ascontiguousarray(users, dtype=np.int64) if users is not None
                else np.zeros(len(ts), dtype=np.int64))
        return _segment_bounds(ts, rows, self.size, self.interval_ms,
                               self.one_per_user and users is not None)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **asdict(self)}


Strategy = PerEvent | MicroBatch


def strategy_from_dict(data: dict[str, Any]) -> Strategy:
    """Inverse of ``to_dict`` (for ``from_state``)."""
    kwargs = {k: v for k, v in data.items() if k != "name"}
    if data.get("name") == "micro_batch":
        return MicroBatch(**kwargs)
    if data.get("name") in (None, "per_event"):
        return PerEvent()
    raise ValueError(f"unknown strategy {data.get('name')!r}; use 'per_event' or 'micro_batch'")


def _concat(batches: list[ExampleBatch]) -> ExampleBatch:
    """One batch from several, side features included (for the retraining window)."""
    offsets = np.cumsum([0] + [len(b.feat_idx) for b in batches[:-1]])
    indptr = np.concatenate(
        [np.zeros(1, dtype=np.int64)]
        + [b.feat_indptr[1:] + off for b, off in zip(batches, offsets, strict=True)]
    )
    return ExampleBatch(
        user=np.concatenate([b.user for b in batches]),
        item=np.concatenate([b.item for b in batches]),
        y=np.concatenate([b.y for b in batches]),
        weight=np.concatenate([b.weight for b in batches]),
        ts_ms=np.concatenate([b.ts_ms for b in batches]),
        feat_indptr=indptr,
        feat_idx=np.concatenate([b.feat_idx for b in batches]),
        feat_val=np.concatenate([b.feat_val for b in batches]),
    )


def _tail(batch: ExampleBatch, n: int) -> ExampleBatch:
    if n >= len(batch):
        return batch
    mask = np.zeros(len(batch), dtype=np.bool_)
    mask[len(batch) - n :] = True
    return batch.select(mask)


class WindowRetrain:
    """Periodic retraining from scratch on a sliding window (the batch baseline).

    Wraps a learner: predictions come from the last trained model, frozen in between.

    Parameters
    ----------
    learner
        The model to retrain; a fresh copy with the same hyperparameters is trained each
        time (``learner.clone()``).
    window
        Examples kept for retraining (the most recent).
    every
        Retrain after this many new examples.
    epochs
        Passes over the window per retrain.

    Example
    -------
    >>> from service.learners.biased_mf import BiasedMF
    >>> model = WindowRetrain(BiasedMF(n_users=10, n_items=10, n_factors=2), window=50, every=20)
    >>> batch = ExampleBatch.from_arrays(np.arange(40) % 9 + 1, np.arange(40) % 7 + 1,
    ...                                  np.full(40, 4.0))
    >>> _, stats = model.learn(batch)
    >>> model.n_retrains, stats.n_updates  # 2 retrains on 20 and 40 examples, 2 epochs
    (2, 120)
    """

    model_type: ClassVar[str] = "window_retrain"

    def __init__(self, learner: Learner, window: int = 100_000, every: int = 20_000,
                 epochs: int = 2) -> None:
        if window < 1 or every < 1 or epochs < 1:
            raise ValueError("window, every and epochs must all be >= 1")
        self.learner = learner
        self.task = learner.task
        self.window = window
        self.every = every
        self.epochs = epochs
        self.n_retrains = 0
        self._since = 0
        self._buffer: list[ExampleBatch] = []
        self._buffered = 0

    # The protocol, delegated to the current model.
    def predict(self, batch: ExampleBatch) -> npt.NDArray[np.float32]:
        return self.learner.predict(batch)

    def recommend(self, user: int, k: int = 10, exclude: IntArray | None = None,
                  exclude_seen: bool = True) -> tuple[IntArray, npt.NDArray[np.float32]]:
        return self.learner.recommend(user, k, exclude, exclude_seen)

    def reset_rows(self, users: IntArray, items: IntArray) -> None:
        self.learner.reset_rows(users, items)

    def n_parameters(self) -> int:
        return self.learner.n_parameters()

    def is_finite(self) -> bool:
        return self.learner.is_finite()

    def clone(self) -> WindowRetrain:
        return WindowRetrain(self.learner.clone(), self.window, self.every, self.epochs)

    def published_state(self) -> ModelState:
        state = self.get_state()
        inner = self.learner.published_state()
        state.arrays = inner.arrays
        return state

    def get_state(self) -> ModelState:
        # The window is not saved: after recovery the next retrain simply sees fewer
        # examples. The baseline does not deserve checkpoint-sized windows.
        inner = self.learner.get_state()
        return ModelState(
            model_type=self.model_type,
            config={"window": self.window, "every": self.every, "epochs": self.epochs,
                    "inner_model_type": inner.model_type, "inner": inner.config},
            arrays=inner.arrays,
            format_version=inner.format_version,
            counters={**inner.counters, "n_retrains": self.n_retrains},
        )

    @classmethod
    def from_state(cls, state: ModelState) -> WindowRetrain:
        from service.learners.registry import learner_from_state

        cfg = state.config
        inner = learner_from_state(ModelState(model_type=cfg["inner_model_type"],
                                              config=cfg["inner"], arrays=state.arrays,
                                              format_version=state.format_version,
                                              counters=dict(state.counters)))
        out = cls(inner, window=cfg["window"], every=cfg["every"], epochs=cfg["epochs"])
        out.n_retrains = state.counters.get("n_retrains", 0)
        return out

    def learn(self, batch: ExampleBatch) -> tuple[npt.NDArray[np.float32], LearnStats]:
        n = len(batch)
        preds = np.empty(n, dtype=np.float32)
        stats = LearnStats(n_examples=n)
        start = 0
        # Split at retrain points so that examples after a retrain are scored by the new
        # model, exactly as a deployment that swaps models would.
        while start < n:
            take = min(n - start, self.every - self._since)
            mask = np.zeros(n, dtype=np.bool_)
            mask[start : start + take] = True
            part = batch.select(mask) if take < n else batch
            preds[start : start + take] = self.learner.predict(part)
            self._push(part)
            self._since += take
            start += take
            if self._since >= self.every:
                stats.n_updates += self._retrain(stats)
                self._since = 0
        return preds, stats

    def _push(self, part: ExampleBatch) -> None:
        self._buffer.append(part)
        self._buffered += len(part)
        while self._buffered - len(self._buffer[0]) >= self.window:
            self._buffered -= len(self._buffer.pop(0))

    def _retrain(self, stats: LearnStats) -> int:
        data = _tail(_concat(self._buffer), self.window)
        fresh = self.learner.clone()
        updates = 0
        for _ in range(self.epochs):
            _, s = fresh.learn(data)
            updates += s.n_updates
            stats.n_skipped_nonfinite += s.n_skipped_nonfinite
        self.learner = fresh
        self.n_retrains += 1
        return updates
