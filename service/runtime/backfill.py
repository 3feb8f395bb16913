"""Backfill: train a model from history, then let ``freshrec run`` go live without a gap.

A team that adopts freshrec already has weeks of events in a file or an export. The
backfill runs them through the same :class:`~service.runtime.pipeline.Pipeline` the
service runs for each Kafka poll (decode, dedup, admission, features, labels, the
learner, the progressive metrics, drift), as fast as the kernels go, and ends by writing
an ordinary checkpoint of the service group: the whole state, with the offsets of the
live topic where the history stops. ``freshrec run`` with the same settings loads it as it
loads any checkpoint and reads the live topic from those offsets.

The protocol:

1. Refuse to start when the object store already holds a checkpoint of the group and
   topic: a backfill starts a model, continuing one is ``freshrec run``'s job.
2. Order the history by event time (the readers do; a file in the event contract is
   taken in its own order, as its producer published it).
3. Run it through the pipeline in batches of ``kafka.batch_size`` messages, reporting
   progress with an ETA. Lateness is judged against the stream's own watermark, so
   history is accepted as it would be live. A mini-batch still open at the end stays in
   the state, as between two polls: the live events complete it.
4. Find where the live topic is read from, per partition: the first message produced
   after the last history event (``after-history``, the default: Kafka's record
   timestamps, set by producers when they send), after a given time, the topic's end
   (``end``), or its beginning (``earliest``).
5. Write the checkpoint with those offsets and wait until it is durable.
6. Gate the model and publish it as a snapshot if the gate accepts it (against an
   already published champion of the same model name, if there is one), so serving can
   start from the history at once.

No event is learned twice across the hand-over: one that is both in the history and on
the topic after the chosen offsets has the same ``event_id``, and the dedup window, part
of the checkpoint, counts it as a duplicate.

Example
-------
::

    freshrec backfill --data movielens:ratings.dat     # history, then a checkpoint
    freshrec run                                        # live, from where it stopped
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TextIO

from confluent_kafka import Consumer, KafkaException, TopicPartition

from service.checkpoint.manager import CheckpointManager
from service.config import Settings
from service.runtime.pipeline import Pipeline
from service.scaleout.shards import checkpoint_folder, shard_model_name
from service.snapshots.publisher import SnapshotPublisher
from service.storage import open_store

log = logging.getLogger(__name__)

LIVE_FROM = ("after-history", "end", "earliest")
"""Named starting points of the live topic (a time is accepted too: epoch ms)."""


class BackfillRefused(RuntimeError):
    """The backfill cannot start (a checkpoint exists) or cannot hand over (no broker)."""


@dataclass(slots=True)
class BackfillReport:
    """What a backfill did."""

    messages: int = 0
    applied: int = 0
    rejected: int = 0
    deduplicated: int = 0
    examples_trained: int = 0
    seconds: float = 0.0
    last_event_ms: int | None = None
    offsets: dict[int, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    snapshot: str | None = None
    """The published snapshot's version, or None."""
    snapshot_decision: str = ""
    """The gate's reason and message."""


def live_offsets(settings: Settings, live_from: str | int,
                 last_event_ms: int | None) -> dict[int, int]:
    """Step 4: the next offset of every partition of the live topic."""
    kafka = settings.kafka
    consumer = Consumer({"bootstrap.servers": kafka.bootstrap_servers,
                         "group.id": kafka.group_id, "enable.auto.commit": False})
    try:
        try:
            meta = consumer.list_topics(kafka.topic, timeout=15)
        except KafkaException as exc:
            raise BackfillRefused(
                f"Kafka at {kafka.bootstrap_servers} did not answer ({exc}): the live "
                "topic's offsets are needed to hand over; start the broker and retry"
            ) from exc
        topic = meta.topics.get(kafka.topic)
        if topic is None or topic.error is not None or not topic.partitions:
            raise BackfillRefused(
                f"topic {kafka.topic!r} does not exist on {kafka.bootstrap_servers}: create "
                "it (or start freshrec run once) before the backfill, so that its offsets "
                "can be recorded"
            )
        partitions = sorted(topic.partitions)
        if live_from == "after-history" and last_event_ms is None:
            live_from = "earliest"  # no history at all: everything on the topic is new
        if live_from in ("end", "earliest"):
            out = {}
            for p in partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(kafka.topic, p),
                                                           timeout=15)
                out[p] = int(high if live_from == "end" else low)
            return out
        if live_from == "after-history":
            assert last_event_ms is not None  # handled above
            at = last_event_ms + 1
        else:
            at = int(live_from)
        found = consumer.offsets_for_times(
            [TopicPartition(kafka.topic, p, at) for p in partitions], timeout=15)
        out = {}
        for tp in found:
            if tp.offset < 0:  # no message at or after that time: the end
                _, high = consumer.get_watermark_offsets(
                    TopicPartition(kafka.topic, tp.partition), timeout=15)
                out[tp.partition] = int(high)
            else:
                out[tp.partition] = int(tp.offset)
        return out
    finally:
        consumer.close()


