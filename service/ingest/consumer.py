"""The batch consumer: Kafka in, lists of raw messages out.

Offsets are never committed automatically. The service decides what "processed" means
(applied to the model and checkpointed, or acknowledged on the dead-letter topic) and
commits explicitly, so that a crash can never commit an offset whose event was lost.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)

AssignCallback = Callable[[list[TopicPartition]], None]


@dataclass(slots=True)
class PollResult:
    """Messages from one poll, and the partitions whose messages they are."""

    messages: list[Message]
    errors: list[KafkaError] = field(default_factory=list)


class BatchConsumer:
    """A confluent-kafka consumer tuned for batch consumption with manual commits.

    Parameters
    ----------
    bootstrap_servers, group_id, topic
        Where to read.
    auto_offset_reset
        Where to start when neither a checkpoint nor a committed offset says.
    on_assign, on_revoke
        Called from inside ``poll`` on rebalances. ``on_assign`` may change the offsets of
        the partitions it receives (for example to the ones stored in a checkpoint); the
        consumer then starts from those.
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
        on_assign: AssignCallback | None = None,
        on_revoke: AssignCallback | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": group_id,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": auto_offset_reset,
            # Large fetches: the service is throughput-bound, not latency-bound per event.
            "fetch.min.bytes": 1,
            "queued.max.messages.kbytes": 65536,
            "partition.assignment.strategy": "cooperative-sticky",
            # Protects the group against a stuck process, while leaving room for a
            # checkpoint write on a slow object store.
            "max.poll.interval.ms": 300_000,
            "session.timeout.ms": 10_000,
            "heartbeat.interval.ms": 1_000,
        }
        conf.update(extra or {})
        self.topic = topic
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._consumer = Consumer(conf, logger=log)
        self._consumer.subscribe(
            [topic], on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._revoked
        )

    # Rebalance callbacks run inside poll/consume on this thread.
    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._on_assign is not None:
            self._on_assign(partitions)
        consumer.incremental_assign(partitions)

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._on_revoke is not None:
            self._on_revoke(partitions)
        consumer.incremental_unassign(partitions)

    def poll(self, max_messages: int, timeout_s: float) -> PollResult:
        """Up to ``max_messages`` messages; errors are separated out, never raised."""
        raw = self._consumer.consume(num_messages=max_messages, timeout=timeout_s)
        messages: list[Message] = []
        errors: list[KafkaError] = []
        for m in raw:
            err = m.error()
            if err is None:
                messages.append(m)
            elif err.code() == KafkaError._PARTITION_EOF:
                continue
            else:
                errors.append(err)
        return PollResult(messages, errors)

    def commit(self, offsets: dict[int, int]) -> None:
        """Synchronously commit ``partition -> next offset`` for this topic."""
        if not offsets:
            return
        tps = [TopicPartition(self.topic, p, o) for p, o in offsets.items()]
        try:
            self._consumer.commit(offsets=tps, asynchronous=False)
        except KafkaException as exc:
            # A commit is for lag monitoring and the no-checkpoint fallback; the checkpoint
            # is the source of truth, so a failed commit is logged, not fatal.
            log.warning("offset commit failed (will retry with the next one): %s", exc)

    def committed(self, partitions: list[int], timeout_s: float = 10.0) -> dict[int, int]:
        tps = [TopicPartition(self.topic, p) for p in partitions]
        result = self._consumer.committed(tps, timeout=timeout_s)
        return {tp.partition: tp.offset for tp in result if tp.offset >= 0}

    def assignment(self) -> list[int]:
        return sorted(tp.partition for tp in self._consumer.assignment()
                      if tp.topic == self.topic)

    def lag(self, positions: dict[int, int], timeout_s: float = 1.0) -> dict[int, int]:
        """Messages behind the high watermark, per partition, given our next offsets."""
        out: dict[int, int] = {}
        for p, pos in positions.items():
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    TopicPartition(self.topic, p), timeout=timeout_s, cached=True
                )
            except KafkaException:
                continue
            if high >= 0:
                out[p] = max(0, high - pos)
        return out

    def pause(self) -> None:
        self._consumer.pause(self._consumer.assignment())

    def resume(self) -> None:
        self._consumer.resume(self._consumer.assignment())

    def close(self) -> None:
        self._consumer.close()
