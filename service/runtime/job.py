"""The main job: Kafka in, model updates, checkpoints and snapshots out, metrics throughout.

One iteration of the loop:

1. Poll a batch of messages from the assigned partitions.
2. Run the pure pipeline over their values (decode → preprocess → predict-then-learn).
3. Produce every rejected message to the dead-letter topic and wait for the broker's
   acknowledgement: only then does a rejected offset count as processed.
4. Advance the next offset of each partition, update metrics once for the whole batch.
5. When due, checkpoint the full state with those offsets (exactly-once recovery), then
   commit the offsets to Kafka; when due, offer the model to the promotion gate and publish
   it as a snapshot if it passes.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from dataclasses import dataclass
from types import FrameType

import numpy as np
from confluent_kafka import TopicPartition

from service import __version__
from service.checkpoint.manager import CheckpointManager
from service.config import Settings
from service.ingest.admin import ensure_topics
from service.ingest.consumer import BatchConsumer
from service.ingest.dead_letter import DeadLetterProducer
from service.observability.http import HealthState, HttpEndpoint
from service.observability.metrics import ServiceMetrics
from service.runtime.pipeline import BatchOutcome, Pipeline
from service.snapshots.publisher import SnapshotPublisher
from service.storage import StorageError, open_store

log = logging.getLogger(__name__)

# Evaluator metrics exported as freshrec_progressive_loss (lower is better).
LOSSES = frozenset({"rmse", "mae", "log_loss", "logloss"})


@dataclass(slots=True)
class Counters:
    """Running totals since this process started."""

    consumed: int = 0
    applied: int = 0
    rejected: int = 0
    since_publication: int = 0  # applied since the last published snapshot (the gate's)
    since_attempt: int = 0  # applied since the gate was last asked (the schedule's)
    since_checkpoint: int = 0


class Job:
    """The freshrec service.

    Parameters
    ----------
    settings
        All settings (see ``service.config.Settings``).
    stop_when_idle_s
        Stop by itself after this many seconds without a message (for batch-style runs,
        tests and the demo); ``None`` runs until SIGTERM/SIGINT.
    """

    def __init__(self, settings: Settings, *, stop_when_idle_s: float | None = None) -> None:
        self.settings = settings
        self.stop_when_idle_s = stop_when_idle_s
        self.metrics = ServiceMetrics()
        self.metrics.build_info.info({"version": __version__, "model": settings.learner.model})
        self.health = HealthState()
        self._stop = threading.Event()
        self.counters = Counters()
        self.topic = settings.kafka.topic
        self.store = open_store(settings.storage)
        self.pipeline = Pipeline(settings)
        self.publisher = SnapshotPublisher(self.store, settings.snapshot)
        self.checkpoints = CheckpointManager(
            self.store, settings.checkpoint, group_id=settings.kafka.group_id, topic=self.topic
        )
        # Next offset to process, per assigned partition: the single source of truth for
        # what a checkpoint records and what is committed.
        self.positions: dict[int, int] = {}
        self.http = HttpEndpoint(
            settings.http.host, settings.http.port, self.metrics.registry, self.health
        )
        self._last_snapshot_at = time.monotonic()
        self._last_checkpoint_at = time.monotonic()
        self._set_state("starting")

    # -- lifecycle -------------------------------------------------------------------

    def request_stop(self, *_: object) -> None:
        """Ask the loop to stop after the current batch (safe from signal handlers)."""
        self._stop.set()

    def install_signal_handlers(self) -> None:
        def handler(signum: int, frame: FrameType | None) -> None:
            log.info("received %s: finishing the batch, checkpointing, then exiting",
                     signal.Signals(signum).name)
            self.request_stop()

        signal.signal(signal.SIGTERM, handler)
        signal.signal(signal.SIGINT, handler)

    def _set_state(self, state: str, detail: str = "") -> None:
        self.health.set(state, detail)
        self.metrics.set_state(state)

    def run(self) -> int:
        """Run until asked to stop; returns a process exit code."""
        self.http.start()
        log.info("serving /metrics, /healthz and /readyz on http://%s", self.http.address)
        kafka = self.settings.kafka
        if kafka.create_topics:
            self._set_state("waiting_for_broker")
            ensure_topics(
                kafka.bootstrap_servers,
                {kafka.topic: kafka.topic_partitions, kafka.dead_letter_topic(): 1},
            )
        self._set_state("recovering")
        restored = self.checkpoints.restore_latest(self.pipeline)
        if restored is not None:
            log.info("restored checkpoint %s (offsets %s)", restored.name, restored.offsets)
        # Loading the champion now surfaces a broken snapshot store at start, not later.
        self.publisher.load_champion()
        self.dlq = DeadLetterProducer(kafka.bootstrap_servers, kafka.dead_letter_topic())
        self.consumer = BatchConsumer(
            kafka.bootstrap_servers,
            kafka.group_id,
            kafka.topic,
            auto_offset_reset=kafka.auto_offset_reset,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
        )
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    # -- rebalances ------------------------------------------------------------------

    def _on_assign(self, partitions: list[TopicPartition]) -> None:
        """Start each new partition where the newest checkpoint says, if it says."""
        stored = self.checkpoints.offsets()
        for tp in partitions:
            if tp.partition in stored:
                tp.offset = stored[tp.partition]
                self.positions[tp.partition] = stored[tp.partition]
        log.info("assigned partitions %s", [(tp.partition, tp.offset) for tp in partitions])
        self._set_state("running")

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        """Checkpoint before giving partitions up, so the next owner loses nothing."""
        if self.positions:
            self._checkpoint(wait=True)
        for tp in partitions:
            self.positions.pop(tp.partition, None)

    # -- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        kafka = self.settings.kafka
        idle_since = time.monotonic()
        while not self._stop.is_set():
            self.health.beat()
            self.checkpoints.poll_background()
            result = self.consumer.poll(kafka.batch_size, kafka.poll_timeout_s)
            for err in result.errors:
                log.warning("kafka: %s", err)
            if not result.messages:
                if (self.stop_when_idle_s is not None
                        and time.monotonic() - idle_since > self.stop_when_idle_s):
                    log.info("idle for %.0fs: stopping", self.stop_when_idle_s)
                    break
                self._maybe_checkpoint_and_publish()
                continue
            idle_since = time.monotonic()
            self._process(result.messages)
            self._maybe_checkpoint_and_publish()

    def _process(self, messages: list) -> None:  # type: ignore[type-arg]
        started = time.perf_counter()
        values = [m.value() for m in messages]
        outcome = self.pipeline.process(values)
        if outcome.rejected:
            self._dead_letter(messages, outcome)
        for m in messages:
            # Messages of a partition arrive in offset order within a batch.
            self.positions[m.partition()] = m.offset() + 1
        self._record(outcome, time.perf_counter() - started)

    def _dead_letter(self, messages: list, outcome: BatchOutcome) -> None:  # type: ignore[type-arg]
        for r in outcome.rejected:
            self.dlq.send(messages[r.index], r.reason, r.detail)
        acked, failed = self.dlq.flush()
        if failed:
            # Never advance past a rejected message whose copy the broker did not take:
            # stop, and let the restart retry from the last checkpoint.
            raise RuntimeError(
                f"{failed} dead-letter messages were not acknowledged by the broker; "
                "stopping so that they are retried from the last checkpoint"
            )
        self.metrics.dlq_messages.labels(outcome="acked").inc(acked)

    def _record(self, outcome: BatchOutcome, seconds: float) -> None:
        m = self.metrics
        n_rejected = len(outcome.rejected)
        applied = outcome.n_input - n_rejected
        c = self.counters
        c.consumed += outcome.n_input
        c.applied += applied
        c.rejected += n_rejected
        c.since_publication += applied
        c.since_attempt += applied
        c.since_checkpoint += outcome.n_input
        m.events_consumed.labels(topic=self.topic).inc(outcome.n_input)
        m.events_applied.labels(topic=self.topic).inc(applied)
        if n_rejected:
            reasons: dict[str, int] = {}
            for r in outcome.rejected:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
            for reason, count in reasons.items():
                m.events_rejected.labels(reason=reason).inc(count)
            m.events_deduplicated.inc(reasons.get("duplicate", 0))
        m.examples_trained.inc(outcome.n_trained)
        m.updates_skipped_nonfinite.inc(outcome.n_skipped_nonfinite)
        m.batch_size.observe(outcome.n_input)
        m.update_latency_seconds.observe(seconds)
        if len(outcome.event_ts_ms):
            lag_s = time.time() - float(np.median(outcome.event_ts_ms)) / 1000.0
            m.event_time_lag_seconds.observe(max(0.0, lag_s))
        model = self.settings.learner.model
        for (metric, window), value in self.pipeline.evaluator.report().items():
            if metric not in LOSSES:
                continue  # AUC, recall and NDCG are scores (higher is better), not losses
            window_label = "cumulative" if window == "cumulative" else "recent"
            m.progressive_loss.labels(model=model, metric=metric, window=window_label).set(value)
        for (detector, sig), value in self.pipeline.drift.statistics().items():
            m.drift_statistic.labels(detector=detector, signal=sig).set(value)
        for d in outcome.drift:
            m.drift_detections.labels(detector=d.detector, signal=d.signal).inc()
        for p, lag in self.consumer.lag(self.positions).items():
            m.consumer_lag.labels(topic=self.topic, partition=str(p)).set(lag)

    # -- checkpoints and snapshots ----------------------------------------------------

    def _maybe_checkpoint_and_publish(self) -> None:
        now = time.monotonic()
        cp = self.settings.checkpoint
        if self.counters.since_checkpoint and (
            self.counters.since_checkpoint >= cp.every_events
            or now - self._last_checkpoint_at >= cp.every_seconds
        ):
            self._checkpoint(wait=False)
        sn = self.settings.snapshot
        if self.counters.since_attempt and (
            self.counters.since_attempt >= sn.every_events
            or now - self._last_snapshot_at >= sn.every_seconds
        ):
            self._publish()

    def _checkpoint(self, *, wait: bool) -> None:
        started = time.perf_counter()
        self.checkpoints.save(self.pipeline, dict(self.positions), wait=wait,
                              on_durable=self._on_checkpoint_durable)
        self.counters.since_checkpoint = 0
        self._last_checkpoint_at = time.monotonic()
        log.debug("checkpoint handed off in %.1f ms", (time.perf_counter() - started) * 1e3)

    def _on_checkpoint_durable(self, offsets: dict[int, int], seconds: float) -> None:
        """Runs on the main thread once a checkpoint's manifest is written."""
        self.consumer.commit(offsets)
        self.metrics.checkpoints_written.inc()
        self.metrics.checkpoint_duration_seconds.observe(seconds)
        self.metrics.last_checkpoint_timestamp_seconds.set(time.time())

    def _publish(self) -> None:
        """Offer the current model to the gate; publish it as a snapshot if it passes."""
        since = self.counters.since_publication
        self.counters.since_attempt = 0
        self._last_snapshot_at = time.monotonic()
        encoding, encoding_arrays = self.pipeline.preprocessor.encoding()
        try:
            outcome = self.publisher.consider(
                self.pipeline.learner,
                self.pipeline.gate,
                events_since_last=since,
                encoding=encoding,
                offsets={self.topic: dict(self.positions)},
                counts={"consumed": self.counters.consumed, "applied": self.counters.applied,
                        "rejected": self.counters.rejected,
                        "examples_trained": self.pipeline.examples_trained},
                encoding_arrays=encoding_arrays,
            )
        except StorageError as exc:
            # The object store is down or slow: keep learning, try again next time.
            log.warning("snapshot not published, the object store failed: %s", exc)
            self.metrics.snapshots_rejected.labels(reason="storage_error").inc()
            return
        decision = outcome.decision
        if outcome.published:
            self.counters.since_publication = 0
            self.metrics.snapshots_published.inc()
            self.metrics.model_version.set(int(outcome.version or 0))
            self.metrics.last_snapshot_timestamp_seconds.set(time.time())
            log.info("published snapshot %s (%s)", outcome.version, decision.message)
        else:
            self.metrics.snapshots_rejected.labels(reason=decision.reason).inc()

    def _shutdown(self) -> None:
        self._set_state("stopping")
        try:
            if self.positions and self.counters.since_checkpoint:
                self._checkpoint(wait=True)
        finally:
            self.consumer.close()
            self.dlq.close()
            self.http.stop()
            log.info(
                "stopped: consumed %d, applied %d, rejected %d",
                self.counters.consumed, self.counters.applied, self.counters.rejected,
            )