def backfill(
    settings: Settings,
    values: Sequence[bytes],
    *,
    live_from: str | int = "after-history",
    progress: TextIO | None = sys.stderr,
    offsets_for: Callable[[Settings, str | int, int | None], dict[int, int]] = live_offsets,
) -> BackfillReport:
    """Run ``values`` (event messages in stream order) through the pipeline and write the
    checkpoint ``freshrec run`` continues from (the steps in the module docstring)."""
    store = open_store(settings.storage)
    checkpoints = CheckpointManager(store, settings.checkpoint,
                                    group_id=settings.kafka.group_id,
                                    topic=settings.kafka.topic,
                                    folder=checkpoint_folder(settings.scale))
    # 1. Never on top of an existing model.
    existing = checkpoints.latest_id()
    if existing is not None:
        raise BackfillRefused(
            f"the object store ({settings.storage.url}) already holds checkpoint {existing} "
            f"of group {settings.kafka.group_id!r} and topic {settings.kafka.topic!r}: a "
            "backfill starts a model. Use another FRESHREC_KAFKA__GROUP_ID or storage "
            "prefix, or delete those checkpoints first"
        )
    # 3. The history, batch by batch, as polls would hand it to the service.
    pipeline = Pipeline(settings)
    report = BackfillReport()
    size = settings.kafka.batch_size
    started = last_shown = time.monotonic()
    n = len(values)
    for lo in range(0, n, size):
        outcome = pipeline.process(values[lo:lo + size])
        report.messages += outcome.n_input
        for r in outcome.rejected:
            if r.reason == "duplicate":
                report.deduplicated += 1
            else:
                report.rejected += 1
                report.rejections[r.reason] = report.rejections.get(r.reason, 0) + 1
        report.applied += outcome.n_input - len(outcome.rejected)
        if len(outcome.event_ts_ms):
            newest = int(outcome.event_ts_ms.max())
            report.last_event_ms = max(report.last_event_ms or newest, newest)
        now = time.monotonic()
        if progress is not None and (now - last_shown >= 2.0 or lo + size >= n):
            last_shown = now
            done = min(lo + size, n)
            rate = done / max(now - started, 1e-9)
            eta = (n - done) / rate if rate > 0 else 0.0
            print(f"backfill: {done:,}/{n:,} events ({done / max(n, 1):.0%}), "
                  f"{rate:,.0f} events/s, ETA {eta:.0f}s", file=progress, flush=True)
    report.seconds = time.monotonic() - started
    report.examples_trained = pipeline.examples_trained
    report.metrics = {f"{metric} ({window})": value
                      for (metric, window), value in pipeline.evaluator.report().items()}
    # 4. Where live reading starts.
    report.offsets = offsets_for(settings, live_from, report.last_event_ms)
    # 5. The checkpoint: the state and those offsets, with the totals freshrec run keeps.
    pipeline.extra_state["totals"] = {
        "consumed": report.messages, "applied": report.applied,
        "rejected": report.rejected, "deduplicated": report.deduplicated,
    }
    checkpoints.begin_epoch()
    checkpoints.save(pipeline, dict(report.offsets), wait=True)
    # 6. A gated snapshot of the backfilled model.
    snapshot = settings.snapshot.model_copy(
        update={"model_name": shard_model_name(settings.snapshot.model_name, settings.scale)})
    encoding, encoding_arrays = pipeline.preprocessor.encoding()
    published = SnapshotPublisher(store, snapshot).consider(
        pipeline.learner, pipeline.gate, events_since_last=report.applied, encoding=encoding,
        encoding_arrays=encoding_arrays, offsets={settings.kafka.topic: dict(report.offsets)},
        counts={"consumed": report.messages, "applied": report.applied,
                "rejected": report.rejected, "examples_trained": report.examples_trained})
    report.snapshot = published.version
    report.snapshot_decision = f"{published.decision.reason}: {published.decision.message}"
    return report
