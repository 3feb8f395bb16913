"""The dead-letter producer: every rejected message goes to a DLQ topic with its reason.

A rejected event is only *processed* once its copy is safely on the dead-letter topic, so
the producer is idempotent with ``acks=all``, and :meth:`DeadLetterProducer.flush` reports
which copies the broker acknowledged. The runtime must not move its offsets past a
rejected message whose copy failed, and must never be stopped by one: each failure says
what kind it is (:class:`FailureKind`), so the caller can retry a transient one and send
a smaller form (:mod:`service.ingest.dead_letter_copy`) of a copy the broker refused.

The copy keeps the original key, value and headers (in its ``full`` form), and adds:

==============================  =======================================================
``freshrec.reason``             stable reason code (``not_json``, ``id_too_long``…)
``freshrec.detail``             what the producer should fix (UTF-8, at most 1000 bytes)
``freshrec.source.topic``       topic of the original message
``freshrec.source.partition``   its partition (decimal)
``freshrec.source.offset``      its offset (decimal)
``freshrec.rejected_at``        when it was rejected, RFC 3339 UTC with milliseconds
``freshrec.copy``               ``full``, ``cut`` or ``reference``
==============================  =======================================================

Only Kafka I/O lives here: deciding *what* to reject is the decoder's and the
preprocessor's job.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from service.events.timestamps import format_rfc3339
from service.ingest.dead_letter_copy import Copy, CopyForm, build_copy

log = logging.getLogger(__name__)

HEADER_REASON = "freshrec.reason"
HEADER_DETAIL = "freshrec.detail"
HEADER_SOURCE_TOPIC = "freshrec.source.topic"
HEADER_SOURCE_PARTITION = "freshrec.source.partition"
HEADER_SOURCE_OFFSET = "freshrec.source.offset"
HEADER_REJECTED_AT = "freshrec.rejected_at"
MAX_DETAIL_BYTES = 1000
# What a record may weigh when the broker's limit is not known (librdkafka's default).
DEFAULT_MAX_RECORD_BYTES = 1_000_000


class FailureKind(StrEnum):
    """Why a copy did not reach the broker, and so what to try next."""

    TRANSIENT = "transient"
    """The broker is away or slow (timeouts, leader changes): the same copy may go later."""
    TOO_LARGE = "too_large"
    """The broker refused the copy's size: a smaller form may go."""
    UNROUTABLE = "unroutable"
    """The dead-letter topic is missing or not writable: no form of any copy will go."""
    REFUSED = "refused"
    """Anything else the broker or the client refused: a smaller form may go."""


_TOO_LARGE = frozenset({KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE})
_UNROUTABLE = frozenset({
    KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC, KafkaError._UNKNOWN_PARTITION,
    KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TOPIC_EXCEPTION,  # an invalid topic name
})
_TRANSIENT = frozenset({
    KafkaError._MSG_TIMED_OUT, KafkaError._TIMED_OUT, KafkaError._TRANSPORT,
    KafkaError._ALL_BROKERS_DOWN, KafkaError.REQUEST_TIMED_OUT, KafkaError.NETWORK_EXCEPTION,
    KafkaError.NOT_ENOUGH_REPLICAS, KafkaError.NOT_ENOUGH_REPLICAS_AFTER_APPEND,
    KafkaError.LEADER_NOT_AVAILABLE, KafkaError.NOT_LEADER_FOR_PARTITION,
    KafkaError.KAFKA_STORAGE_ERROR, KafkaError._QUEUE_FULL, KafkaError._PURGE_QUEUE,
    KafkaError._PURGE_INFLIGHT, KafkaError._FATAL,
})


