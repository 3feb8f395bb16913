"""The event consumer: Kafka in, batches of raw messages out.

It is an assign()-mode consumer: the service decides which partitions it reads (all of
them, while it holds the lease, see ``service.ingest.lease``) and from which offsets (the
ones in its newest checkpoint). Offsets are never committed automatically: the service
commits explicitly once a checkpoint that covers them is durable, so a crash can never
commit an offset whose event was lost.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

log = logging.getLogger(__name__)

# Errors that mean "the broker is unreachable right now"; the consumer recovers by itself.
BROKER_DOWN = frozenset({KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT,
                         KafkaError._RESOLVE, KafkaError._TIMED_OUT})


@dataclass(slots=True)
class PollResult:
    """Messages from one poll; errors separated out, never raised."""

    messages: list[Message]
    errors: list[KafkaError] = field(default_factory=list)

    broker_down: bool = False


class BatchConsumer:
    """A confluent-kafka consumer tuned for batch consumption with manual commits.

    Parameters
    ----------
    bootstrap_servers, group_id, topic
        Where to read; the group id is used only to commit and read back offsets.
    auto_offset_reset
        Where a partition starts when neither a checkpoint nor a committed offset says.
    extra
        More librdkafka settings.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        group_id: str,
        topic: str,
        *,
        auto_offset_reset: str = "earliest",
        extra: dict[str, Any] | None = None,
    ) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            "queued.max.messages.kbytes": 65536,
            "fetch.wait.max.ms": 50,
            # librdkafka's default of 1 MiB per partition and fetch caps a one-partition
            # backlog at ~120k small events/s here (the fetcher waits on round trips, the
            # main thread waits on the fetcher); 16 MiB keeps the prefetch queue full.
            # The queue itself stays bounded by queued.max.messages.kbytes.
            "max.partition.fetch.bytes": 16 << 20,
            "fetch.max.bytes": 64 << 20,
            # Connection trouble is reported here, not as messages from consume().
            "error_cb": self._on_error,
        }
        conf.update(extra or {})
        self.topic = topic
        self.auto_offset_reset = auto_offset_reset
        self._consumer = Consumer(conf, logger=log)
        self._assigned: list[int] = []
        self.broker_down = False

    def _on_error(self, error: KafkaError) -> None:
        if error.code() in BROKER_DOWN:
            if not self.broker_down:
                log.warning("broker unreachable: %s", error)
            self.broker_down = True
        else:
            log.warning("kafka: %s", error)

    def partitions(self, timeout_s: float = 10.0) -> list[int]:
        """Partitions of the topic, from the broker's metadata."""
        meta = self._consumer.list_topics(self.topic, timeout=timeout_s).topics.get(self.topic)
        if meta is None or meta.error is not None:
            raise KafkaException(meta.error if meta is not None else "topic not found")
        return sorted(meta.partitions)

    def ping(self, timeout_s: float = 1.0) -> bool:
        """True if the broker answers a real request (not cached metadata) right now."""
        partition = self._assigned[0] if self._assigned else 0
        try:
            self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=timeout_s, cached=False
            )
        except KafkaException:
            return False
        return True

    def committed(self, partitions: list[int], timeout_s: float = 10.0) -> dict[int, int]:
        """Offsets committed under the group id, where there are any."""
        tps = [TopicPartition(self.topic, p) for p in partitions]
        result = self._consumer.committed(tps, timeout=timeout_s)
        return {tp.partition: tp.offset for tp in result if tp.offset >= 0}

    def earliest(self, partitions: list[int], timeout_s: float = 10.0) -> dict[int, int]:
        """The oldest offset still held by each partition (its low watermark)."""
        out = {}
        for p in partitions:
            low, _ = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, p), timeout=timeout_s, cached=False)
            out[p] = int(low)
        return out

    def assign(self, offsets: dict[int, int | None]) -> None:
        """Read ``partition -> next offset``; ``None`` starts at the reset policy."""
        reset = OFFSET_BEGINNING if self.auto_offset_reset == "earliest" else OFFSET_END
        tps = [TopicPartition(self.topic, p, reset if o is None else o)
               for p, o in sorted(offsets.items())]
        self._consumer.assign(tps)
        self._assigned = sorted(offsets)
        log.info("reading %s from %s", self.topic,
                 {p: ("reset" if o is None else o) for p, o in sorted(offsets.items())})

    def unassign(self) -> None:
        self._consumer.unassign()
        self._assigned = []

    def assignment(self) -> list[int]:
        return list(self._assigned)

    def poll(self, max_messages: int, timeout_s: float) -> PollResult:
        """Up to ``max_messages`` messages."""
        if not self._assigned:
            return PollResult([])
        consume = self._consumer.consume
        # What is already fetched is taken at once. Only when nothing is waiting does the
        # call block, and then for the *first* message, not for a full batch: consume()
        # would hold a half-full batch until the timeout and add up to timeout_s of
        # latency to every event of a quiet stream. Under a backlog batches stay full.
        raw = consume(num_messages=max_messages, timeout=0)
        if not raw:
            first = self._consumer.poll(timeout_s)
            if first is None:
                return PollResult([], [], self.broker_down)
            raw = [first]
            if max_messages > 1:
                raw += consume(num_messages=max_messages - 1, timeout=0)
        messages: list[Message] = []
        errors: list[KafkaError] = []
        for m in raw:
            err = m.error()
            if err is None:
                messages.append(m)
            elif err.code() != KafkaError._PARTITION_EOF:
                errors.append(err)
        if messages:
            self.broker_down = False
        return PollResult(messages, errors, self.broker_down)

    def commit(self, offsets: dict[int, int]) -> None:
        """Synchronously commit ``partition -> next offset`` for this topic."""
        if not offsets:
            return
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            # Commits serve lag monitoring and the no-checkpoint fallback; the checkpoint
            # is the source of truth, so a failed commit is logged, not fatal.
            log.warning("offset commit failed (the next checkpoint retries it): %s", exc)

    def lag(self, positions: dict[int, int]) -> dict[int, int]:
        """Messages behind the high watermark per partition, from cached fetch metadata."""
        out: dict[int, int] = {}
        for p, pos in positions.items():
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                out[p] = max(0, high - pos)
        return out

    def close(self) -> None:
        self._consumer.close()
