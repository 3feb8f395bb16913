"""The main job: Kafka in, model updates, checkpoints and snapshots out, metrics throughout.

Roles. Every instance of a service group competes for one lease (``service.ingest.lease``).
The holder is *active*: it reads every partition of the event topic and learns. The
others are *hot standbys*: they load the newest checkpoint every few seconds and take over
from it when the lease comes to them.

Scale-out (``scale.shards = N > 1``, ``service.scaleout``): shard ``i`` is a service group
of its own (lease ``<group>.shard-<i>``, checkpoints in ``shard-<i>/``, snapshots as model
``<name>.shard-<i>``) whose active instance reads only the partitions ``p % N == i``. The
shards exchange their shared parameters (item rows, hashed features, global statistics)
as blocks of deltas through the object store. With one shard none of this happens.

Taking over (``_activate``):

1. Start a new leader epoch, so that no late write of a former leader can win.
2. Load the newest complete checkpoint: model, preprocessing state, metrics windows,
   drift detectors, hold-out window, and the next offset of every partition.
3. Read every partition (every owned partition, under scale-out) from its checkpointed
   offset (or, for a partition the checkpoint does not know, from the committed offset or
   the reset policy). With no checkpoint at all but offsets committed by the group, the
   model would start afresh and skip what was consumed before: by default the service
   refuses to start (``checkpoint.on_missing``). Under scale-out, also write the
   shared-parameter blocks the checkpoint's outbox holds that are not in the object
   store yet.

One iteration of the active loop (``_step``):

0. Under scale-out: fold the other shards' blocks fetched in the background since the last
   iteration (here, between batches, so the model is never read half-merged), and when
   ``scale.merge_interval_s`` has passed ask for newer ones.
1. Poll a batch of messages.
2. Run the pure pipeline over their values (decode → preprocess → predict-then-learn).
3. Produce every rejected message to the dead-letter topic and wait for the broker's
   acknowledgement (retrying while the broker is away): only then does a rejected offset
   count as processed.
4. Advance the next offset of each partition; update metrics once for the whole batch.
5. When due, checkpoint the whole state with those offsets in the background; once it is
   durable, commit the offsets to Kafka. When due, gate and publish a snapshot in the
   background. Under scale-out every checkpoint first cuts this shard's learning on shared
   rows into a block (into the checkpoint's outbox), written once the checkpoint is
   durable; a checkpoint is due at least every ``scale.merge_interval_s``.

Handing over (``_deactivate``): write a final checkpoint, stop reading, drop the lease.
"""

from __future__ import annotations

import gc
import logging
import operator
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any

import numpy as np
from confluent_kafka import KafkaException, Message

from service import __version__
from service.checkpoint.manager import CheckpointManager
from service.config import Settings
from service.events.reasons import RejectReason
from service.ingest.admin import BrokerUnavailable, ensure_topics
from service.ingest.consumer import BatchConsumer
from service.ingest.dead_letter import DeadLetterProducer
from service.ingest.lease import LeaderLease, lease_topic
from service.observability.http import HealthState, HttpEndpoint
from service.observability.metrics import ServiceMetrics
from service.runtime.pipeline import BatchOutcome, Pipeline
from service.runtime.publishing import BackgroundPublisher, FrozenCandidate, frozen_gate
from service.scaleout.delta import Block
from service.scaleout.exchange import BlockExchange, Failed, Fetched, Written
from service.scaleout.shards import (
    checkpoint_folder,
    owned_partitions,
    shard_group,
    shard_model_name,
)
from service.snapshots.gate import GATE_REASONS
from service.snapshots.publisher import SnapshotPublisher
from service.storage import StorageError, open_store

log = logging.getLogger(__name__)

# Evaluator metrics exported as freshrec_progressive_loss (lower is better).
LOSSES = frozenset({"rmse", "mae", "log_loss"})

