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
   If it raises (a bug: the decoder already turns every fault of a message into a
   rejection), rewind as a crash and restart would, without the crash: reload the newest
   checkpoint and read its events again, isolating the message that raises alone
   (``service.runtime.isolation``), which is then rejected as ``internal_error``.
3. Produce every rejected message to the dead-letter topic and wait for the broker's
   acknowledgement: only then does a rejected offset count as processed. A copy the
   broker refuses is sent again smaller (cut to fit, then a reference record); one that
   no form gets onto the topic is logged with its reference and counted as
   undeliverable. Duplicates are counted, not copied (``kafka.dead_letter_duplicates``).
4. Advance the next offset of each partition; update metrics once for the whole batch.
5. When due, checkpoint the whole state with those offsets in the background; once it is
   durable, commit the offsets to Kafka. When due, gate and publish a snapshot in the
   background. Under scale-out every checkpoint first cuts this shard's learning on shared
   rows into a block (into the checkpoint's outbox), written once the checkpoint is
   durable; a checkpoint is due at least every ``scale.merge_interval_s``.

Handing over (``_deactivate``): write a final checkpoint, stop reading, drop the lease.

Why no message can stop the service: decoding turns every fault of a message into a
rejection; the dead-letter step gives a copy up (logged and counted) rather than raise or
wait for ever while the broker answers; and an exception anywhere in the pipeline is
handled by rewinding, where each rewind either narrows the failing batch to single
messages or poisons exactly one message, which is never processed again. So the number of
rewinds is bounded by the number of messages that fail alone, and no offset can be read,
fail and be read again without end.
"""

from __future__ import annotations

import gc
import hashlib
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
import orjson
from confluent_kafka import KafkaException, Message

from service import __version__
from service.checkpoint.manager import CheckpointManager
from service.config import Settings
from service.events.reasons import RejectReason
from service.ingest.admin import BrokerUnavailable, ensure_topics, max_record_bytes
from service.ingest.consumer import BatchConsumer
from service.ingest.dead_letter import (
    DEFAULT_MAX_RECORD_BYTES,
    DeadLetterProducer,
    FailureKind,
)
from service.ingest.dead_letter_copy import CopyForm
from service.ingest.lease import LeaderLease, lease_topic
from service.observability.http import HealthState, HttpEndpoint
from service.observability.metrics import ServiceMetrics
from service.observability.rejections import RejectionWatch
from service.runtime.isolation import FailureIsolation
from service.runtime.pipeline import BatchOutcome, Pipeline, Rejected, combine_outcomes
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

# The labeler's running totals exported as freshrec_label_outcomes (task binary).
LABEL_OUTCOMES = ("impressions_converted", "negatives_emitted", "late_clicks",
                  "positives_without_impression", "impressions_merged", "pending_evicted",
                  "features_truncated")

# Evaluator metrics exported as freshrec_progressive_loss (lower is better).
LOSSES = frozenset({"rmse", "mae", "log_loss"})

# While a backlog is read, gauges that summarise state (progressive metrics, drift
# statistics) are refreshed at most this often. Once the job has caught up (no lag left,
# or a batch smaller than the configured size) they are refreshed after every batch, so
# an idle service always exports its final values.
GAUGE_REFRESH_S = 0.25

# When most recent events are rejected, say so at WARNING at most this often (seconds).
REJECTION_WARNING_EVERY_S = 60.0

DUPLICATE = str(RejectReason.DUPLICATE)

_VALUE = operator.methodcaller("value")
_PARTITION = operator.methodcaller("partition")


def _position(message: Message) -> tuple[int, int]:
    return message.partition(), message.offset()  # type: ignore[return-value]


def _internal_error(error: str) -> BatchOutcome:
    """The outcome of one poisoned message: rejected, never processed again."""
    return BatchOutcome.rejected_only(
        [Rejected(0, str(RejectReason.INTERNAL_ERROR),
                  f"freshrec failed on this message ({error}); a bug in freshrec: please "
                  "report it with this dead-letter copy")])

BatchCallback = Callable[[list[Message], BatchOutcome], None]


@dataclass(slots=True)
class Counters:
    """Running totals of the stream (restored from checkpoints), per-partition counts.

    ``consumed == applied + rejected + deduplicated`` at every batch boundary.
    """

    consumed: int = 0
    applied: int = 0
    rejected: int = 0
    deduplicated: int = 0
    since_publication: int = 0  # applied since the last published snapshot (the gate's)
    since_attempt: int = 0  # applied since the gate was last asked (the schedule's)
    since_checkpoint: int = 0  # consumed since the last checkpoint was started
    since_durable: int = 0  # consumed since the last checkpoint that is durable
    per_partition: dict[int, int] = field(default_factory=dict)


class MissingCheckpoint(RuntimeError):
    """The storage holds no checkpoint but the group has consumed (``on_missing=fail``)."""


class IncompatibleCheckpoint(RuntimeError):
    """The newest checkpoint cannot be restored under the current settings (for example
    other table capacities): starting afresh would apply its events a second time, so the
    service stops and says which setting to put back."""


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
        self.isolation = FailureIsolation()
        self.rejections = RejectionWatch()
        self._rejection_warned_at = float("-inf")
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
        # Copies are shaped to the dead-letter topic's own size limit, read from the broker.
        limit = max_record_bytes(kafka.bootstrap_servers, kafka.dead_letter_topic())
        if limit is None:
            log.warning("cannot read max.message.bytes of %s; assuming %d bytes",
                        kafka.dead_letter_topic(), DEFAULT_MAX_RECORD_BYTES)
        self.dlq = DeadLetterProducer(kafka.bootstrap_servers, kafka.dead_letter_topic(),
                                      max_record_bytes=limit or DEFAULT_MAX_RECORD_BYTES)
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
        except (MissingCheckpoint, IncompatibleCheckpoint) as exc:
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
        try:
            restored = self.checkpoints.restore_latest(self.pipeline)
        except ValueError as exc:
            raise IncompatibleCheckpoint(
                f"cannot restore the newest checkpoint of group {self.settings.kafka.group_id!r} "
                f"in {self.settings.storage.url}: {exc}") from exc
        if restored is None:
            self._warm = None
            return None
        self.counters.per_partition = {
            int(p): int(n)
            for p, n in self.pipeline.extra_state.get("applied_per_partition", {}).items()
        }
        totals = self.pipeline.extra_state.get("totals", {})
        for name in ("consumed", "applied", "rejected", "deduplicated"):
            setattr(self.counters, name, int(totals.get(name, 0)))
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
        outcome = self._learn(messages)
        if outcome is None:
            return  # rewound to the newest checkpoint: these messages come again
        rejected = outcome.rejected
        if not self.settings.kafka.dead_letter_duplicates:
            rejected = [r for r in rejected if r.reason != DUPLICATE]
        if rejected:
            self._dead_letter(messages, rejected)
        self._advance(messages)
        try:
            self._record(outcome, time.perf_counter() - started)
        except Exception:  # metrics are no reason to stop learning
            log.exception("could not record the metrics of a batch")
        if self.exchange is not None:
            self._unsent_examples += outcome.n_trained
            self.metrics.shared_unsent_examples.set(self._unsent_examples)
        if self.on_batch is not None:
            self.on_batch(messages, outcome)

    def _learn(self, messages: list[Message]) -> BatchOutcome | None:
        """The pipeline over a batch; ``None`` if it raised and the job rewound."""
        partitions = np.fromiter(map(_PARTITION, messages), dtype=np.int64,
                                 count=len(messages))
        if not self.isolation.active:  # the usual case: one call for the whole batch
            try:
                return self.pipeline.process(list(map(_VALUE, messages)),
                                             partitions=partitions)
            except Exception as exc:
                self._rewind([_position(m) for m in messages], exc)
                return None
        positions = [_position(m) for m in messages]
        parts: list[tuple[list[int], BatchOutcome]] = []
        for run in self.isolation.plan(positions):
            if run.poisoned:
                (i,) = run.indices
                parts.append((run.indices, _internal_error(self.isolation.reason(positions[i]))))
                continue
            try:
                outcome = self.pipeline.process([messages[i].value() for i in run.indices],
                                                partitions=partitions[run.indices])
            except Exception as exc:
                self._rewind([positions[i] for i in run.indices], exc)
                return None
            parts.append((run.indices, outcome))
        return combine_outcomes(parts, len(messages))

    def _rewind(self, positions: list[tuple[int, int]], exc: Exception) -> None:
        """The pipeline raised: reload the newest checkpoint and read on from there.

        1. Log the exception with its traceback; count it.
        2. Note which messages were in the call that raised (one alone is poisoned).
        3. Let the checkpoint being written finish: its state is from before this batch.
        4. Drop everything in memory (the model may be half updated), load the newest
           checkpoint, or start afresh if there is none, and read every partition from
           its offsets, exactly as after a crash (``_activate``).
        """
        error = f"{type(exc).__name__}: {exc}"
        first = positions[0]
        log.exception("processing %d message(s) from partition %d offset %d raised %s; "
                      "reloading the newest checkpoint%s", len(positions), first[0],
                      first[1], error,
                      " (this message alone: it will be dead-lettered as internal_error)"
                      if len(positions) == 1 else " and retrying them one by one")
        self.metrics.pipeline_failures.inc()
        self.isolation.failed(positions, error[:500])
        while self.checkpoints.in_flight:
            self.health.beat()
            time.sleep(0.05)
        self._collect_background()
        self._warm = None
        self.pipeline = Pipeline(self.settings)
        self.counters = Counters()
        self.active = False
        self._activate()

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

    def _dead_letter(self, messages: list[Message], rejected: list[Rejected]) -> None:
        """Copy every reject to the DLQ; return once each is acknowledged or given up.

        1. Send each reject as a full copy (one too large for the topic goes cut).
        2. Flush, then take each failure by its kind: a transient one is sent again as
           it was; one the broker refused goes again in the next smaller form (full →
           cut → reference); one that is unroutable, or refused even as a reference, is
           given up.
        3. While transient failures remain, retry with backoff: for as long as it takes
           while the broker is unreachable (nothing else can progress then either), and
           for at most ``kafka.dead_letter_timeout_s`` while it answers.
        A copy given up is logged at ERROR with its reference (where the original is,
        why it was rejected, its size and sha256) and counted as ``undeliverable``; the
        message still counts as rejected, once. Nothing here raises for a message.
        """
        pending: dict[int, tuple[Rejected, CopyForm]] = {
            r.index: (r, CopyForm.FULL) for r in rejected}
        m = self.metrics
        answering_since: float | None = None
        attempt = 0
        while pending:
            tickets = {self.dlq.send(messages[i], r.reason, r.detail, form): i  # type: ignore[arg-type]
                       for i, (r, form) in pending.items()}
            acked, failed = self.dlq.flush(timeout_s=10.0)
            m.dlq_messages.labels(outcome="acked").inc(acked)
            for form, n in self.dlq.acked_by_form.items():
                if form != CopyForm.FULL:
                    m.dlq_reduced_copies.labels(form=form.label).inc(n)
            if not failed:
                break
            m.dlq_messages.labels(outcome="failed").inc(failed)
            retry: dict[int, tuple[Rejected, CopyForm]] = {}
            transient = 0
            for f in self.dlq.failures:
                i = tickets[f.ticket]
                r = pending[i][0]
                smaller = f.form.smaller()
                if f.kind == FailureKind.TRANSIENT:
                    retry[i] = (r, f.form)
                    transient += 1
                elif f.kind != FailureKind.UNROUTABLE and smaller is not None:
                    log.warning("dead-letter copy of partition %s offset %s refused as %s "
                                "(%s): sending it %s", f.source_partition, f.source_offset,
                                f.form.label, f.error, smaller.label)
                    retry[i] = (r, smaller)
                else:
                    self._undeliverable(messages[i], r, f.error)
            pending = retry
            if not transient:
                continue  # smaller forms go at once
            attempt += 1
            now = time.monotonic()
            if self.consumer.ping(timeout_s=1.0):
                answering_since = answering_since or now
                if now - answering_since >= self.settings.kafka.dead_letter_timeout_s:
                    for i, (r, _) in pending.items():
                        self._undeliverable(messages[i], r, "still not acknowledged after "
                                            f"{self.settings.kafka.dead_letter_timeout_s:g}s "
                                            "although the broker answers")
                    break
            else:
                answering_since = None
            self._set_state("waiting_for_broker",
                            f"{len(pending)} dead-letter copies not acknowledged yet")
            log.warning("%d dead-letter copies not acknowledged (attempt %d); retrying",
                        len(pending), attempt)
            self.health.beat()
            self.lease.poll()
            time.sleep(min(0.5 * attempt, 5.0))
        if self.health.state == "waiting_for_broker":
            self._set_state("running")

    def _undeliverable(self, message: Message, rejected: Rejected, error: str) -> None:
        """No copy of a reject reaches the DLQ: keep its reference in the log, count it."""
        value = message.value() or b""
        log.error("dead-letter copy given up; reference: %s; because: %s", orjson.dumps({
            "source": {"topic": message.topic(), "partition": message.partition(),
                       "offset": message.offset()},
            "reason": rejected.reason, "detail": rejected.detail[:1000],
            "size": len(value), "sha256": hashlib.sha256(value).hexdigest(),
        }).decode(), error)
        self.metrics.dlq_messages.labels(outcome="undeliverable").inc()

    def _record(self, outcome: BatchOutcome, seconds: float) -> None:
        m = self.metrics
        n_rejected = len(outcome.rejected)
        applied = outcome.n_input - n_rejected
        faults = [r for r in outcome.rejected if r.reason != DUPLICATE] if n_rejected else []
        n_duplicates = n_rejected - len(faults)
        c = self.counters
        c.consumed += outcome.n_input
        c.applied += applied
        c.rejected += len(faults)
        c.deduplicated += n_duplicates
        c.since_publication += applied
        c.since_attempt += applied
        c.since_checkpoint += outcome.n_input
        c.since_durable += outcome.n_input
        m.events_consumed.labels(topic=self.topic).inc(outcome.n_input)
        m.events_applied.labels(topic=self.topic).inc(applied)
        if faults:
            reasons: dict[str, int] = {}
            for r in faults:
                reasons[r.reason] = reasons.get(r.reason, 0) + 1
            for reason, count in reasons.items():
                m.events_rejected.labels(reason=reason).inc(count)
        if n_duplicates:
            m.events_deduplicated.inc(n_duplicates)
        self._watch_rejections(outcome.n_input, faults)
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
            for name in LABEL_OUTCOMES:
                if name in outcome.stats:
                    m.label_outcomes.labels(outcome=name).set(outcome.stats[name])
            member_losses = getattr(getattr(self.pipeline, "learner", None), "member_losses",
                                    None)
            if member_losses is not None:
                for k, value in enumerate(member_losses()):
                    m.shadow_member_loss.labels(
                        member="main" if k == 0 else f"shadow-{k}").set(value)
        # A 'reset' reaction was carried out by the pipeline itself, at a reaction
        # boundary, from its reset point: nothing is loaded here (that would make the
        # model depend on when publications ran).
        for d in outcome.drift:
            m.drift_reactions.labels(detector=d.detector, reaction=d.reaction).inc()

    def _watch_rejections(self, n_input: int, faults: list[Rejected]) -> None:
        """The rejected share of recent events; a WARNING a minute while it is above half."""
        watch = self.rejections
        watch.observe(n_input, [(r.reason, r.detail) for r in faults])
        share = watch.share
        self.metrics.events_rejected_share.set(share)
        self.health.rejected_share = round(share, 4)
        now = time.monotonic()
        if now - self._rejection_warned_at >= REJECTION_WARNING_EVERY_S:
            warning = watch.warning()
            if warning is not None:
                self._rejection_warned_at = now
                log.warning("%s", warning)

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
        """Checkpoint and publish when due; a failure is logged and tried again later.

        Not even a bug here may stop the loop: a checkpoint that cannot be taken leaves
        the events since the last one uncheckpointed (so, with the object store down,
        consumption pauses at ``checkpoint.max_uncheckpointed_events``), a snapshot that
        cannot be published leaves the champion as it is.
        """
        try:
            self._checkpoint_and_publish_when_due()
        except Exception:
            self.metrics.checkpoint_failures.inc()
            log.exception("checkpoint or snapshot failed; trying again at the next interval")
            self._last_checkpoint_at = self._last_snapshot_at = time.monotonic()

    def _checkpoint_and_publish_when_due(self) -> None:
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
        c = self.counters
        self.pipeline.extra_state["totals"] = {
            "consumed": c.consumed, "applied": c.applied, "rejected": c.rejected,
            "deduplicated": c.deduplicated,
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
        if self.isolation.active:
            self.isolation.durable(offsets)
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
            c = self.counters
            log.info("stopped: consumed %d, applied %d, rejected %d, deduplicated %d "
                     "(totals of the stream since its first checkpoint)",
                     c.consumed, c.applied, c.rejected, c.deduplicated)

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
