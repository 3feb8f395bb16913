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
3. Pass 1: run it through the pipeline in batches of ``kafka.batch_size`` messages,
   reporting progress with an ETA. Lateness is judged against the stream's own
   watermark, so history is accepted as it would be live. A history read from a topic
   is decoded with its partitions, and its rejects go to the dead-letter topic with
   their reasons, as in ``freshrec run``. A mini-batch still open at the end stays in
   the state, as between two polls: the live events complete it.
4. Passes 2 and later (``passes``): the examples pass 1 learned, again, shuffled within
   bounds (:mod:`service.runtime.passes`). Only the model changes: the dedup window,
   metric windows, drift detectors and counters stay where pass 1 left them, so the
   live stream goes on from the same point however many passes were made.
5. Find where the live topic is read from, per partition: where the history ended, when
   the history is the live topic itself (``history-end``, then the default); the first
   message produced after the last history event (``after-history``, the default
   otherwise: Kafka's record timestamps, set by producers when they send); after a given
   time; the topic's end (``end``); or its beginning (``earliest``).
6. Write the checkpoint with those offsets and wait until it is durable.
7. Gate the model and publish it as a snapshot if the gate accepts it (against an
   already published champion of the same model name, if there is one), so serving can
   start from the history at once.

No event is learned twice across the hand-over: one that is both in the history and on
the topic after the chosen offsets has the same ``event_id``, and the dedup window, part
of the checkpoint, counts it as a duplicate.

Example
-------
::

    freshrec backfill --data movielens:ratings.dat --passes 3   # history, a checkpoint
    freshrec run                                                 # live, from there
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TextIO

import numpy as np
import numpy.typing as npt
from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from service.checkpoint.manager import CheckpointManager
from service.config import Settings
from service.ingest.dead_letter import DeadLetterProducer, FailureKind
from service.ingest.dead_letter_copy import CopyForm
from service.ingest.history import TopicHistory
from service.runtime.passes import PassRecorder, PassResult, first_pass, learn_passes
from service.runtime.pipeline import Pipeline, Rejected
from service.scaleout.shards import checkpoint_folder, shard_model_name
from service.snapshots.publisher import SnapshotPublisher
from service.storage import open_store

log = logging.getLogger(__name__)

LIVE_FROM = ("after-history", "history-end", "end", "earliest")
"""Named starting points of the live topic (a time is accepted too: epoch ms)."""

DEFAULT_SHUFFLE_WINDOW = 10_000
"""Examples mixed together in a later pass (:func:`~service.runtime.passes.bounded_shuffle`)."""


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
    """Examples the stream produced and pass 1 learned (what ``freshrec run`` counts)."""
    examples_relearned: int = 0
    """Examples learned again by passes 2 and later."""
    dropped_recycled: int = 0
    """Examples of pass 1 left out of later passes: their row changed owner after them."""
    seconds: float = 0.0
    last_event_ms: int | None = None
    offsets: dict[int, int] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    rejections: dict[str, int] = field(default_factory=dict)
    dead_lettered: int = 0
    """Rejected messages of a topic's history copied to the dead-letter topic."""
    undeliverable: int = 0
    """Rejected messages whose copy could not be delivered (logged with a reference)."""
    passes: list[PassResult] = field(default_factory=list)
    snapshot: str | None = None
    """The published snapshot's version, or None."""
    snapshot_decision: str = ""
    """The gate's reason and message."""


def live_offsets(settings: Settings, live_from: str | int,
                 last_event_ms: int | None) -> dict[int, int]:
    """Step 5: the next offset of every partition of the live topic."""
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


@dataclass(slots=True)
class _Batch:
    values: list[bytes | None]
    partitions: npt.NDArray[np.int64] | None
    messages: list[Message] | None


def _batches(history: Sequence[bytes] | TopicHistory, size: int) -> Iterator[_Batch]:
    """The history as the pipeline's batches (a topic's with partitions and messages)."""
    if isinstance(history, TopicHistory):
        for messages in history.batches(size):
            yield _Batch([m.value() for m in messages],
                         np.fromiter((m.partition() for m in messages), dtype=np.int64,
                                     count=len(messages)), messages)
        return
    for lo in range(0, len(history), size):
        yield _Batch(list(history[lo:lo + size]), None, None)


class _Progress:
    """``backfill: pass 2/3: 40,000/90,000 examples (44%), ... ETA 12s`` every 2 s."""

    def __init__(self, out: TextIO | None, passes: int) -> None:
        self.out, self.passes = out, passes
        self.started = self.shown = time.monotonic()
        self.current = 0

    def __call__(self, number: int, done: int, total: int, unit: str = "examples") -> None:
        now = time.monotonic()
        if number != self.current:
            self.current, self.started = number, now
        if self.out is None or (now - self.shown < 2.0 and done < total):
            return
        self.shown = now
        rate = done / max(now - self.started, 1e-9)
        eta = max(total - done, 0) / rate if rate > 0 else 0.0
        which = f"pass {number}/{self.passes}: " if self.passes > 1 else ""
        print(f"backfill: {which}{done:,}/{total:,} {unit} ({done / max(total, 1):.0%}), "
              f"{rate:,.0f} {unit}/s, ETA {eta:.0f}s", file=self.out, flush=True)


def backfill(
    settings: Settings,
    history: Sequence[bytes] | TopicHistory,
    *,
    live_from: str | int | None = None,
    passes: int = 1,
    shuffle_window: int = DEFAULT_SHUFFLE_WINDOW,
    seed: int | None = None,
    progress: TextIO | None = sys.stderr,
    offsets_for: Callable[[Settings, str | int, int | None], dict[int, int]] = live_offsets,
) -> BackfillReport:
    """Learn ``history`` and write the checkpoint ``freshrec run`` continues from (the
    steps in the module docstring).

    ``history`` is event messages in stream order, or a :class:`TopicHistory`.
    ``live_from`` defaults to ``history-end`` when the history is the live topic itself,
    else ``after-history``. ``passes`` and ``shuffle_window`` are the epochs over the
    history and how far a later pass mixes it; ``seed`` (``learner.seed`` by default)
    seeds those shuffles.
    """
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    kafka = settings.kafka
    from_live_topic = isinstance(history, TopicHistory) and history.topic == kafka.topic
    if live_from is None:
        live_from = "history-end" if from_live_topic else "after-history"
    if live_from == "history-end" and not from_live_topic:
        raise ValueError("--live-from history-end is for a history read from the live "
                         f"topic ({kafka.topic!r}) itself")
    store = open_store(settings.storage)
    checkpoints = CheckpointManager(store, settings.checkpoint, group_id=kafka.group_id,
                                    topic=kafka.topic, folder=checkpoint_folder(settings.scale))
    # 1. Never on top of an existing model.
    existing = checkpoints.latest_id()
    if existing is not None:
        raise BackfillRefused(
            f"the object store ({settings.storage.url}) already holds checkpoint {existing} "
            f"of group {kafka.group_id!r} and topic {kafka.topic!r}: a backfill starts a "
            "model. Use another FRESHREC_KAFKA__GROUP_ID or storage prefix, or delete those "
            "checkpoints first"
        )
    # 3. Pass 1: the history, batch by batch, as polls would hand it to the service.
    pipeline = Pipeline(settings)
    recorder = PassRecorder() if passes > 1 else None
    pipeline.recorder = recorder
    dlq = _dead_letter_producer(settings) if isinstance(history, TopicHistory) else None
    report = BackfillReport()
    shown = _Progress(progress, passes)
    losses: list[npt.NDArray[np.float64]] = []
    per_partition: dict[int, int] = {}  # messages read per partition, as run counts them
    started = time.monotonic()
    n = len(history)
    for batch in _batches(history, kafka.batch_size):
        outcome = pipeline.process(batch.values, partitions=batch.partitions)
        report.messages += outcome.n_input
        for r in outcome.rejected:
            if r.reason == "duplicate":
                report.deduplicated += 1
            else:
                report.rejected += 1
                report.rejections[r.reason] = report.rejections.get(r.reason, 0) + 1
        report.applied += outcome.n_input - len(outcome.rejected)
        if batch.partitions is not None:
            for p, k in zip(*np.unique(batch.partitions, return_counts=True), strict=True):
                per_partition[int(p)] = per_partition.get(int(p), 0) + int(k)
        if dlq is not None and batch.messages is not None:
            copied = [r for r in outcome.rejected
                      if r.reason != "duplicate" or kafka.dead_letter_duplicates]
            acked, lost = _dead_letter(dlq, batch.messages, copied,
                                       kafka.dead_letter_timeout_s)
            report.dead_lettered += acked
            report.undeliverable += lost
        if len(outcome.event_ts_ms):
            newest = int(outcome.event_ts_ms.max())
            report.last_event_ms = max(report.last_event_ms or newest, newest)
        losses.append(outcome.losses)
        shown(1, report.messages, max(n, report.messages), "events")
    pipeline.recorder = None
    report.examples_trained = pipeline.examples_trained
    report.metrics = {f"{metric} ({window})": value
                      for (metric, window), value in pipeline.evaluator.report().items()}
    report.passes.append(first_pass(losses, pipeline.learner.task,
                                    time.monotonic() - started))
    # 4. Later passes: the examples pass 1 learned, shuffled within bounds.
    if recorder is not None:
        recorded, keep = recorder.examples(), recorder.reusable()
        report.dropped_recycled = int(len(keep) - keep.sum())
        del recorder
        report.passes += learn_passes(
            pipeline, recorded, keep, passes, shuffle_window=shuffle_window,
            seed=settings.learner.seed if seed is None else seed,
            batch_size=kafka.batch_size, progress=shown)
        report.examples_relearned = sum(p.examples for p in report.passes[1:])
    report.seconds = time.monotonic() - started
    # 5. Where live reading starts.
    if live_from == "history-end":
        assert isinstance(history, TopicHistory)
        report.offsets = dict(history.end_offsets)
    else:
        report.offsets = offsets_for(settings, live_from, report.last_event_ms)
    # 6. The checkpoint: the state and those offsets, with the totals freshrec run keeps.
    pipeline.extra_state["totals"] = {
        "consumed": report.messages, "applied": report.applied,
        "rejected": report.rejected, "deduplicated": report.deduplicated,
    }
    if from_live_topic:
        # The live topic's own partitions: run goes on counting them.
        pipeline.extra_state["applied_per_partition"] = {
            str(p): k for p, k in sorted(per_partition.items())}
    checkpoints.begin_epoch()
    checkpoints.save(pipeline, dict(report.offsets), wait=True)
    # 7. A gated snapshot of the backfilled model.
    snapshot = settings.snapshot.model_copy(
        update={"model_name": shard_model_name(settings.snapshot.model_name, settings.scale)})
    encoding, encoding_arrays = pipeline.preprocessor.encoding()
    published = SnapshotPublisher(store, snapshot).consider(
        pipeline.learner, pipeline.gate, events_since_last=report.applied, encoding=encoding,
        encoding_arrays=encoding_arrays, offsets={kafka.topic: dict(report.offsets)},
        counts={"consumed": report.messages, "applied": report.applied,
                "rejected": report.rejected, "examples_trained": report.examples_trained})
    report.snapshot = published.version
    report.snapshot_decision = f"{published.decision.reason}: {published.decision.message}"
    return report


def _dead_letter_producer(settings: Settings) -> DeadLetterProducer:
    """The dead-letter topic's producer, the topic created as ``freshrec run`` does."""
    from service.ingest.admin import ensure_topics, max_record_bytes
    from service.ingest.dead_letter import DEFAULT_MAX_RECORD_BYTES

    kafka = settings.kafka
    if kafka.create_topics:
        ensure_topics(kafka.bootstrap_servers, {kafka.dead_letter_topic(): 1})
    limit = max_record_bytes(kafka.bootstrap_servers, kafka.dead_letter_topic())
    return DeadLetterProducer(kafka.bootstrap_servers, kafka.dead_letter_topic(),
                              max_record_bytes=limit or DEFAULT_MAX_RECORD_BYTES)


def _dead_letter(dlq: DeadLetterProducer, messages: list[Message], rejected: list[Rejected],
                 timeout_s: float) -> tuple[int, int]:
    """Copy each reject to the dead-letter topic as ``freshrec run`` does; returns how many
    were acknowledged and how many given up.

    The same copies (reason, detail, source headers) and the same fall-back: a copy the
    broker refuses goes again in the next smaller form, a transient failure is retried
    with backoff for ``kafka.dead_letter_timeout_s``. A copy given up is logged at ERROR
    with where the original is, so it can still be found on the history topic.
    """
    pending = {r.index: (r, CopyForm.FULL) for r in rejected}
    acked_total, lost = 0, 0
    deadline = time.monotonic() + timeout_s
    attempt = 0
    while pending:
        # (confluent-kafka's stubs type headers() wider than the copy reads them)
        tickets = {dlq.send(messages[i], r.reason, r.detail, form): i  # type: ignore[arg-type]
                   for i, (r, form) in pending.items()}
        acked, failed = dlq.flush(timeout_s=10.0)
        acked_total += acked
        if not failed:
            break
        retry: dict[int, tuple[Rejected, CopyForm]] = {}
        for f in dlq.failures:
            i = tickets[f.ticket]
            r = pending[i][0]
            smaller = f.form.smaller()
            if f.kind == FailureKind.TRANSIENT and time.monotonic() < deadline:
                retry[i] = (r, f.form)
            elif f.kind not in (FailureKind.TRANSIENT, FailureKind.UNROUTABLE) and smaller:
                retry[i] = (r, smaller)
            else:
                m = messages[i]
                log.error("dead-letter copy given up: %s partition %s offset %s rejected as "
                          "%s (%s); because: %s", m.topic(), m.partition(), m.offset(),
                          r.reason, r.detail[:200], f.error)
                lost += 1
        pending = retry
        attempt += 1
        if pending:
            time.sleep(min(0.5 * attempt, 5.0))
    return acked_total, lost
