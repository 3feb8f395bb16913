"""DeadLetterProducer against a fake librdkafka producer: headers and delivery accounting."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from service.events.timestamps import parse_rfc3339_one
from service.ingest import dead_letter
from service.ingest.dead_letter import (
    MAX_DETAIL_BYTES,
    DeadLetterProducer,
    FailureKind,
    classify,
)
from service.ingest.dead_letter_copy import CopyForm


class FakeProducer:
    """Queues produce() calls; poll/flush deliver them with the outcome tests choose."""

    def __init__(self, conf: dict[str, Any]) -> None:
        self.conf = conf
        self.queued: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []
        self.fail_topics: set[str] = set()
        self.hold = False  # keep messages unacknowledged (a broker that never answers)
        self.buffer_errors = 0
        self.raise_on_produce: list[KafkaError] = []  # refused at once, one per call
        self.deliver_error: KafkaError | None = None  # what the broker answers

    def produce(self, topic: str, **kw: Any) -> None:
        if self.buffer_errors:
            self.buffer_errors -= 1
            raise BufferError("queue full")
        if self.raise_on_produce:
            raise KafkaException(self.raise_on_produce.pop(0))
        self.queued.append({"topic": topic, **kw})

    def poll(self, timeout: float = 0) -> int:
        if self.hold:
            return 0
        served = 0
        while self.queued:
            msg = self.queued.pop(0)
            err = self.deliver_error
            if msg["topic"] in self.fail_topics:
                err = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "broker said no")
            if err is None:
                self.delivered.append(msg)
            msg["on_delivery"](err, None)
            served += 1
        return served

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return len(self.queued)


class Msg:
    def __init__(self, offset: int, headers: list[tuple[str, bytes]] | None = None) -> None:
        self._offset, self._headers = offset, headers

    def value(self) -> bytes:
        return b"{bad"

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def topic(self) -> str:
        return "events"

    def partition(self) -> int:
        return 2

    def offset(self) -> int:
        return self._offset


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> list[FakeProducer]:
    made: list[FakeProducer] = []

    def factory(conf: dict[str, Any]) -> FakeProducer:
        made.append(FakeProducer(conf))
        return made[-1]

    monkeypatch.setattr(dead_letter, "Producer", factory)
    return made


def test_copy_keeps_the_message_and_adds_the_headers(fake: list[FakeProducer]) -> None:
    dlq = DeadLetterProducer("broker:9092")
    (producer,) = fake
    assert producer.conf["enable.idempotence"] is True and producer.conf["acks"] == "all"
    dlq.send(Msg(41, [("trace", b"t-1")]), "not_json", "x" * 5000)
    assert tuple(dlq.flush()) == (1, 0)
    (copy,) = producer.delivered
    assert copy["topic"] == "events.dlq"  # default: <source topic>.dlq
    assert (copy["key"], copy["value"]) == (b"k", b"{bad")
    headers = dict(copy["headers"])
    assert headers["trace"] == b"t-1"
    assert headers["freshrec.reason"] == b"not_json"
    assert len(headers["freshrec.detail"]) == MAX_DETAIL_BYTES
    assert headers["freshrec.source.topic"] == b"events"
    assert (headers["freshrec.source.partition"], headers["freshrec.source.offset"]) == (
        b"2", b"41")
    assert parse_rfc3339_one(headers["freshrec.rejected_at"].decode()) is not None


def test_failures_are_reported_with_their_source(fake: list[FakeProducer]) -> None:
    dlq = DeadLetterProducer("broker:9092", "bad-topic")
    fake[0].fail_topics.add("bad-topic")
    tickets = [dlq.send(Msg(o), "duplicate", "d") for o in (5, 6)]
    acked, failed = dlq.flush()
    assert (acked, failed) == (0, 2)
    assert [(f.ticket, f.source_offset) for f in dlq.failures] == list(zip(tickets, [5, 6],
                                                                           strict=True))
    assert tuple(dlq.flush()) == (0, 0) and dlq.failures == []  # counts reset per flush


def test_unacknowledged_at_timeout_is_failed_and_a_late_ack_is_ignored(
    fake: list[FakeProducer],
) -> None:
    dlq = DeadLetterProducer("broker:9092", "dlq")
    fake[0].hold = True
    dlq.send(Msg(9), "tombstone", "d")
    assert tuple(dlq.flush(timeout_s=0.01)) == (0, 1)
    assert "not acknowledged" in dlq.failures[0].error
    fake[0].hold = False
    fake[0].poll()  # the broker answers after all
    assert tuple(dlq.flush()) == (0, 0)


def test_a_full_local_queue_is_retried(fake: list[FakeProducer]) -> None:
    dlq = DeadLetterProducer("broker:9092", "dlq")
    fake[0].buffer_errors = 2
    dlq.send(Msg(1), "not_json", "d")
    assert tuple(dlq.flush()) == (1, 0)


def test_a_copy_refused_at_once_as_too_large_goes_smaller_in_the_same_send(
    fake: list[FakeProducer],
) -> None:
    dlq = DeadLetterProducer("broker:9092", "dlq")
    fake[0].raise_on_produce = [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE),
                                KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)]
    dlq.send(Msg(1), "id_too_long", "d")
    assert tuple(dlq.flush()) == (1, 0)
    assert dlq.acked_by_form == {CopyForm.REFERENCE: 1}
    (copy,) = fake[0].delivered
    assert dict(copy["headers"])["freshrec.copy"] == b"reference" and copy["key"] is None


def test_a_copy_no_form_gets_past_the_client_is_a_failure_not_an_exception(
    fake: list[FakeProducer],
) -> None:
    dlq = DeadLetterProducer("broker:9092", "dlq")
    fake[0].raise_on_produce = [KafkaError(KafkaError.INVALID_RECORD)] * 3
    ticket = dlq.send(Msg(1), "not_json", "d")
    assert tuple(dlq.flush()) == (0, 1)
    (failure,) = dlq.failures
    assert (failure.ticket, failure.form, failure.kind) == (
        ticket, CopyForm.REFERENCE, FailureKind.REFUSED)


def test_a_copy_larger_than_the_topic_allows_is_cut_before_it_is_sent(
    fake: list[FakeProducer],
) -> None:
    dlq = DeadLetterProducer("broker:9092", "dlq", max_record_bytes=10_000)
    assert fake[0].conf["message.max.bytes"] == 10_000

    class Big(Msg):
        def value(self) -> bytes:
            return b"x" * 50_000

    dlq.send(Big(3), "oversized_message", "d")
    assert tuple(dlq.flush()) == (1, 0) and dlq.acked_by_form == {CopyForm.CUT: 1}
    assert len(fake[0].delivered[0]["value"]) < 10_000


@pytest.mark.parametrize(("code", "kind"), [
    (KafkaError.MSG_SIZE_TOO_LARGE, FailureKind.TOO_LARGE),
    (KafkaError._MSG_TIMED_OUT, FailureKind.TRANSIENT),
    (KafkaError.NOT_ENOUGH_REPLICAS, FailureKind.TRANSIENT),
    (KafkaError.UNKNOWN_TOPIC_OR_PART, FailureKind.UNROUTABLE),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, FailureKind.UNROUTABLE),
    (KafkaError.INVALID_RECORD, FailureKind.REFUSED),
])
def test_delivery_errors_are_classified_by_what_can_be_done_next(
    fake: list[FakeProducer], code: int, kind: FailureKind,
) -> None:
    assert classify(KafkaError(code)) == kind
    dlq = DeadLetterProducer("broker:9092", "dlq")
    fake[0].deliver_error = KafkaError(code)
    dlq.send(Msg(7), "not_json", "d")
    assert tuple(dlq.flush()) == (0, 1)
    assert (dlq.failures[0].kind, dlq.failures[0].form) == (kind, CopyForm.FULL)


def test_a_fatal_producer_error_renews_the_producer(fake: list[FakeProducer]) -> None:
    dlq = DeadLetterProducer("broker:9092", "dlq")
    fake[0].deliver_error = KafkaError(KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER, fatal=True)
    dlq.send(Msg(7), "not_json", "d")
    assert tuple(dlq.flush()) == (0, 1)
    assert dlq.failures[0].kind == FailureKind.TRANSIENT  # the copy may go again
    assert len(fake) == 2  # a new producer for the retry
    dlq.send(Msg(7), "not_json", "d")
    assert tuple(dlq.flush()) == (1, 0) and len(fake[1].delivered) == 1
