"""The service's per-batch hot path: batch selection, offsets, throttled gauges, micro-batch.

Pure: no broker. ``Job._advance`` and ``Job._record`` are called on stand-ins for the job
with just the attributes they read, so the tests exercise the real code without Kafka.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.config import Settings
from service.drift.detection import DriftDetection
from service.examples import ExampleBatch
from service.learners import BiasedMF, MicroBatch
from service.learners.fm import FM
from service.learners.strategies import PerEvent, row_rate
from service.observability.http import HealthState
from service.observability.metrics import ServiceMetrics
from service.observability.rejections import RejectionWatch
from service.runtime.job import Counters, Job
from service.runtime.pipeline import BatchOutcome

# -- ExampleBatch.select --------------------------------------------------------------------


def _reference_select(batch: ExampleBatch, mask: np.ndarray) -> tuple[list[Any], ...]:
    """Row by row, in plain Python: what select must return."""
    rows = [i for i in range(len(batch)) if mask[i]]
    feats = [
        [(int(batch.feat_idx[j]), float(batch.feat_val[j]))
         for j in range(batch.feat_indptr[i], batch.feat_indptr[i + 1])]
        for i in rows
    ]
    return rows, feats


@given(lengths=st.lists(st.integers(0, 4), min_size=0, max_size=40), data=st.data())
def test_select_keeps_the_masked_rows_and_exactly_their_side_features(
    lengths: list[int], data: st.DataObject
) -> None:
    n = len(lengths)
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(lengths, out=indptr[1:])
    nnz = int(indptr[-1])
    batch = ExampleBatch(
        user=np.arange(n, dtype=np.int64), item=np.arange(n, dtype=np.int64) * 3,
        y=np.arange(n, dtype=np.float32), weight=np.ones(n, np.float32),
        ts_ms=np.arange(n, dtype=np.int64) * 10, feat_indptr=indptr,
        feat_idx=np.arange(nnz, dtype=np.int64) * 7 + 1,
        feat_val=(np.arange(nnz) / 2).astype(np.float32),
        holdout=np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)),
                         dtype=np.bool_),
    )
    mask = np.array(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), dtype=np.bool_)
    out = batch.select(mask)
    rows, feats = _reference_select(batch, mask)
    assert out.user.tolist() == rows
    assert out.item.tolist() == [3 * r for r in rows]
    assert out.holdout.tolist() == batch.holdout[rows].tolist()
    got = [
        [(int(out.feat_idx[j]), float(out.feat_val[j]))
         for j in range(out.feat_indptr[i], out.feat_indptr[i + 1])]
        for i in range(len(out))
    ]
    assert got == feats
    assert out.feat_idx.dtype == np.int64 and out.feat_val.dtype == np.float32


def test_select_says_what_is_wrong_with_a_mask_of_the_wrong_length() -> None:
    batch = ExampleBatch.from_arrays([1, 2, 3], [1, 2, 3], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="one boolean per example"):
        batch.select(np.array([True, False]))


# -- Job._advance: offsets and per-partition counts -----------------------------------------


@dataclass
class _Msg:
    p: int
    o: int

    def partition(self) -> int:
        return self.p

    def offset(self) -> int:
        return self.o


def _advance_target() -> Any:
    return SimpleNamespace(positions={}, counters=Counters())


@given(st.lists(st.tuples(st.integers(0, 3), st.integers(1, 5)), min_size=1, max_size=60))
def test_advance_records_the_next_offset_and_count_of_every_partition(
    steps: list[tuple[int, int]],
) -> None:
    # Offsets ascend per partition, as Kafka delivers them; partitions interleave freely.
    next_offset: dict[int, int] = {}
    messages = []
    for p, gap in steps:
        next_offset[p] = next_offset.get(p, 0) + gap
        messages.append(_Msg(p, next_offset[p]))
    job = _advance_target()
    job.counters.per_partition = {0: 10}
    Job._advance(job, messages)  # type: ignore[arg-type]
    expected_counts: dict[int, int] = {0: 10}
    for m in messages:
        expected_counts[m.p] = expected_counts.get(m.p, 0) + 1
    assert job.positions == {p: o + 1 for p, o in next_offset.items()}
    assert job.counters.per_partition == expected_counts


# -- Job._record: gauges throttled while a backlog is read, never stale when caught up ------


@dataclass
class _Consumer:
    behind: int = 5

    def lag(self, positions: dict[int, int]) -> dict[int, int]:
        return {p: self.behind for p in positions}


@dataclass
class _Evaluator:
    value: float = 1.0
    calls: int = 0

    def report(self) -> dict[tuple[str, str], float]:
        self.calls += 1
        return {("rmse", "cumulative"): self.value}


@dataclass
class _Drift:
    stats: dict[tuple[str, str], float] = field(
        default_factory=lambda: {("adwin", "loss"): 0.5})

    def statistics(self) -> dict[tuple[str, str], float]:
        return self.stats


def _record_target() -> Any:
    settings = Settings(kafka={"batch_size": 100})  # type: ignore[arg-type]
    job = SimpleNamespace(
        metrics=ServiceMetrics(process_metrics=False), counters=Counters(), settings=settings,
        topic="t", positions={0: 1}, consumer=_Consumer(),
        pipeline=SimpleNamespace(evaluator=_Evaluator(), drift=_Drift()),
        _gauges_at=float("-inf"), rejections=RejectionWatch(), health=HealthState(),
        _rejection_warned_at=float("-inf"),
    )
    job._watch_rejections = lambda *args: Job._watch_rejections(job, *args)  # type: ignore[arg-type]
    return job


def _outcome(n: int, drift: list[DriftDetection] | None = None) -> BatchOutcome:
    return BatchOutcome(
        n_input=n, rejected=[], n_accepted=n, n_examples=n, n_trained=n, n_holdout=0,
        n_skipped_nonfinite=0, losses=np.zeros(n), event_ts_ms=np.zeros(n, np.int64),
        learn_seconds=0.0, drift=drift or [],
    )


def _gauge(job: Any, name: str, **labels: str) -> float | None:
    value = job.metrics.registry.get_sample_value(name, labels)
    return None if value is None else float(value)


def test_record_refreshes_gauges_at_most_every_interval_while_batches_are_full() -> None:
    job = _record_target()
    for _ in range(20):
        Job._record(job, _outcome(100), 0.001)
    # Every counter and the lag count every batch; the summary gauges were read once.
    assert job.counters.consumed == 2000
    assert _gauge(job, "freshrec_events_consumed_total", topic="t") == 2000
    job.consumer.behind = 7
    Job._record(job, _outcome(100), 0.001)
    assert _gauge(job, "freshrec_consumer_lag", topic="t", partition="0") == 7
    assert job.pipeline.evaluator.calls == 1


def test_record_refreshes_everything_once_caught_up() -> None:
    job = _record_target()
    Job._record(job, _outcome(100), 0.001)
    job.pipeline.evaluator.value = 0.25
    Job._record(job, _outcome(100), 0.001)  # full: within the interval, not refreshed
    labels = {"model": job.settings.learner.model, "metric": "rmse", "window": "cumulative"}
    assert _gauge(job, "freshrec_progressive_loss", **labels) == 1.0
    Job._record(job, _outcome(30), 0.001)  # partial batch: caught up, so exact now
    assert _gauge(job, "freshrec_progressive_loss", **labels) == 0.25
    job.pipeline.evaluator.value = 0.125
    job.consumer.behind = 0
    Job._record(job, _outcome(100), 0.001)  # full, but nothing left to read: exact too
    assert _gauge(job, "freshrec_progressive_loss", **labels) == 0.125
    assert _gauge(job, "freshrec_consumer_lag", topic="t", partition="0") == 0


def test_record_counts_every_detection_even_between_refreshes() -> None:
    job = _record_target()
    Job._record(job, _outcome(100), 0.001)
    hit = DriftDetection("adwin", "loss", 1.0, 42, "alert")
    Job._record(job, _outcome(100, [hit]), 0.001)
    Job._record(job, _outcome(100, [hit, hit]), 0.001)
    assert _gauge(job, "freshrec_drift_detections_total", detector="adwin",
                  signal="loss") == 3
    assert _gauge(job, "freshrec_drift_reactions_total", detector="adwin",
                  reaction="alert") == 3


# -- micro-batch: close to per-event accuracy, from the first event ------------------------


@settings(deadline=None)  # the first example pays numba's start-up
@given(eta=st.floats(1e-4, 0.999), count=st.integers(1, 10_000))
def test_row_rate_is_a_stable_step_between_eta_and_count_times_eta(eta: float,
                                                                    count: int) -> None:
    rate = row_rate(eta, count)
    assert eta <= rate + 1e-12
    assert rate <= min(1.0, count * eta) + 1e-12
    assert row_rate(eta, count + 1) >= rate
    assert row_rate(eta, 1) == eta


def _ratings(n: int, seed: int = 3) -> ExampleBatch:
    """Zipf-popular items with true biases around a mean of 3.5, plus noise.

    Before the fix, micro-batches of 256 scored 30k events of it at RMSE 0.64 (BiasedMF
    and FM alike) against 0.54 and 0.56 per event.
    """
    rng = np.random.default_rng(seed)
    users = rng.integers(1, 400, n)
    items = np.minimum(rng.zipf(1.3, n), 199)
    ub, ib = rng.normal(0, 0.5, 400), rng.normal(0, 0.7, 200)
    y = np.clip(3.5 + ub[users] + ib[items] + rng.normal(0, 0.5, n), 1, 5)
    return ExampleBatch.from_arrays(users, items, y, ts_ms=np.arange(n))


def _progressive_rmse(model: Any, batch: ExampleBatch) -> float:
    preds, _ = model.learn(batch)
    return float(np.sqrt(np.mean((preds - batch.y) ** 2)))


@pytest.mark.parametrize(("make", "n"), [
    (lambda s: BiasedMF(400, 200, n_factors=4, strategy=s), 20_000),
    # FM (AdaGrad) still learns more slowly than per event over its first few thousand
    # events (AdaGrad bounds each coordinate's first step by eta, and a mini-batch takes
    # one step where per event takes c), then overtakes it.
    (lambda s: FM(400, 200, feature_bits=4, n_factors=4, strategy=s), 40_000),
], ids=["biased_mf", "fm"])
def test_micro_batch_is_about_as_accurate_as_per_event_on_a_short_stream(make: Any,
                                                                         n: int) -> None:
    batch = _ratings(n)
    per_event = _progressive_rmse(make(PerEvent()), batch)
    micro = _progressive_rmse(make(MicroBatch(256)), batch)
    assert micro <= per_event * 1.03, (micro, per_event)


def _sessions(n: int, seed: int = 4) -> tuple[ExampleBatch, int]:
    """Users arriving one session at a time (10-80 ratings each), as MovieLens in time
    order: a mini-batch holds a few users, each many times."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(10, 80, n // 10)
    users = np.repeat(np.arange(1, len(lengths) + 1), lengths)[:n]
    items = np.minimum(rng.zipf(1.3, n), 299)
    ub, ib = rng.normal(0, 0.7, len(lengths) + 1), rng.normal(0, 0.5, 300)
    y = np.clip(3.5 + ub[users] + ib[items] + rng.normal(0, 0.5, n), 1, 5)
    return ExampleBatch.from_arrays(users, items, y, ts_ms=np.arange(n)), len(lengths) + 1