def classify(error: KafkaError | None) -> FailureKind:
    """The kind of a librdkafka error (``None``: not a Kafka error at all)."""
    if error is None:
        return FailureKind.REFUSED
    if error.fatal():
        return FailureKind.TRANSIENT  # the producer is renewed; the copy may go then
    code = error.code()
    if code in _TOO_LARGE:
        return FailureKind.TOO_LARGE
    if code in _UNROUTABLE:
        return FailureKind.UNROUTABLE
    if code in _TRANSIENT or error.retriable():
        return FailureKind.TRANSIENT
    return FailureKind.REFUSED


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
    form: CopyForm = CopyForm.FULL
    """The form of the copy that failed."""
    kind: FailureKind = FailureKind.TRANSIENT


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
    max_record_bytes
        The most bytes one record may have on the dead-letter topic (its
        ``max.message.bytes``, see :func:`service.ingest.admin.max_record_bytes`): a copy
        that would be larger is cut to fit before it is sent.
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
        max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES,
        extra: dict[str, Any] | None = None,
    ) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            # A DLQ copy must never be lost or doubled by a retry.
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "message.timeout.ms": 30_000,
            # librdkafka refuses a record above its own limit before the broker sees it;
            # the copies are shaped to the topic's limit, so let that one decide.
            "message.max.bytes": max(1000, min(max_record_bytes, 1_000_000_000)),
        }
        conf.update(extra or {})
        self._conf = conf
        self.topic = topic
        self.max_record_bytes = max_record_bytes
        self._producer = Producer(conf)
        self._renew_pending = False
        self._next_ticket = 0
        self._outstanding: dict[int, tuple[str | None, int | None, int | None, CopyForm]] = {}
        self._acked: Counter[CopyForm] = Counter()
        self._failures: list[DeliveryFailure] = []
        self.failures: list[DeliveryFailure] = []
        """The failures reported by the last :meth:`flush`."""
        self.acked_by_form: Counter[CopyForm] = Counter()
        """The acknowledged copies of the last :meth:`flush`, by form."""

    def send(self, message: MessageLike, reason: str, detail: str,
             form: CopyForm = CopyForm.FULL) -> int:
        """Queue a copy of ``message`` in ``form`` (or smaller); returns a ticket.

        Never raises for the message's sake: a copy the client refuses at once is tried in
        the next smaller form, and one that no form gets past the client is reported by
        the next :meth:`flush` as a failure like any other.
        """
        source_topic = message.topic()
        partition, offset = message.partition(), message.offset()
        own = {
            HEADER_REASON: str(reason).encode(),
            HEADER_DETAIL: _truncate(detail),
            HEADER_SOURCE_TOPIC: (source_topic or "").encode(),
            HEADER_SOURCE_PARTITION: str(partition).encode(),
            HEADER_SOURCE_OFFSET: str(offset).encode(),
            HEADER_REJECTED_AT: format_rfc3339(int(time.time() * 1000)).encode(),
        }
        target = self.topic or f"{source_topic}.dlq"
        ticket = self._next_ticket
        self._next_ticket += 1
        wanted: CopyForm | None = form
        error: tuple[str, FailureKind] = ("no form of the copy could be built",
                                          FailureKind.REFUSED)
        tried: CopyForm = form
        while wanted is not None:
            tried = wanted
            try:
                copy = build_copy(message.key(), message.value(), _headers(message), own,
                                  wanted, max_bytes=self.max_record_bytes,
                                  source=(source_topic, partition, offset))
                tried = copy.form
                self._outstanding[ticket] = (source_topic, partition, offset, copy.form)
                self._produce(target, copy, ticket)
                return ticket
            except KafkaException as exc:
                self._outstanding.pop(ticket, None)
                kafka_error = exc.args[0] if exc.args else None
                if not isinstance(kafka_error, KafkaError):
                    kafka_error = None
                kind = classify(kafka_error)
                error = (f"the client refused the {tried.label} copy: {exc}", kind)
                if kafka_error is not None and kafka_error.fatal():
                    self._renew_producer(str(exc))
                if kind in (FailureKind.TRANSIENT, FailureKind.UNROUTABLE):
                    break  # no smaller form helps; the caller decides when to try again
                wanted = tried.smaller()
            except Exception as exc:  # e.g. a header the client cannot serialise
                self._outstanding.pop(ticket, None)
                error = (f"the client refused the {tried.label} copy: "
                         f"{type(exc).__name__}: {exc}", FailureKind.REFUSED)
                wanted = tried.smaller()
        self._failures.append(DeliveryFailure(ticket, source_topic, partition, offset,
                                              error[0], tried, error[1]))
        return ticket

    def _produce(self, target: str, copy: Copy, ticket: int) -> None:
        def on_delivery(err: KafkaError | None, _msg: Any, ticket: int = ticket) -> None:
            source = self._outstanding.pop(ticket, None)
            if source is None:
                return  # already reported as failed by a flush that timed out
            if err is None:
                self._acked[source[3]] += 1
                return
            if err.fatal():
                self._renew_producer(str(err))
            self._failures.append(DeliveryFailure(ticket, *source[:3], str(err), source[3],
                                                  classify(err)))

        while True:
            try:
                self._producer.produce(target, value=copy.value, key=copy.key,
                                       headers=copy.headers, on_delivery=on_delivery)
                break
            except BufferError:
                # Local queue full: serve delivery reports to make room, then retry.
                self._producer.poll(0.1)
        self._producer.poll(0)

    def _renew_producer(self, why: str) -> None:
        """An idempotent producer in a fatal state refuses everything: start a new one."""
        log.error("dead-letter producer failed fatally (%s): starting a new one", why)
        self._renew_pending = True

    def flush(self, timeout_s: float = 30.0) -> FlushResult:
        """Wait for every queued copy; report acknowledged and failed sends since last time.

        A copy still unacknowledged at the timeout counts as a transient failure (it may
        still arrive; the caller must treat it as not delivered). Details are in
        :attr:`failures`, acknowledgements by form in :attr:`acked_by_form`.
        """
        self._producer.flush(timeout_s)
        for ticket, (topic, partition, offset, form) in sorted(self._outstanding.items()):
            self._failures.append(DeliveryFailure(
                ticket, topic, partition, offset, f"not acknowledged within {timeout_s}s",
                form, FailureKind.TRANSIENT))
        self._outstanding.clear()
        if self._renew_pending:
            self._renew_pending = False
            self._producer = Producer(self._conf)
        self.acked_by_form = self._acked
        result = FlushResult(sum(self._acked.values()), len(self._failures))
        self.failures = self._failures
        self._failures = []
        self._acked = Counter()
        return result

    def close(self, timeout_s: float = 30.0) -> FlushResult:
        """Flush; the producer is released when this object is garbage collected."""
        return self.flush(timeout_s)

    def __enter__(self) -> DeadLetterProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _headers(message: MessageLike) -> list[tuple[str, str | bytes | None]]:
    return list(message.headers() or [])


def _truncate(detail: str) -> bytes:
    raw = detail.encode("utf-8", "replace")
    if len(raw) <= MAX_DETAIL_BYTES:
        return raw
    return raw[:MAX_DETAIL_BYTES].decode("utf-8", "ignore").encode()
