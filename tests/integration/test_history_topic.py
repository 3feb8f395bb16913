"""TopicHistory on the real broker: the range is fixed when it opens, from the oldest
offset or a time, across partitions, read in batches."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka import Producer

from service.ingest.history import TopicHistory, TopicHistoryError

pytestmark = pytest.mark.integration

T0 = 1_700_000_000_000


def _produce(bootstrap: str, topic: str, rows: list[tuple[int, int, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": bootstrap})
    for partition, ts, value in rows:
        producer.produce(topic, value=value, partition=partition, timestamp=ts)
    assert producer.flush(30) == 0


def test_the_range_ends_where_the_topic_ended_when_it_opened(
    kafka_bootstrap: str, unique_topic: Callable[..., str],
) -> None:
    topic = unique_topic(partitions=3)
    rows = [(k % 3, T0 + 1000 * k, f"h{k}".encode()) for k in range(300)]
    _produce(kafka_bootstrap, topic, rows)
    with TopicHistory(kafka_bootstrap, topic) as history, \
            TopicHistory(kafka_bootstrap, topic, start=T0 + 1000 * 150) as recent:
        assert history.end_offsets == {0: 100, 1: 100, 2: 100} and len(history) == 300
        assert recent.start_offsets == {0: 50, 1: 50, 2: 50} and len(recent) == 150
        # Published after the range was fixed: not history, left for freshrec run.
        _produce(kafka_bootstrap, topic, [(k % 3, T0 + 10**6, b"live") for k in range(30)])
        batches = list(history.batches(64))
        got = [m.value() for b in batches for m in b]
        assert all(len(b) <= 64 for b in batches) and len(batches) >= 5
        assert sorted(got) == sorted(v for _, _, v in rows)
        for p in range(3):  # each partition in its own order
            mine = [m.offset() for b in batches for m in b if m.partition() == p]
            assert mine == list(range(100))
        assert sorted(m.value() for b in recent.batches(1000) for m in b) == sorted(
            v for _, ts, v in rows if ts >= T0 + 1000 * 150)


def test_an_absent_topic_is_named(kafka_bootstrap: str) -> None:
    with pytest.raises(TopicHistoryError, match="does not exist"):
        TopicHistory(kafka_bootstrap, "absent-topic-for-history-4f2a")