@pytest.mark.parametrize("make", [
    lambda n, s: BiasedMF(n, 300, n_factors=4, strategy=s),
    lambda n, s: FM(n, 300, feature_bits=4, n_factors=4, strategy=s),
], ids=["biased_mf", "fm"])
def test_micro_batch_is_as_accurate_as_per_event_learning_scored_frozen(make: Any) -> None:
    # On sessions the micro-batch loses to per event (RMSE 0.845 against 0.575) because
    # a user's ratings in a mini-batch are all scored before any is learned from. That is
    # the bound of a frozen mini-batch, whatever its step: per-event learning scored with
    # each mini-batch's starting parameters loses as much (BiasedMF 0.838, FM 0.941).
    # The micro-batch step must stay at that bound (strategies' notes: a step rule that
    # moved popular rows further was worse).
    batch, n_users = _sessions(20_000)
    size = 256
    after = slice(size, None)  # the first mini-batch is scored untrained either way
    per_event = make(n_users, PerEvent())
    frozen = np.empty(len(batch), dtype=np.float32)
    for start in range(0, len(batch), size):
        part = batch.select((np.arange(len(batch)) >= start)
                            & (np.arange(len(batch)) < start + size))
        frozen[start : start + size] = per_event.predict(part)
        per_event.learn(part)
    micro, _ = make(n_users, MicroBatch(size)).learn(batch)

    def rmse(preds: np.ndarray) -> float:
        return float(np.sqrt(np.mean((preds[after] - batch.y[after]) ** 2)))

    assert rmse(micro) <= rmse(frozen) * 1.02, (rmse(micro), rmse(frozen))


def test_a_checkpoint_that_raises_is_logged_and_retried_not_fatal() -> None:
    def broken() -> None:
        raise ValueError("planted: the state copy failed")

    job = SimpleNamespace(metrics=ServiceMetrics(process_metrics=False),
                          _checkpoint_and_publish_when_due=broken,
                          _last_checkpoint_at=0.0, _last_snapshot_at=0.0)
    Job._maybe_checkpoint_and_publish(job)  # type: ignore[arg-type]
    assert _gauge(job, "freshrec_checkpoint_failures_total") == 1
    assert job._last_checkpoint_at > 0  # not again at once: at the next interval
