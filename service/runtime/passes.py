"""Several passes over a backfill's history: the first through the pipeline, the rest again.

The seed's batch retrain is several epochs over a window of history. In a backfill the
first pass is the stream itself: every event goes through the whole pipeline (dedup,
admission, labels, hold-out, progressive metrics), and that is what the live stream
continues from. A second pass cannot go through the pipeline again: the dedup window
has seen every event and would drop them all, the labels of clicks joined to
impressions would be joined a second time, and the metric windows would count the
history twice. So later passes feed the learner the examples pass 1 *produced*:

1. :class:`PassRecorder` (the pipeline's ``recorder``) copies each part of the queue the
   pipeline learns, with the positions where vocabulary rows changed owner.
2. :meth:`PassRecorder.reusable` keeps an example for later passes only if neither its
   user row nor its item row changed owner after it: an example recorded before its
   user's row was recycled for another id would otherwise train the new owner's row
   with the old owner's behaviour. The number dropped is reported.
3. :func:`bounded_shuffle` orders each later pass: a seeded permutation inside blocks of
   ``window`` consecutive examples, so the history is mixed locally while its coarse
   time order (and so the drift of tastes across it) stays.
4. :func:`learn_passes` learns each later pass in batches through
   :meth:`~service.runtime.pipeline.Pipeline.learn_again`, which changes the model only.

Why record instead of re-deriving the examples with the vocabulary frozen: the examples
depend on stream state that a second decode would not reproduce (labels joined across
the attribution window, the hold-out split, what dedup dropped, which id owned a row at
that moment). The record is exactly what pass 1 learned, at the cost of memory: about
40 bytes an example plus 12 a side feature, kept until the passes are over.

Example
-------
>>> import numpy as np
>>> order = bounded_shuffle(10, window=4, rng=np.random.default_rng(0))
>>> sorted(order.tolist()) == list(range(10))
True
>>> [sorted(order[lo:lo + 4].tolist()) for lo in (0, 4, 8)]
[[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from service.evaluation import ProgressiveEvaluator
from service.examples import ExampleBatch
from service.runtime.pipeline import Pipeline
from service.snapshots.holdout import concat

LOSS_NAMES = {"regression": "squared error", "binary": "log loss",
              "ranking": "pointwise logistic loss"}
"""What the per-example loss of each task is (the progressive evaluator's)."""


def bounded_shuffle(n: int, window: int, rng: np.random.Generator) -> npt.NDArray[np.int64]:
    """A permutation of ``range(n)`` that only mixes inside consecutive blocks of ``window``.

    Position ``k`` of the result holds an index of the same block as ``k``, so no example
    moves by ``window`` places or more. ``window <= 1`` keeps the order. The result
    depends only on ``n``, ``window`` and the state of ``rng``.

    >>> bounded_shuffle(5, 1, np.random.default_rng(3)).tolist()
    [0, 1, 2, 3, 4]
    """
    index = np.arange(n, dtype=np.int64)
    if window <= 1 or n <= 1:
        return index
    # Sort by block, then by a random key: a uniform permutation inside each block.
    return np.lexsort((rng.random(n), index // window)).astype(np.int64)


class PassRecorder:
    """Records what pass 1 learned, for the passes after it.

    Set as a :class:`~service.runtime.pipeline.Pipeline`'s ``recorder``: the pipeline
    calls it with each learned part of its queue, in learning order, the resets of
    recycled rows at their positions.

    Example
    -------
    >>> rec = PassRecorder()
    >>> first = ExampleBatch.from_arrays([1, 2, 1], [5, 5, 6], [4.0, 3.0, 5.0])
    >>> rec(first)
    >>> second = ExampleBatch.from_arrays([1, 2], [7, 5], [2.0, 1.0])
    >>> second.recycled_users, second.recycled_users_at = np.array([1]), np.array([0])
    >>> rec(second)              # user row 1 changed owner before the 4th example
    >>> rec.reusable().tolist()  # the old owner's examples of row 1 are not
    [False, True, False, True, True]
    """

    def __init__(self) -> None:
        self._parts: list[ExampleBatch] = []
        self._resets: dict[str, list[npt.NDArray[np.int64]]] = {"user": [], "item": []}
        self._where: dict[str, list[npt.NDArray[np.int64]]] = {"user": [], "item": []}
        self.n = 0

    def __call__(self, learned: ExampleBatch) -> None:
        users, users_at, items, items_at = learned.recycles()
        self._resets["user"].append(users.copy())
        self._where["user"].append(users_at + self.n)
        self._resets["item"].append(items.copy())
        self._where["item"].append(items_at + self.n)
        if len(learned):
            lo, hi = int(learned.feat_indptr[0]), int(learned.feat_indptr[-1])
            # Copies: the pipeline's batches are views of buffers it may reuse.
            self._parts.append(ExampleBatch(
                user=learned.user.copy(), item=learned.item.copy(), y=learned.y.copy(),
                weight=learned.weight.copy(), ts_ms=learned.ts_ms.copy(),
                feat_indptr=learned.feat_indptr - lo,
                feat_idx=learned.feat_idx[lo:hi].copy(),
                feat_val=learned.feat_val[lo:hi].copy()))
            self.n += len(learned)

    def examples(self) -> ExampleBatch:
        """Every recorded example, in the order pass 1 learned them."""
        return concat(self._parts)

    def reusable(self) -> npt.NDArray[np.bool_]:
        """For each recorded example: whether its user and item rows still belong to its
        ids (no change of owner at a later position; a reset at position ``p`` comes
        before the example at ``p``)."""
        batch = self.examples()
        keep = np.ones(len(batch), dtype=np.bool_)
        position = np.arange(len(batch), dtype=np.int64)
        for side, rows_of in (("user", batch.user), ("item", batch.item)):
            rows = np.concatenate([np.zeros(0, np.int64), *self._resets[side]])
            where = np.concatenate([np.zeros(0, np.int64), *self._where[side]])
            if not len(rows) or not len(batch):
                continue
            last = np.full(int(max(rows.max(), rows_of.max())) + 1, -1, dtype=np.int64)
            np.maximum.at(last, rows, where)  # the last change of owner of each row
            keep &= last[rows_of] <= position
        return keep


@dataclass(slots=True)
class PassResult:
    """The loss of one pass over the history.

    Pass 1 is progressive (each example scored before the model learned it, the first
    time it was seen); later passes score examples the model has already learned, so
    theirs is a *training* loss, lower by construction and no estimate of quality.
    """

    number: int
    kind: str
    """``"progressive"`` (pass 1) or ``"training"``."""
    loss_name: str
    examples: int
    mean_loss: float
    seconds: float
    losses: npt.NDArray[np.float32] = field(repr=False)
    """Each example's loss, in the pass's order (for the plot)."""

    @property
    def rmse(self) -> float | None:
        """RMSE, for regression (the root of the mean squared error)."""
        return float(np.sqrt(self.mean_loss)) if self.loss_name == "squared error" else None

    def describe(self) -> str:
        figure = f"mean {self.loss_name} {self.mean_loss:.4f}"
        if self.rmse is not None:
            figure += f" (RMSE {self.rmse:.4f})"
        return (f"pass {self.number}: {figure} over {self.examples:,} examples, "
                f"{self.kind}{' (on seen data)' if self.kind == 'training' else ''}, "
                f"{self.seconds:.1f}s")


def first_pass(losses: list[npt.NDArray[np.float64]], task: str, seconds: float) -> PassResult:
    """Pass 1's result from the progressive losses of the pipeline's batches."""
    every = (np.concatenate(losses) if losses else np.zeros(0)).astype(np.float32)
    return PassResult(1, "progressive", LOSS_NAMES[task], len(every),
                      float(every.mean(dtype=np.float64)) if len(every) else float("nan"),
                      seconds, every)


def learn_passes(
    pipeline: Pipeline,
    recorded: ExampleBatch,
    keep: npt.NDArray[np.bool_],
    passes: int,
    *,
    shuffle_window: int,
    seed: int,
    batch_size: int,
    progress: Callable[[int, int, int], None] | None = None,
) -> list[PassResult]:
    """Passes 2 to ``passes`` over the ``keep`` examples of ``recorded`` (step 4 above).

    ``progress(pass, done, total)`` is called after each batch. Pass ``k`` is ordered by
    :func:`bounded_shuffle` with a generator seeded by ``(seed, k)``: the same history,
    settings and seed give the same model, bit for bit.
    """
    kept = np.flatnonzero(keep)
    # Each position of a pass keeps pass 1's event time there (a micro-batch learner
    # cuts its mini-batches by event-time span: a shuffled clock would cut them at every
    # step back in time).
    slot_times = recorded.ts_ms[kept]
    results = []
    for number in range(2, passes + 1):
        started = time.monotonic()
        order = kept[bounded_shuffle(len(kept), shuffle_window,
                                     np.random.default_rng([seed, number]))]
        scored = ProgressiveEvaluator.for_task(pipeline.learner.task)
        losses = np.zeros(len(order), dtype=np.float32)
        for lo in range(0, len(order), batch_size):
            batch = recorded.take(order[lo:lo + batch_size])
            batch.ts_ms = slot_times[lo:lo + batch_size].copy()
            predictions = pipeline.learn_again(batch)
            losses[lo:lo + len(batch)] = scored.update(batch.y, predictions, batch.weight)
            if progress is not None:
                progress(number, lo + len(batch), len(order))
        results.append(PassResult(
            number, "training", LOSS_NAMES[pipeline.learner.task], len(order),
            float(losses.mean(dtype=np.float64)) if len(order) else float("nan"),
            time.monotonic() - started, losses))
    return results
