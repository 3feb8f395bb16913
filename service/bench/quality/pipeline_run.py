"""freshrec's contender in a quality run: the service's own pipeline, fed event bytes.

The replayed events go through :meth:`service.runtime.pipeline.Pipeline.process` in
batches, exactly the call the service makes per Kafka poll: decode, dedup, admission,
side features, holdout, click attribution, predict-then-learn, the progressive evaluator
and drift detection with its reactions, both applied inside the pipeline as in the
service: ``adapt`` raises the learning rate, ``reset`` continues from the pipeline's reset
point (a copy of the model, refreshed every ``drift.reset_point_events`` examples).

``now_ms`` of each batch is its newest event time (see
:meth:`~service.readers.replay.Replay.batches`). The pipeline's evaluator is swapped for
:class:`RecordingEvaluator`, which is the same evaluator keeping each example's label,
prediction and weight, so that the sequence freshrec learned can be traced back to rows
and given to the other contenders. CPU time covers the ``process`` calls only, after a
warm-up pipeline has loaded the compiled kernels.

Example
-------
>>> from service.bench.quality.overrides import bench_settings
>>> from service.readers import Interactions, replay
>>> t = Interactions.build("ratings", user=["u1", "u2", "u1", "u2"], item=["a", "a", "b", "b"],
...                        ts_ms=[1000, 2000, 3000, 4000], value=[4, 3, 5, 2])
>>> out = run_pipeline("freshrec-per-event", replay(t),
...                    bench_settings("ratings", {"preprocess": {"holdout_fraction": 0}}), 2)
>>> len(out.run), out.sequence.rows.tolist(), out.run.y.tolist()
(4, [0, 1, 2, 3], [4.0, 3.0, 5.0, 2.0])
>>> out.label_mismatches, out.rejected
(0, {})
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service.bench.quality.scores import ContenderRun
from service.bench.quality.sequence import ExampleSequence
from service.config import Settings
from service.evaluation import ProgressiveEvaluator
from service.readers.replay import Replay
from service.runtime.pipeline import Pipeline, combine_outcomes

clock = time.process_time
WARMUP_MESSAGES = 2000
# Counters of the labeler worth a line in the report when they are not zero.
LABEL_COUNTERS = ("late_clicks", "pending_evicted", "impressions_merged",
                  "impressions_absorbed", "features_truncated")


class RecordingEvaluator(ProgressiveEvaluator):
    """The pipeline's progressive evaluator, also keeping what it was given.

    ``update`` and ``update_ranks`` behave as the parent's; the labels, predictions and
    weights of every example (and every sampled rank, with the number of examples
    evaluated before it) are kept, in order.
    """

    def __init__(self, task: Any, window: int = 10_000, k: int = 10) -> None:
        super().__init__(task, window, k)
        self.parts: list[tuple[npt.NDArray[Any], npt.NDArray[Any], npt.NDArray[Any]]] = []
        self.rank_parts: list[tuple[npt.NDArray[np.int64], int]] = []

    def update(self, y: npt.ArrayLike, predictions: npt.ArrayLike,
               weight: npt.ArrayLike | None = None) -> npt.NDArray[np.float64]:
        losses = super().update(y, predictions, weight)
        n = len(losses)
        w = np.ones(n) if weight is None else np.asarray(weight)
        self.parts.append((np.array(y, np.float64), np.array(predictions, np.float64),
                           np.array(w, np.float64)))
        return losses

    def update_ranks(self, ranks: npt.NDArray[np.int64]) -> None:
        super().update_ranks(ranks)
        self.rank_parts.append((np.array(ranks, np.int64), self.n_examples))

    def recorded(self) -> tuple[npt.NDArray[np.float64], ...]:
        """Labels, predictions and weights of every example so far."""
        if not self.parts:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        return tuple(np.concatenate([p[j] for p in self.parts]) for j in range(3))

    def ranks(self) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """Every sampled rank and the example position it was taken at."""
        if not self.rank_parts:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return (np.concatenate([r for r, _ in self.rank_parts]),
                np.concatenate([np.full(len(r), at, np.int64) for r, at in self.rank_parts]))


@dataclass(slots=True)
class PipelineOutcome:
    """A freshrec contender's run, the sequence it learned, and what the pipeline did.

    Parameters
    ----------
    run
        Its examples, predictions and timing.
    sequence
        The examples traced back to rows (the ones the other contenders get).
    rejected
        Messages refused, by reason, with the first detail of each.
    unmapped
        Examples whose event time matches no row (none unless the pipeline moved a time);
        freshrec is not scored on them either.
    label_mismatches
        Examples whose label differs from their row's (rating, click label, 1), other than
        ``merged_positives``.
    merged_positives
        Positives learned as an earlier, unclicked impression of a pair clicked later in
        its attribution window (the labeler merges repeated impressions); every contender
        learns that row with the positive label.
    rows_learned_twice
        Rows that gave more than one example.
    rows_without_example
        Rows that gave none (held out, merged with another impression, still pending).
    holdout
        Examples held out for the snapshot gate (not learned).
    resets_requested
        Batches in which the pipeline reset the model to its reset point (a ``reset``
        reaction with no reset point yet does nothing and is not counted).
    counters
        The labeler's running counters at the end (late clicks, merged impressions...).
    """

    run: ContenderRun
    sequence: ExampleSequence
    rejected: dict[str, tuple[int, str]] = field(default_factory=dict)
    unmapped: int = 0
    label_mismatches: int = 0
    merged_positives: int = 0
    rows_learned_twice: int = 0
    rows_without_example: int = 0
    holdout: int = 0
    resets_requested: int = 0
    counters: dict[str, float] = field(default_factory=dict)


def _warm_up(replay: Replay, settings: Settings, batch_size: int) -> None:
    """Load the compiled kernels (numba's cache) outside the timed run."""
    pipeline = Pipeline(settings)
    end = min(len(replay), WARMUP_MESSAGES)
    for lo, hi, now in replay.batches(batch_size):
        if lo >= end:
            break
        pipeline.process(replay.values[lo:hi], now_ms=now)


def run_pipeline(name: str, replay: Replay, settings: Settings, batch_size: int,
                 warm_up: bool = True) -> PipelineOutcome:
    """Replay every message through a fresh pipeline in batches of ``batch_size``."""
    if warm_up:
        _warm_up(replay, settings, batch_size)
    pipeline = Pipeline(settings)
    learner_task = pipeline.evaluator.task
    recorder = RecordingEvaluator(learner_task, window=settings.learner.eval_window)
    pipeline.evaluator = recorder
    rejected: Counter[str] = Counter()
    details: dict[str, str] = {}
    ts_parts: list[npt.NDArray[np.int64]] = []
    drift: list[dict[str, Any]] = []
    holdout = resets = 0
    stats: dict[str, float] = {}
    cpu = 0.0
    batches = [(replay.values[lo:hi], now) for lo, hi, now in
               replay.batches(batch_size)]
    if replay.table.kind == "clicks":
        # Resolve the last impressions as a live stream's later traffic would.
        marker, at = replay.end_marker(settings.preprocess.attribution_window_ms + 1)
        batches.append(([marker], at))
    for k, (values, now) in enumerate(batches):
        started = clock()
        outcome = pipeline.process(values, now_ms=now)
        if k == len(batches) - 1:  # the data set ends: its last mini-batch is learned too
            outcome = combine_outcomes([(list(range(len(values))), outcome),
                                        ([], pipeline.finish())], len(values))
        cpu += clock() - started
        for r in outcome.rejected:
            rejected[r.reason] += 1
            details.setdefault(r.reason, r.detail)
        ts_parts.append(outcome.event_ts_ms)
        holdout += outcome.n_holdout
        resets += int(outcome.reset_requested)
        drift.extend({"detector": d.detector, "signal": d.signal, "reaction": d.reaction,
                      "at_event": int(d.at_event), "statistic": float(d.statistic)}
                     for d in outcome.drift)
        stats = outcome.stats or stats
    y, pred, weight = recorder.recorded()
    ts = np.concatenate(ts_parts) if ts_parts else np.zeros(0, np.int64)
    if len(ts) != len(y):
        raise RuntimeError(f"the pipeline learned {len(ts)} examples but evaluated {len(y)}: "
                           "the evaluator no longer sees every learned example")
    rows = replay.rows_of(ts, y)
    mapped = rows >= 0
    target = replay.table.target()
    differs = target[rows[mapped]] != y[mapped].astype(np.float32)
    # A positive on an unclicked row is an impression merged with a later clicked one of
    # the same pair (Replay.rows_of): the labeler's doing, not a wrong label.
    merged = differs & (y[mapped] > 0) if replay.table.kind == "clicks" else np.zeros_like(differs)
    mismatches = int((differs & ~merged).sum())
    unique = len(np.unique(rows[mapped]))
    ranks, rank_at = recorder.ranks()
    strategy = settings.learner.strategy
    # Scored on the examples the other contenders get, and on no other: an example that
    # traces back to no row is one they cannot learn (its loss would count for freshrec
    # alone).
    run = ContenderRun(
        name=name, library="freshrec", task=learner_task, y=y[mapped], pred=pred[mapped],
        weight=weight[mapped],
        cpu_seconds=cpu, config=f"{settings.learner.model}, {strategy}",
        timed="Pipeline.process: decode, preprocess, learn, evaluate, drift",
        messages=sum(len(v) for v, _ in batches),
        ranks=ranks if learner_task == "ranking" else None,
        rank_at=rank_at if learner_task == "ranking" else None,
        drift=drift, evaluator=recorder.result(),
    )
    sequence = ExampleSequence(rows[mapped], y[mapped].astype(np.float32),
                               weight[mapped].astype(np.float32), ts[mapped])
    return PipelineOutcome(
        run=run, sequence=sequence,
        rejected={k: (v, details[k]) for k, v in rejected.most_common()},
        unmapped=int((~mapped).sum()), label_mismatches=mismatches,
        merged_positives=int(merged.sum()),
        rows_learned_twice=int(mapped.sum()) - unique,
        rows_without_example=len(replay.table) - unique, holdout=holdout,
        resets_requested=resets,
        counters={k: stats[k] for k in LABEL_COUNTERS if stats.get(k)},
    )
