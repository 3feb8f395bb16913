"""On the real broker: good events reach the ExampleBatch, bad ones the DLQ with their reason."""

from __future__ import annotations

import json
import time
from collections.abc import Callable

import pytest
from confluent_kafka import Message, Producer

from service.events.decode import decode_batch
from service.events.reasons import RejectReason
from service.events.timestamps import parse_rfc3339_one
from service.ingest.dead_letter import (
    HEADER_DETAIL,
    HEADER_REASON,
    HEADER_REJECTED_AT,
    HEADER_SOURCE_OFFSET,
    HEADER_SOURCE_PARTITION,
    HEADER_SOURCE_TOPIC,
    DeadLetterProducer,
)
from service.preprocess import PreprocessConfig, Preprocessor
from tests.streams import read_topic

pytestmark = pytest.mark.integration


def _rating(event_id: str, value: float, ts_ms: int) -> bytes:
    return json.dumps({
        "schema_version": 1, "event_id": event_id, "event_type": "rating", "user_id": "u1",
        "item_id": "i1", "timestamp": ts_ms, "value": value,
    }).encode()


def _consume(bootstrap: str, topic: str, n: int, timeout_s: float = 30.0) -> list[Message]:
    return read_topic(bootstrap, topic, n, timeout_s)


def test_good_events_are_learned_and_bad_ones_dead_lettered_with_headers(
    kafka_bootstrap: str, unique_topic: Callable[..., str]
) -> None:
    topic, dlq_topic = unique_topic(), unique_topic()
    now = int(time.time() * 1000)
    good = {
        "g1": _rating("g1", 4.0, now - 1000),
        "g2": _rating("g2", 2.5, now - 900),
        "g3": _rating("g3", 5.0, now - 800),
    }
    bad = {
        "b-json": (b"{not json", RejectReason.NOT_JSON),
        "b-range": (_rating("b2", 9.0, now), RejectReason.VALUE_OUT_OF_RANGE),
        "b-old": (_rating("b3", 3.0, now - 10 * 86_400_000), RejectReason.TIMESTAMP_TOO_OLD),
        "b-dup": (_rating("g1", 4.0, now - 1000), RejectReason.DUPLICATE),
        "b-tomb": (None, RejectReason.TOMBSTONE),
    }
    order = ["g1", "b-json", "g2", "b-range", "b-old", "b-dup", "g3", "b-tomb"]
    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for key in order:
        value = good[key] if key in good else bad[key][0]
        producer.produce(topic, key=key.encode(), value=value, headers=[("trace", key.encode())])
    assert producer.flush(30) == 0

    messages = _consume(kafka_bootstrap, topic, len(order))
    assert [m.key() for m in messages] == [k.encode() for k in order]

    cfg = PreprocessConfig(user_admit_after=1, item_admit_after=1, holdout_fraction=0.0)
    decoded = decode_batch([m.value() for m in messages], now, cfg)
    result = Preprocessor(cfg).transform(decoded, now)
    rejections = sorted(decoded.rejections + result.rejections, key=lambda r: r.index)

    # Exactly the good events reach the learner, in order.
    assert result.examples.y.tolist() == [4.0, 2.5, 5.0]
    assert result.examples.ts_ms.tolist() == [now - 1000, now - 900, now - 800]
    assert {messages[r.index].key().decode(): r.reason for r in rejections} == {
        k: reason for k, (_, reason) in bad.items()
    }

    dlq = DeadLetterProducer(kafka_bootstrap, dlq_topic)
    tickets = [dlq.send(messages[r.index], r.reason, r.detail) for r in rejections]
    acked, failed = dlq.flush()
    assert (acked, failed) == (len(bad), 0) and dlq.failures == []
    assert tickets == sorted(set(tickets))

    copies = _consume(kafka_bootstrap, dlq_topic, len(bad))
    assert len(copies) == len(bad)
    assert not _consume(kafka_bootstrap, dlq_topic, len(bad) + 1, timeout_s=3)[len(bad):]
    by_key = {m.key().decode(): m for m in copies}
    assert set(by_key) == set(bad)
    source_offsets = {m.key().decode(): m.offset() for m in messages}
    for key, (value, reason) in bad.items():
        copy = by_key[key]
        headers = dict(copy.headers() or [])
        assert copy.value() == value
        assert headers["trace"] == key.encode()  # original headers kept
        assert headers[HEADER_REASON] == reason.value.encode()
        assert headers[HEADER_DETAIL]
        assert headers[HEADER_SOURCE_TOPIC] == topic.encode()
        assert headers[HEADER_SOURCE_PARTITION] == b"0"
        assert headers[HEADER_SOURCE_OFFSET] == str(source_offsets[key]).encode()
        rejected_at = parse_rfc3339_one(headers[HEADER_REJECTED_AT].decode())
        assert rejected_at is not None and abs(rejected_at - time.time() * 1000) < 120_000


def test_unacknowledged_copies_are_reported_as_failed(kafka_bootstrap: str) -> None:
    # A topic name the broker refuses: the copy can never be acknowledged.
    dlq = DeadLetterProducer(kafka_bootstrap, "invalid topic name!",
                             extra={"message.timeout.ms": 3000})

    class Fake:
        def value(self) -> bytes:
            return b"x"

        def key(self) -> None:
            return None

        def headers(self) -> None:
            return None

        def topic(self) -> str:
            return "events"

        def partition(self) -> int:
            return 3

        def offset(self) -> int:
            return 41

    ticket = dlq.send(Fake(), RejectReason.NOT_JSON, "detail")
    acked, failed = dlq.flush(timeout_s=10)
    assert (acked, failed) == (0, 1)
    (failure,) = dlq.failures
    assert (failure.ticket, failure.source_partition, failure.source_offset) == (ticket, 3, 41)
