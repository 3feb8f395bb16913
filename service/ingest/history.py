"""A bounded range of a topic, read fast: the history ``freshrec backfill --data topic:``
learns from.

A topic with long retention is history too. :class:`TopicHistory` fixes the range when it
opens: from a start (the oldest offset each partition still holds, or the first message
produced at or after a time) up to the end offsets of that moment. What is produced
afterwards is not history: it is left for ``freshrec run``, which starts exactly where the
range ended when the history topic is the live topic.

It reads with batched ``consume`` calls (one call hands over up to ``batch_size``
messages, not one ``poll`` per message), with the same consumer tuning as the service's
:class:`~service.ingest.consumer.BatchConsumer`. Messages are returned as Kafka hands
them over (each partition in offset order, partitions interleaved), so the pipeline
judges them exactly as ``freshrec run`` would.

Example
-------
::

    history = TopicHistory("127.0.0.1:19092", "events", start="earliest")
    for messages in history.batches(5_000):
        pipeline.process([m.value() for m in messages], partitions=...)
    history.end_offsets          # where freshrec run goes on
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

log = logging.getLogger(__name__)

START_POINTS = ("earliest",)
"""Named starts of the range (a time is accepted too: epoch milliseconds)."""


class TopicHistoryError(RuntimeError):
    """The topic cannot be read (absent, or the broker does not answer)."""


class TopicHistory:
    """The messages of ``topic`` from ``start`` up to its end offsets at opening.

    Parameters
    ----------
    bootstrap_servers, topic
        Where the history is.
    start
        ``"earliest"`` (everything the topic still holds) or epoch milliseconds (per
        partition, the first message whose record timestamp is at or after it).
    extra
        More librdkafka settings (the service's ``kafka.consumer_config``).
    timeout_s
        How long the broker may take to answer the metadata and offset requests.
    """

    def __init__(self, bootstrap_servers: str, topic: str, start: str | int = "earliest",
                 *, extra: dict[str, Any] | None = None, timeout_s: float = 15.0) -> None:
        if isinstance(start, str) and start not in START_POINTS:
            raise ValueError(f"start {start!r}: use {', '.join(START_POINTS)} or epoch "
                             "milliseconds")
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            # A throwaway group: reading history commits nothing and joins nothing.
            "group.id": f"freshrec-history-{topic}",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "queued.max.messages.kbytes": 65536,
            "fetch.wait.max.ms": 50,
            "max.partition.fetch.bytes": 16 << 20,
            "fetch.max.bytes": 64 << 20,
        }
        conf.update(extra or {})
        self.topic = topic
        self._consumer = Consumer(conf, logger=log)
        try:
            meta = self._consumer.list_topics(topic, timeout=timeout_s).topics.get(topic)
        except KafkaException as exc:
            self._consumer.close()
            raise TopicHistoryError(f"Kafka at {bootstrap_servers} did not answer ({exc})"
                                    ) from exc
        if meta is None or meta.error is not None or not meta.partitions:
            self._consumer.close()
            raise TopicHistoryError(f"topic {topic!r} does not exist on {bootstrap_servers}")
        partitions = sorted(meta.partitions)
        self.start_offsets: dict[int, int] = {}
        self.end_offsets: dict[int, int] = {}
        """The next offset after the range, per partition: where live reading goes on."""
        for p in partitions:
            low, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, p), timeout=timeout_s, cached=False)
            self.start_offsets[p], self.end_offsets[p] = int(low), int(high)
        if not isinstance(start, str):
            found = self._consumer.offsets_for_times(
                [TopicPartition(topic, p, int(start)) for p in partitions], timeout=timeout_s)
            for tp in found:
                # No message at or after the time: the range of that partition is empty.
                self.start_offsets[tp.partition] = (
                    self.end_offsets[tp.partition] if tp.offset < 0
                    else max(int(tp.offset), self.start_offsets[tp.partition]))

    def __len__(self) -> int:
        """Messages in the range (an upper bound: compaction and transaction markers leave
        offsets without a message)."""
        return sum(max(0, self.end_offsets[p] - s) for p, s in self.start_offsets.items())

    def batches(self, batch_size: int, timeout_s: float = 1.0) -> Iterator[list[Message]]:
        """The range's messages, up to ``batch_size`` at a time, until every partition has
        reached its end offset."""
        pending = {p: s for p, s in self.start_offsets.items() if s < self.end_offsets[p]}
        if not pending:
            return
        self._consumer.assign([TopicPartition(self.topic, p, s) for p, s in pending.items()])
        consume = self._consumer.consume
        while pending:
            raw = consume(num_messages=batch_size, timeout=timeout_s)
            out: list[Message] = []
            for m in raw:
                err = m.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.warning("reading history from %s: %s", self.topic, err)
                    continue
                p, offset = m.partition(), m.offset()
                assert p is not None and offset is not None
                if p in pending and offset < self.end_offsets[p]:
                    out.append(m)
            # Done with a partition once its position reaches the end (positions, not the
            # last message's offset: transaction markers take offsets of their own).
            for tp in self._consumer.position(
                    [TopicPartition(self.topic, p) for p in pending]):
                if tp.offset >= self.end_offsets[tp.partition]:
                    pending.pop(tp.partition, None)
            if out:
                yield out

    def close(self) -> None:
        self._consumer.close()

    def __enter__(self) -> TopicHistory:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
