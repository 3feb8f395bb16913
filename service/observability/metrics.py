"""The catalogue of every Prometheus metric freshrec exports.

One ``ServiceMetrics`` object holds them all as attributes, on its own registry, so that
tests can create independent instances and the runtime can serve exactly this registry.
Every name starts with ``freshrec_``; labels are bounded (topics, partitions, reasons,
detectors), never a user or item id. ``docs/metrics.md`` documents each metric and a unit
test keeps the two in step.

Counters are exported with a ``_total`` suffix (``events_consumed`` is
``freshrec_events_consumed_total``). Snapshot age is computed in PromQL, not exported:
``time() - freshrec_last_snapshot_timestamp_seconds``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    PlatformCollector,
    ProcessCollector,
)

from service import __version__

SERVICE_STATES = (
    "starting",
    "standby",
    "recovering",
    "running",
    "paused_backpressure",
    "waiting_for_broker",
    "stopping",
)

# Seconds between an event's timestamp and its processing: from "live" to "a day behind".
EVENT_TIME_LAG_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 21600, 86400,
)
# Seconds to predict-and-learn one batch.
UPDATE_LATENCY_BUCKETS = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
)
# Events per batch, up to the largest batch the consumer may hand over.
BATCH_SIZE_BUCKETS = (1, 10, 100, 500, 1000, 2500, 5000, 10_000, 25_000, 50_000, 100_000)
# Seconds to write a checkpoint (model + state + offsets) to object storage.
CHECKPOINT_DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class _Detection(Protocol):
    detector: str
    signal: str


class ServiceMetrics:
    """Every metric of the service, registered on one registry.

    Parameters
    ----------
    registry
        Where to register; a new ``CollectorRegistry`` when omitted, so that instances are
        independent (tests, several services in one process).
    process_metrics
        Also register the standard ``process_*`` and ``python_info`` collectors on this
        registry (CPU, memory, open files, start time; the alert rules use
        ``process_start_time_seconds``).

    Example
    -------
    >>> from prometheus_client import generate_latest
    >>> m = ServiceMetrics()
    >>> m.events_consumed.labels(topic="events").inc(100)
    >>> m.set_state("running")
    >>> text = generate_latest(m.registry).decode()
    >>> 'freshrec_events_consumed_total{topic="events"} 100.0' in text
    True
    >>> 'freshrec_service_state{state="running"} 1.0' in text
    True
    """

    def __init__(
        self, registry: CollectorRegistry | None = None, process_metrics: bool = True
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        if process_metrics:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)

        # Ingest and preprocessing.
        self.events_consumed = Counter(
            "freshrec_events_consumed", "Events read from Kafka.", ["topic"], registry=r
        )
        self.events_applied = Counter(
            "freshrec_events_applied",
            "Events that became training examples and were learned from.",
            ["topic"],
            registry=r,
        )
        self.events_rejected = Counter(
            "freshrec_events_rejected",
            "Events rejected by decoding or validation, by reason (sent to the DLQ).",
            ["reason"],
            registry=r,
        )
        self.events_deduplicated = Counter(
            "freshrec_events_deduplicated",
            "Events dropped as duplicates of an event id already seen.",
            registry=r,
        )
        self.dlq_messages = Counter(
            "freshrec_dlq_messages",
            "Copies produced to the dead-letter topic, by delivery outcome "
            "(acked|failed|undeliverable: given up, its reference is in the log).",
            ["outcome"],
            registry=r,
        )
        self.dlq_reduced_copies = Counter(
            "freshrec_dlq_reduced_copies",
            "Dead-letter copies acknowledged in a reduced form (cut|reference) because the "
            "full copy did not fit or was refused.",
            ["form"],
            registry=r,
        )
        self.events_rejected_share = Gauge(
            "freshrec_events_rejected_share",
            "Share of the most recent consumed events (about 10k) that were rejected "
            "(duplicates excluded).",
            registry=r,
        )
        self.pipeline_failures = Counter(
            "freshrec_pipeline_failures",
            "Batches whose processing raised an exception (a bug): the job reloaded its "
            "newest checkpoint and isolated the message, see the log.",
            registry=r,
        )
        self.examples_trained = Counter(
            "freshrec_examples_trained", "Training examples the model learned from.", registry=r
        )
        self.updates_skipped_nonfinite = Counter(
            "freshrec_updates_skipped_nonfinite",
            "Model updates skipped because the gradient or loss was NaN or infinite.",
            registry=r,
        )

        # Lag and throughput.
        self.consumer_lag = Gauge(
            "freshrec_consumer_lag",
            "Messages between the committed offset and the end of the partition.",
            ["topic", "partition"],
            registry=r,
        )
        self.event_time_lag_seconds = Histogram(
            "freshrec_event_time_lag_seconds",
            "Processing time minus event time, per event.",
            buckets=EVENT_TIME_LAG_BUCKETS,
            registry=r,
        )
        self.update_latency_seconds = Histogram(
            "freshrec_update_latency_seconds",
            "Seconds to predict and learn one batch.",
            buckets=UPDATE_LATENCY_BUCKETS,
            registry=r,
        )
        self.batch_size = Histogram(
            "freshrec_batch_size",
            "Events per processed batch.",
            buckets=BATCH_SIZE_BUCKETS,
            registry=r,
        )

        # Model quality.
        self.progressive_loss = Gauge(
            "freshrec_progressive_loss",
            "Progressive-validation loss (predicted before learning); window is cumulative "
            "or recent.",
            ["model", "metric", "window"],
            registry=r,
        )
        self.progressive_score = Gauge(
            "freshrec_progressive_score",
            "Progressive-validation score, higher is better (AUC, recall@k, NDCG@k); "
            "window is cumulative or recent.",
            ["model", "metric", "window"],
            registry=r,
        )

        self.label_outcomes = Gauge(
            "freshrec_label_outcomes",
            "What became of impressions and positives (task binary), totals since the "
            "stream's first checkpoint: impressions_converted (learned as positives), "
            "negatives_emitted, late_clicks (after their impression's window), "
            "positives_without_impression (counted, not learned), impressions_merged, "
            "pending_evicted (resolved early: max_pending full), features_truncated.",
            ["outcome"],
            registry=r,
        )
        self.shadow_member_loss = Gauge(
            "freshrec_shadow_member_loss",
            "Recent progressive loss (squared error, or log loss for clicks, over about "
            "10,000 examples) of each member of the shadow stack on its own: the main "
            "model and each shadow learner.",
            ["member"],
            registry=r,
        )

        # Snapshots.
        self.model_version = Gauge(
            "freshrec_model_version", "Version of the last published snapshot.", registry=r
        )
        self.last_snapshot_timestamp_seconds = Gauge(
            "freshrec_last_snapshot_timestamp_seconds",
            "Unix time of the last published snapshot (0 before the first).",
            registry=r,
        )
        self.snapshots_published = Counter(
            "freshrec_snapshots_published", "Snapshots that passed the gate.", registry=r
        )
        self.snapshots_rejected = Counter(
            "freshrec_snapshots_rejected",
            "Snapshot candidates rejected by the gate, by reason.",
            ["reason"],
            registry=r,
        )

        # Checkpoints.
        self.checkpoint_duration_seconds = Histogram(
            "freshrec_checkpoint_duration_seconds",
            "Seconds to write one checkpoint.",
            buckets=CHECKPOINT_DURATION_BUCKETS,
            registry=r,
        )
        self.last_checkpoint_timestamp_seconds = Gauge(
            "freshrec_last_checkpoint_timestamp_seconds",
            "Unix time of the last successful checkpoint (0 before the first).",
            registry=r,
        )
        self.checkpoints_written = Counter(
            "freshrec_checkpoints_written", "Checkpoints written successfully.", registry=r
        )
        self.checkpoint_failures = Counter(
            "freshrec_checkpoint_failures", "Checkpoint writes that failed.", registry=r
        )
        self.checkpoint_stall_seconds = Histogram(
            "freshrec_checkpoint_stall_seconds",
            "Seconds consumption stopped to copy the state for one checkpoint.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=r,
        )
        self.recoveries = Counter(
            "freshrec_recoveries",
            "Times this process became the active instance (start or standby takeover).",
            registry=r,
        )

        # Drift.
        self.drift_statistic = Gauge(
            "freshrec_drift_statistic",
            "Current statistic of a drift detector on a signal.",
            ["detector", "signal"],
            registry=r,
        )
        self.drift_detections = Counter(
            "freshrec_drift_detections",
            "Drifts detected, by detector and signal.",
            ["detector", "signal"],
            registry=r,
        )
        self.drift_reactions = Counter(
            "freshrec_drift_reactions",
            "Reactions executed after a drift (alert|adapt|reset).",
            ["detector", "reaction"],
            registry=r,
        )

        # Scale-out: shared parameters exchanged with the other shards (0 with one shard).
        self.shared_blocks_written = Counter(
            "freshrec_shared_blocks_written",
            "Blocks of this shard's shared-parameter deltas written to the object store.",
            registry=r,
        )
        self.shared_last_written_block = Gauge(
            "freshrec_shared_last_written_block",
            "Sequence number of the newest block of this shard known to be written.",
            registry=r,
        )
        self.shared_last_cut_block = Gauge(
            "freshrec_shared_last_cut_block",
            "Sequence number of the newest block this shard cut (written once its "
            "checkpoint is durable).",
            registry=r,
        )
        self.shared_unsent_examples = Gauge(
            "freshrec_shared_unsent_examples",
            "Examples learned since this shard last cut a block (learning not yet shared).",
            registry=r,
        )
        self.shared_merges = Counter(
            "freshrec_shared_merges",
            "Merges: times blocks of other shards were folded into the model between batches.",
            registry=r,
        )
        self.shared_blocks_folded = Counter(
            "freshrec_shared_blocks_folded",
            "Blocks of another shard folded into this shard's shared rows.",
            ["shard"],
            registry=r,
        )
        self.shared_last_folded_block = Gauge(
            "freshrec_shared_last_folded_block",
            "Sequence number of the newest block folded from another shard.",
            ["shard"],
            registry=r,
        )
        self.shared_staleness_seconds = Gauge(
            "freshrec_shared_staleness_seconds",
            "Age, when folded, of the newest block folded from another shard.",
            ["shard"],
            registry=r,
        )
        self.shared_exchange_failures = Counter(
            "freshrec_shared_exchange_failures",
            "Shared-parameter block writes, reads or folds that failed (retried later).",
            registry=r,
        )

        # Lifecycle.
        self.service_state = Gauge(
            "freshrec_service_state",
            "1 for the state the service is in, 0 for the others.",
            ["state"],
            registry=r,
        )
        self.build_info = Info("freshrec_build", "Version of freshrec.", registry=r)
        self.build_info.info({"version": __version__})
        self.set_state("starting")
        # Series that alerts take increase() of must exist at 0 before the first event:
        # Prometheus does not count a series' first sample as an increase.
        for outcome in ("acked", "failed", "undeliverable"):
            self.dlq_messages.labels(outcome=outcome)
        for form in ("cut", "reference"):
            self.dlq_reduced_copies.labels(form=form)

    def set_state(self, name: str) -> None:
        """Set ``service_state{state=name}`` to 1 and every other state to 0."""
        if name not in SERVICE_STATES:
            raise ValueError(f"unknown service state {name!r}; use one of {SERVICE_STATES}.")
        for state in SERVICE_STATES:
            self.service_state.labels(state=state).set(1.0 if state == name else 0.0)

    def observe_drift(
        self,
        statistics: Mapping[tuple[str, str], float],
        detections: Iterable[_Detection] = (),
    ) -> None:
        """Export a ``DriftMonitor``'s statistics and count its detections (once per batch).

        Reactions are counted by whoever executes them, in ``drift_reactions``. Detection and
        reaction counters of every detector are created at 0 here, before any detection,
        because Prometheus's ``increase()`` ignores a series' first sample.
        """
        for (detector, signal), value in statistics.items():
            self.drift_statistic.labels(detector=detector, signal=signal).set(value)
            self.drift_detections.labels(detector=detector, signal=signal)
            for reaction in ("alert", "adapt", "reset"):
                self.drift_reactions.labels(detector=detector, reaction=reaction)
        for d in detections:
            self.drift_detections.labels(detector=d.detector, signal=d.signal).inc()