# While a backlog is read, gauges that summarise state (progressive metrics, drift
# statistics) are refreshed at most this often. Once the job has caught up (no lag left,
# or a batch smaller than the configured size) they are refreshed after every batch, so
# an idle service always exports its final values.
GAUGE_REFRESH_S = 0.25

_VALUE = operator.methodcaller("value")
_PARTITION = operator.methodcaller("partition")

BatchCallback = Callable[[list[Message], BatchOutcome], None]


@dataclass(slots=True)
class Counters:
    """Running totals since this process started, plus per-partition applied counts."""

    consumed: int = 0
    applied: int = 0
    rejected: int = 0
    since_publication: int = 0  # applied since the last published snapshot (the gate's)
    since_attempt: int = 0  # applied since the gate was last asked (the schedule's)
    since_checkpoint: int = 0  # consumed since the last checkpoint was started
    since_durable: int = 0  # consumed since the last checkpoint that is durable
    per_partition: dict[int, int] = field(default_factory=dict)


class MissingCheckpoint(RuntimeError):
    """The storage holds no checkpoint but the group has consumed (``on_missing=fail``)."""


class Job:
    """The freshrec service.

    Parameters
    ----------
    settings
        All settings (see ``service.config.Settings``).
    stop_when_idle_s
        Stop by itself after this many seconds without a message while active (for
        batch-style runs, tests and the demo); ``None`` runs until SIGTERM/SIGINT.
    on_batch
        Called on the main thread after each batch is learned and its rejects are
        acknowledged on the dead-letter topic (benchmarks use it to measure freshness).
    """

    # When the throttled gauges were last refreshed (see _record).
    _gauges_at = float("-inf")

    def __init__(
        self,
        settings: Settings,
        *,
        stop_when_idle_s: float | None = None,
        on_batch: BatchCallback | None = None,
    ) -> None:
        self.settings = settings
        self.stop_when_idle_s = stop_when_idle_s
        self.on_batch = on_batch
        self.metrics = ServiceMetrics()
        self.metrics.build_info.info({"version": __version__, "model": settings.learner.model})
        # Every reason's series exists from the start, at 0: Prometheus's increase()
        # cannot see the first sample of a series, so a first rejection would be missed.
        for reject_reason in RejectReason:
            self.metrics.events_rejected.labels(reason=str(reject_reason))
        for gate_reason in (*GATE_REASONS, "storage_error"):
            self.metrics.snapshots_rejected.labels(reason=gate_reason)
        self.health = HealthState()
        self._stop = threading.Event()
        self.counters = Counters()
        self.topic = settings.kafka.topic
        self.store = open_store(settings.storage)
        self.pipeline = Pipeline(settings)
        scale = settings.scale
        snapshot = settings.snapshot.model_copy(
            update={"model_name": shard_model_name(settings.snapshot.model_name, scale)})
        self.publisher = BackgroundPublisher(SnapshotPublisher(self.store, snapshot))
        self.checkpoints = CheckpointManager(
            self.store, settings.checkpoint, group_id=settings.kafka.group_id, topic=self.topic,
            folder=checkpoint_folder(scale),
        )
        self.exchange: BlockExchange | None = None
        if scale.shards > 1:
            self.exchange = BlockExchange(
                self.store, settings.kafka.group_id, self.topic, shard=scale.shard,
                shards=scale.shards, keep_blocks=scale.keep_blocks)
        self._last_fetch_at = float("-inf")
        self._unsent_examples = 0  # learned since the last cut (scale-out)
        # Next offset to process, per partition: what a checkpoint records and what is
        # committed once that checkpoint is durable.
        self.positions: dict[int, int] = {}
        self.active = False
        self._activate_requested = False
        self._warm: tuple[int, int] | None = None  # checkpoint loaded while standby
        self._last_warm_at = 0.0
        self._stopping = False
        self._last_broker_check = 0.0
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
        if self.health.state != state:
            log.info("state: %s%s", state, f" ({detail})" if detail else "")
        self.health.set(state, detail)
        self.metrics.set_state(state)

    def run(self) -> int:
        """Run until asked to stop; returns a process exit code."""
        self.http.start()
        log.info("serving /metrics, /healthz and /readyz on http://%s", self.http.address)
        kafka = self.settings.kafka
        if not self._wait_for_broker():
            self.http.stop()
            return 0
        self.dlq = DeadLetterProducer(kafka.bootstrap_servers, kafka.dead_letter_topic())
        self.consumer = BatchConsumer(
            kafka.bootstrap_servers,
            kafka.group_id,
            kafka.topic,
            auto_offset_reset=kafka.auto_offset_reset,
            extra=kafka.consumer_config,
        )
        self.lease = LeaderLease(
            kafka.bootstrap_servers,
            shard_group(kafka.group_id, self.settings.scale),
            kafka.topic,
            on_acquired=self._lease_acquired,
            on_released=self._lease_released,
            session_timeout_ms=kafka.session_timeout_ms,
            instance_id=kafka.instance_id,
        )
        # Everything allocated so far lives as long as the process: keep the garbage
        # collector from scanning it again and again (a large share of CPU otherwise).
        gc.collect()
        gc.freeze()
        self._set_state("standby", "waiting for the lease")
        code = 0
        try:
            self._loop()
        except MissingCheckpoint as exc:
            log.error("%s", exc)
            code = 2
        finally:
            self._shutdown()
        return code

    def _wait_for_broker(self) -> bool:
        """Create the topics, retrying while the broker is unreachable; False if stopped."""
        kafka = self.settings.kafka
        topics = {kafka.topic: kafka.topic_partitions, kafka.dead_letter_topic(): 1,
                  lease_topic(kafka.topic): 1}
        if not kafka.create_topics:
            topics = {lease_topic(kafka.topic): 1}
        delay = 0.5
        while not self._stop.is_set():
            try:
                ensure_topics(kafka.bootstrap_servers, topics, timeout_s=10)
                return True
            except (BrokerUnavailable, KafkaException) as exc:
                self._set_state("waiting_for_broker", str(exc))
                self.health.beat()
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        return False

    # -- lease -------------------------------------------------------------------------

    def _lease_acquired(self) -> None:
        # Called inside lease.poll(); the takeover runs right after, in the loop.
        self._activate_requested = True

    def _lease_released(self, lost: bool) -> None:
        if self.active and not self._stopping:
            self._deactivate(lost=lost)

    def _activate(self) -> None:
        """Take over: new epoch, newest checkpoint, every partition from its offset."""
        self._activate_requested = False
        self._set_state("recovering", "loading the newest checkpoint")
        started = time.monotonic()
        restored = self._retry("load the newest checkpoint", self._restore_if_newer,
                               "recovering", (StorageError,))
        if restored is None and self._stop.is_set():
            return
        self.checkpoints.begin_epoch()
        partitions = self._retry("read the topic's partitions", self.consumer.partitions,
                                 "waiting_for_broker", (KafkaException,))
        if partitions is None:
            return
        scale = self.settings.scale
        if scale.shards > 1:
            partitions = owned_partitions(partitions, scale)
            if not partitions:
                raise ValueError(
                    f"topic {self.topic!r} has fewer partitions than scale.shards="
                    f"{scale.shards}: shard {scale.shard} would read nothing; run at most as "
                    "many shards as the topic has partitions"
                )
        stored = self.checkpoints.offsets()
        missing = [p for p in partitions if p not in stored]
        committed = (self._retry("read committed offsets",
                                 lambda: self.consumer.committed(missing),
                                 "waiting_for_broker", (KafkaException,))
                     if missing else {})
        if restored is None and committed:
            committed = self._without_checkpoint(committed, partitions)
            if committed is None:
                return
        start: dict[int, int | None] = {
            p: stored.get(p, (committed or {}).get(p)) for p in partitions
        }
        if not self.lease.held:
            # The retries above poll the lease; it may have moved on meanwhile.
            self._set_state("standby", "lease lost while recovering")
            return
        self.positions = {p: o for p, o in start.items() if o is not None}
        self.consumer.assign(start)
        self.active = True
        self.counters.since_checkpoint = 0
        self.counters.since_durable = 0
        self._last_checkpoint_at = time.monotonic()
        self.metrics.recoveries.inc()
        if self.exchange is not None and self.pipeline.shared is not None:
            # The checkpoint's outbox: blocks cut before it whose write may not have
            # happened (the previous owner died between durable and written).
            self.exchange.restart()
            self.exchange.write(list(self.pipeline.shared.outbox))
            self._last_fetch_at = float("-inf")
        self._set_state("running")
        log.info("active after %.2fs (checkpoint %s)", time.monotonic() - started,
                 self.checkpoints.restored)

    def _without_checkpoint(self, committed: dict[int, int], partitions: list[int]
                            ) -> dict[int, int] | None:
        """No checkpoint, yet the group has committed offsets: apply
        ``checkpoint.on_missing``. Returns where to start (None if stopped meanwhile).

        Starting from the committed offsets would train a fresh model that silently
        skips every event consumed before, which is what a new or mistyped
        ``storage.url`` looks like; so by default the service refuses.
        """
        policy = self.settings.checkpoint.on_missing
        where = f"{self.settings.storage.url} under {self.checkpoints.prefix}"
        found = (f"no checkpoint in {where}, but consumer group "
                 f"{self.settings.kafka.group_id!r} has committed offsets on {self.topic!r} "
                 f"(partition: next offset) {dict(sorted(committed.items()))}")
        if policy == "fail":
            raise MissingCheckpoint(
                f"refusing to start: {found}. A fresh model from those offsets would skip "
                "every event before them. Point "
                "FRESHREC_STORAGE__URL at the storage that holds this group's checkpoints, "
                "or set FRESHREC_CHECKPOINT__ON_MISSING=committed (fresh model from the "
                "committed offsets) or =earliest (fresh model from the oldest offsets the "
                "topic still holds)")
        if policy == "committed":
            log.warning("%s: starting a FRESH model from the committed offsets "
                        "(checkpoint.on_missing=committed); the events before them are "
                        "not learned", found)
            return committed
        earliest = self._retry("read the oldest offsets", lambda: self.consumer.earliest(
            partitions), "waiting_for_broker", (KafkaException,))
        if earliest is None:
            return None
        log.warning("%s: starting a FRESH model from the oldest offsets %s "
                    "(checkpoint.on_missing=earliest)", found, earliest)
        return dict(earliest)

    def _restore_if_newer(self) -> tuple[int, int] | None:
        """Load the newest checkpoint unless it is the one already loaded."""
        latest = self.checkpoints.latest_id()
        if latest is not None and latest == self._warm:
            return self._warm
        restored = self.checkpoints.restore_latest(self.pipeline)
        if restored is None:
            self._warm = None
            return None
        self.counters.per_partition = {
            int(p): int(n)
            for p, n in self.pipeline.extra_state.get("applied_per_partition", {}).items()
        }
        self._warm = restored.sequence
        log.info("loaded checkpoint %s (offsets %s)", restored.name, restored.offsets)
        return restored.sequence

    def _deactivate(self, *, lost: bool) -> None:
        """Hand over: final checkpoint (best effort), stop reading, become a standby."""
        log.info("deactivating (%s)", "lease lost" if lost else "rebalance")
        if self.counters.since_checkpoint or self.checkpoints.in_flight:
            try:
                self._checkpoint(wait=True)
            except Exception as exc:
                log.warning("no final checkpoint before handing over: %s", exc)
        self.consumer.unassign()
        self.active = False
        # What is in memory may be ahead of the last checkpoint the next owner loads;
        # never reuse it: reload from the store when the lease comes back.
        self._warm = None
        self._set_state("standby", "lease handed over")

    # -- the loop --------------------------------------------------------------------

    def _loop(self) -> None:
        idle_since = time.monotonic()
        while not self._stop.is_set():
            self.health.beat()
            self.lease.poll()
            if self._activate_requested:
                self._activate()
                idle_since = time.monotonic()
            if not self.active:
                self._standby_step()
                continue
            if self._step():
                idle_since = time.monotonic()
            elif (self.stop_when_idle_s is not None
                  and time.monotonic() - idle_since > self.stop_when_idle_s
                  and not self.checkpoints.in_flight and not self.publisher.busy):
                log.info("idle for %.0fs: stopping", self.stop_when_idle_s)
                break

    def _standby_step(self) -> None:
        """Keep warm: load newer checkpoints now, so a takeover has little left to load."""
        now = time.monotonic()
        if now - self._last_warm_at >= self.settings.checkpoint.standby_refresh_s:
            self._last_warm_at = now
            try:
                self._restore_if_newer()
            except StorageError as exc:
                log.warning("standby could not refresh from the object store: %s", exc)
        self._stop.wait(0.1)

    def _step(self) -> bool:
        """One iteration while active; True if messages were processed."""
        kafka = self.settings.kafka
        self._collect_background()
        if self.exchange is not None:
            self._exchange_step()
        cp = self.settings.checkpoint
        if self.counters.since_durable >= cp.max_uncheckpointed_events:
            # The object store is not keeping up: stop taking on work that a crash would
            # have to redo, and that memory would have to hold.
            self._set_state("paused_backpressure",
                            f"{self.counters.since_durable} events not yet checkpointed")
            self._maybe_checkpoint_and_publish()
            self._stop.wait(0.2)
            return False
        result = self.consumer.poll(kafka.batch_size, kafka.poll_timeout_s)
        if result.broker_down and not result.messages:
            self._check_broker_back()
        elif self.health.state != "running":
            self._set_state("running")
        for err in result.errors:
            log.debug("kafka: %s", err)
        if result.messages:
            self._process(result.messages)
        self._maybe_checkpoint_and_publish()
        return bool(result.messages)

    def _check_broker_back(self) -> None:
        """While the broker is unreachable, say so; ask it every two seconds if it is back."""
        if self.health.state != "waiting_for_broker":
            self._set_state("waiting_for_broker", "the consumer lost the broker")
        now = time.monotonic()
        if now - self._last_broker_check < 2.0:
            return
        self._last_broker_check = now
        if not self.consumer.ping(timeout_s=1.0):
            return
        self.consumer.broker_down = False
        self._set_state("running")

    def _process(self, messages: list[Message]) -> None:
        started = time.perf_counter()
        values = list(map(_VALUE, messages))
        outcome = self.pipeline.process(values)
        if outcome.rejected:
            self._dead_letter(messages, outcome)
        self._advance(messages)
        self._record(outcome, time.perf_counter() - started)
        if self.exchange is not None:
            self._unsent_examples += outcome.n_trained
            self.metrics.shared_unsent_examples.set(self._unsent_examples)
        if self.on_batch is not None:
            self.on_batch(messages, outcome)

    def _advance(self, messages: list[Message]) -> None:
        """Next offset and applied count of each partition in the batch.

        Offsets ascend within a partition, so only the last message of each partition
        matters. The partitions are read with ``map`` (no Python frame per message); the
        usual batch, from a single partition, then needs one offset call.
        """
        parts: list[int] = list(map(_PARTITION, messages))
        per_partition = self.counters.per_partition
        first = parts[0]
        if parts.count(first) == len(parts):
            self.positions[first] = messages[-1].offset() + 1  # type: ignore[operator]
            per_partition[first] = per_partition.get(first, 0) + len(parts)
            return
        ids = np.asarray(parts, dtype=np.int64)
        uniq, last_rev, counts = np.unique(ids[::-1], return_index=True, return_counts=True)
        for p, j, k in zip(uniq.tolist(), (len(parts) - 1 - last_rev).tolist(),
                           counts.tolist(), strict=True):
            self.positions[p] = messages[j].offset() + 1  # type: ignore[operator]
            per_partition[p] = per_partition.get(p, 0) + k

    def _dead_letter(self, messages: list[Message], outcome: BatchOutcome) -> None:
        """Copy every reject to the DLQ; return only when the broker has all of them."""
        pending = {r.index: r for r in outcome.rejected}
        attempt = 0
        while pending:
            tickets = {self.dlq.send(messages[i], r.reason, r.detail): i  # type: ignore[arg-type]
                       for i, r in pending.items()}
            acked, failed = self.dlq.flush(timeout_s=10.0)
            self.metrics.dlq_messages.labels(outcome="acked").inc(acked)
            if not failed:
                return
            self.metrics.dlq_messages.labels(outcome="failed").inc(failed)
            still = {tickets[f.ticket] for f in self.dlq.failures if f.ticket in tickets}
            pending = {i: pending[i] for i in still}
            attempt += 1
            self._set_state("waiting_for_broker",
                            f"{len(pending)} dead-letter copies not acknowledged yet")
            log.warning("%d dead-letter copies not acknowledged (attempt %d); retrying",
                        len(pending), attempt)
            self.health.beat()
            self.lease.poll()
            time.sleep(min(0.5 * attempt, 5.0))
        self._set_state("running")

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
        c.since_durable += outcome.n_input
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
            lag_s = time.time() - float(outcome.event_ts_ms[-1]) / 1000.0
            m.event_time_lag_seconds.observe(max(0.0, lag_s))
        # Lag from the consumer's cached watermarks: a local lookup (~1 us a partition),
        # and the sign that the job has caught up.
        behind = 0
        for p, lag in self.consumer.lag(self.positions).items():
            m.consumer_lag.labels(topic=self.topic, partition=str(p)).set(lag)
            behind += lag
        now = time.monotonic()
        caught_up = behind == 0 or outcome.n_input < self.settings.kafka.batch_size
        if caught_up or outcome.drift or now - self._gauges_at >= GAUGE_REFRESH_S:
            self._gauges_at = now
            model = self.settings.learner.model
            for (metric, window), value in self.pipeline.evaluator.report().items():
                window_label = "cumulative" if window == "cumulative" else "recent"
                # AUC, recall and NDCG are scores (higher is better), not losses.
                gauge = m.progressive_loss if metric in LOSSES else m.progressive_score
                gauge.labels(model=model, metric=metric, window=window_label).set(value)
            m.observe_drift(self.pipeline.drift.statistics(), outcome.drift)
        for d in outcome.drift:
            m.drift_reactions.labels(detector=d.detector, reaction=d.reaction).inc()
        if outcome.reset_requested:
            self._reset_to_champion()

    def _reset_to_champion(self) -> None:
        """Drift reaction 'reset': already done by the pipeline, at the reaction boundary.

        The pipeline continues from its reset point, a copy of the model taken at a point
        of the stream (``drift.reset_point_events``), and says so in the log. Reloading
        whatever snapshot happens to be published would make the model depend on when
        publications ran (a wall-clock schedule), so nothing is loaded here.
        """

    # -- checkpoints and snapshots ----------------------------------------------------

    def _collect_background(self) -> None:
        error = self.checkpoints.poll_background()
        if error is not None:
            self.metrics.checkpoint_failures.inc()
            # The work that checkpoint covered is still not durable: make the next one due
            # even if no new event arrives.
            self.counters.since_checkpoint = max(self.counters.since_checkpoint,
                                                 self.counters.since_durable, 1)
        for result in self.publisher.results():
            self._published(result.outcome, result.error)

    def _maybe_checkpoint_and_publish(self) -> None:
        now = time.monotonic()
        cp = self.settings.checkpoint
        every_seconds = cp.every_seconds
        if self.exchange is not None:  # every checkpoint is an exchange
            every_seconds = min(every_seconds, self.settings.scale.merge_interval_s)
        if self.counters.since_checkpoint and (
            self.counters.since_checkpoint >= cp.every_events
            or now - self._last_checkpoint_at >= every_seconds
        ):
            self._checkpoint(wait=False)
        sn = self.settings.snapshot
        if self.counters.since_attempt and (
            self.counters.since_attempt >= sn.every_events
            or now - self._last_snapshot_at >= sn.every_seconds
        ):
            self._publish()

    def _checkpoint(self, *, wait: bool) -> None:
        if self.checkpoints.in_flight and not wait:
            return  # the previous one is still being written: try again next time
        started = time.perf_counter()
        self.pipeline.extra_state["applied_per_partition"] = {
            str(p): n for p, n in self.counters.per_partition.items()
        }
        on_durable: Callable[[dict[int, int], float], None] = self._on_checkpoint_durable
        shared = self.pipeline.shared
        if shared is not None and self.exchange is not None:
            if self.checkpoints.in_flight and not wait:
                return  # cut only what this checkpoint will carry
            # Cut this shard's learning on shared rows into the outbox, which the state
            # copy below includes; the blocks are written once the checkpoint is durable.
            shared.cut(time.time())
            self._unsent_examples = 0
            self.metrics.shared_unsent_examples.set(0)
            self.metrics.shared_last_cut_block.set(shared.next_seq - 1)
            on_durable = self._durable_with_outbox(list(shared.outbox))
        if not self.checkpoints.save(
            self.pipeline, dict(self.positions), wait=wait,
            on_durable=on_durable,
        ):
            return  # the previous one is still being written: try again next time
        stall = time.perf_counter() - started
        self.metrics.checkpoint_stall_seconds.observe(stall)
        self.counters.since_checkpoint = 0
        self._last_checkpoint_at = time.monotonic()
        log.debug("checkpoint handed off in %.1f ms", stall * 1e3)

    def _durable_with_outbox(
        self, outbox: list[Block]
    ) -> Callable[[dict[int, int], float], None]:
        def durable(offsets: dict[int, int], seconds: float) -> None:
            self._on_checkpoint_durable(offsets, seconds)
            if self.exchange is not None:
                self.exchange.write(outbox)

        return durable

    def _exchange_step(self) -> None:
        """Fold the blocks fetched so far; ask for newer ones when the interval is up."""
        assert self.exchange is not None and self.pipeline.shared is not None
        shared = self.pipeline.shared
        m = self.metrics
        folded = 0
        for result in self.exchange.results():
            if isinstance(result, Written):
                shared.written(result.seq)
                m.shared_blocks_written.inc()
                m.shared_last_written_block.set(result.seq)  # written in order
            elif isinstance(result, Fetched):
                block = result.block
                try:
                    if not shared.fold(block):
                        continue
                except ValueError as exc:
                    m.shared_exchange_failures.inc()
                    log.error("cannot fold shared block %d of shard %d: %s", block.seq,
                              block.shard, exc)
                    continue
                folded += 1
                label = str(block.shard)
                m.shared_blocks_folded.labels(shard=label).inc()
                m.shared_last_folded_block.labels(shard=label).set(block.seq)
                m.shared_staleness_seconds.labels(shard=label).set(
                    max(0.0, time.time() - block.created_at))
            elif isinstance(result, Failed):
                m.shared_exchange_failures.inc()
                log.warning("cannot %s (retrying later): %s", result.what, result.error)
        if folded:
            m.shared_merges.inc()
            # The folded rows must reach a checkpoint (and the next exchange's baseline).
            self.counters.since_checkpoint = max(self.counters.since_checkpoint, 1)
        now = time.monotonic()
        if now - self._last_fetch_at >= self.settings.scale.merge_interval_s:
            scale = self.settings.scale
            wanted = {j: shared.folded.get(j, 0) + 1 for j in range(scale.shards)
                      if j != scale.shard}
            if self.exchange.fetch(wanted):
                self._last_fetch_at = now

    def _on_checkpoint_durable(self, offsets: dict[int, int], seconds: float) -> None:
        """Runs on the main thread once a checkpoint's manifest is written."""
        self.counters.since_durable = sum(
            self.positions.get(p, o) - o for p, o in offsets.items()
        )
        self.consumer.commit(offsets)
        self.metrics.checkpoints_written.inc()
        self.metrics.checkpoint_duration_seconds.observe(seconds)
        self.metrics.last_checkpoint_timestamp_seconds.set(time.time())

    def _publish(self) -> None:
        """Copy what the gate needs and hand it to the background publisher."""
        if self.publisher.busy:
            return
        self.counters.since_attempt = 0
        self._last_snapshot_at = time.monotonic()
        learner = self.pipeline.learner
        encoding, encoding_arrays = self.pipeline.preprocessor.encoding()
        self.publisher.submit(
            FrozenCandidate(learner.published_state(), learner.task),
            frozen_gate(self.pipeline.gate),
            events_since_last=self.counters.since_publication,
            encoding=encoding,
            encoding_arrays=encoding_arrays,
            offsets={self.topic: dict(self.positions)},
            counts={"consumed": self.counters.consumed, "applied": self.counters.applied,
                    "rejected": self.counters.rejected,
                    "examples_trained": self.pipeline.examples_trained},
        )

    def _published(self, outcome: Any, error: BaseException | None) -> None:
        if error is not None:
            # The object store is down or slow: keep learning, try again next time.
            log.warning("snapshot not published: %s", error)
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

    # -- retries -------------------------------------------------------------------------

    def _retry(self, what: str, action: Callable[[], Any], state: str,
               errors: tuple[type[Exception], ...]) -> Any:
        """``action()``, retried with backoff while it raises ``errors``; None if stopped.

        The lease keeps being polled, so a long wait does not also cost the lease.
        """
        delay = 0.5
        while not self._stop.is_set():
            try:
                return action()
            except errors as exc:
                self._set_state(state, f"cannot {what}: {exc}")
                log.warning("cannot %s (retrying in %.1fs): %s", what, delay, exc)
                self.health.beat()
                self.lease.poll()
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        return None

    def _shutdown(self) -> None:
        self._stopping = True
        self._set_state("stopping")
        deadline = time.monotonic() + self.settings.checkpoint.shutdown_timeout_s
        try:
            if self.active and (self.counters.since_checkpoint or self.checkpoints.in_flight):
                self._final_checkpoint(deadline)
            self.publisher.join(max(0.0, deadline - time.monotonic()))
            self._collect_background()
            if self.exchange is not None:
                self.exchange.close(max(0.0, deadline - time.monotonic()))
        finally:
            self.lease.close()
            self.consumer.close()
            self.dlq.close()
            self.http.stop()
            log.info(
                "stopped: consumed %d, applied %d, rejected %d",
                self.counters.consumed, self.counters.applied, self.counters.rejected,
            )

    def _final_checkpoint(self, deadline: float) -> None:
        """Checkpoint once more, giving up at ``deadline`` (the events are then replayed)."""
        done = threading.Event()
        error: list[BaseException] = []

        def write() -> None:
            try:
                self._checkpoint(wait=True)
            except BaseException as exc:
                error.append(exc)
            finally:
                done.set()

        # _checkpoint(wait=True) calls back into the consumer (commit) on this thread's
        # behalf; the consumer is not used by anything else during shutdown.
        worker = threading.Thread(target=write, name="freshrec-final-checkpoint", daemon=True)
        worker.start()
        if not done.wait(max(0.0, deadline - time.monotonic())):
            log.error("final checkpoint did not finish in time; exiting without it "
                      "(events since the last checkpoint will be consumed again)")
        elif error:
            log.error("final checkpoint failed (events since the last checkpoint will be "
                      "consumed again): %s", error[0])
