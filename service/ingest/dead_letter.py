"""The dead-letter producer: every rejected message goes to a DLQ topic with its reason.

A rejected event is only *processed* once its copy is safely on the dead-letter topic, so
the producer is idempotent with ``acks=all``, and :meth:`DeadLetterProducer.flush` reports
which copies the broker acknowledged. The runtime must not move its offsets past a
rejected message whose copy failed.

The copy keeps the original key, value and headers, and adds:

==========================  ===========================================================
``freshrec.reason``         stable reason code (``not_json``, ``duplicate``…)
``freshrec.detail``         what the producer should fix (UTF-8, at most 1000 bytes)
``freshrec.source.topic``   topic of the original message
``freshrec.source.partition``  its partition (decimal)
``freshrec.source.offset``  its offset (decimal)
``freshrec.rejected_at``    when it was rejected, RFC 3339 UTC with milliseconds
==========================  ===========================================================

Only Kafka I/O lives here: deciding *what* to reject is the decoder's and the
preprocessor's job.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from confluent_kafka import KafkaError, Producer

from service.events.timestamps import format_rfc3339

HEADER_REASON = "freshrec.reason"
HEADER_DETAIL = "freshrec.detail"
HEADER_SOURCE_TOPIC = "freshrec.source.topic"
HEADER_SOURCE_PARTITION = "freshrec.source.partition"
HEADER_SOURCE_OFFSET = "freshrec.source.offset"
HEADER_REJECTED_AT = "freshrec.rejected_at"
MAX_DETAIL_BYTES = 1000


class MessageLike(Protocol):
    """What :meth:`DeadLetterProducer.send` needs of a consumed message."""

    def value(self) -> bytes | None: ...
    def key(self) -> bytes | None: ...
    def headers(self) -> list[tuple[str, bytes | None]] | None: ...
    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


@dataclass(frozen=True, slots=True)
class DeliveryFailure:
    """A dead-letter copy the broker did not acknowledge."""

    ticket: int
    source_topic: str | None
    source_partition: int | None
    source_offset: int | None
    error: str


class FlushResult(NamedTuple):
    """Outcome of the sends since the previous flush (unpacks as ``acked, failed``)."""

    acked: int
    failed: int


class DeadLetterProducer:
    """Copies rejected messages to a dead-letter topic and tracks their delivery.

    Parameters
    ----------
    bootstrap_servers
        Kafka bootstrap servers.
    topic
        Dead-letter topic; ``None`` sends each copy to ``<source topic>.dlq``.
    extra
        More librdkafka producer settings (they override the defaults).

    Example
    -------
    ::

        dlq = DeadLetterProducer("127.0.0.1:19092", "freshrec.events.dlq")
        for r in rejections:
            dlq.send(messages[r.index], r.reason, r.detail)
        acked, failed = dlq.flush()
        if failed:
            ...  # do not commit past dlq.failures
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str | None = None,
        *,
        extra: dict[str, Any] | None = None,
    ) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            # A DLQ copy must never be lost or doubled by a retry.
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
        }
        conf.update(extra or {})
        self.topic = topic
        self._producer = Producer(conf)
        self._next_ticket = 0
        self._outstanding: dict[int, tuple[str | None, int | None, int | None]] = {}
        self._acked = 0
        self._failures: list[DeliveryFailure] = []
        self.failures: list[DeliveryFailure] = []
        """The failures reported by the last :meth:`flush`."""

    def send(self, message: MessageLike, reason: str, detail: str) -> int:
        """Queue a copy of ``message``; returns a ticket identifying this send."""
        source_topic = message.topic()
        partition, offset = message.partition(), message.offset()
        headers: list[tuple[str, str | bytes | None]] = list(message.headers() or [])
        headers += [
            (HEADER_REASON, str(reason).encode()),
            (HEADER_DETAIL, _truncate(detail)),
            (HEADER_SOURCE_TOPIC, (source_topic or "").encode()),
            (HEADER_SOURCE_PARTITION, str(partition).encode()),
            (HEADER_SOURCE_OFFSET, str(offset).encode()),
            (HEADER_REJECTED_AT, format_rfc3339(int(time.time() * 1000)).encode()),
        ]
        target = self.topic or f"{source_topic}.dlq"
        ticket = self._next_ticket
        self._next_ticket += 1
        self._outstanding[ticket] = (source_topic, partition, offset)

        def on_delivery(err: KafkaError | None, _msg: Any, ticket: int = ticket) -> None:
            source = self._outstanding.pop(ticket, None)
            if source is None:
                return  # already reported as failed by a flush that timed out
            if err is None:
                self._acked += 1
            else:
                self._failures.append(DeliveryFailure(ticket, *source, str(err)))

        while True:
            try:
                self._producer.produce(target, value=message.value(), key=message.key(),
                                       headers=headers, on_delivery=on_delivery)
                break
            except BufferError:
                # Local queue full: serve delivery reports to make room, then retry.
                self._producer.poll(0.1)
        self._producer.poll(0)
        return ticket

    def flush(self, timeout_s: float = 30.0) -> FlushResult:
        """Wait for every queued copy; report acknowledged and failed sends since last time.

        A copy still unacknowledged at the timeout counts as failed (it may still arrive;
        the caller must treat it as not delivered). Details are in :attr:`failures`.
        """
        self._producer.flush(timeout_s)
        for ticket, source in sorted(self._outstanding.items()):
            self._failures.append(DeliveryFailure(ticket, *source,
                                                  f"not acknowledged within {timeout_s}s"))
        self._outstanding.clear()
        result = FlushResult(self._acked, len(self._failures))
        self.failures = self._failures
        self._failures = []
        self._acked = 0
        return result

    def close(self, timeout_s: float = 30.0) -> FlushResult:
        """Flush; the producer is released when this object is garbage collected."""
        return self.flush(timeout_s)

    def __enter__(self) -> DeadLetterProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _truncate(detail: str) -> bytes:
    raw = detail.encode("utf-8", "replace")
    if len(raw) <= MAX_DETAIL_BYTES:
        return raw
    return raw[:MAX_DETAIL_BYTES].decode("utf-8", "ignore").encode()
