"""Publishing generated events to a topic, as a product team's service would."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import orjson
from confluent_kafka import Producer


def make_producer(bootstrap_servers: str) -> Producer:
    """A producer tuned for bulk publishing (batching and compression on)."""
    return Producer(
        {
            "bootstrap.servers": bootstrap_servers,
            "linger.ms": 20,
            "batch.num.messages": 10_000,
            "compression.type": "lz4",
            "enable.idempotence": True,
            "queue.buffering.max.messages": 500_000,
        }
    )


def user_key(value: bytes) -> bytes | None:
    """The event's ``user_id`` as the message key, as producers are asked to key events.

    Kafka's partitioner then keeps each user's events in one partition, in order: what
    dedup, labels and scale-out shards rely on. ``None`` for a value that is not an event.

    >>> user_key(b'{"user_id": 42, "item_id": "i1"}'), user_key(b'not json')
    (b'42', None)
    """
    try:
        user = orjson.loads(value).get("user_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return None if user is None else str(user).encode()


def publish(
    producer: Producer,
    topic: str,
    values: Iterable[bytes],
    *,
    key: Callable[[bytes], bytes | None] | None = None,
    rate: float = 0.0,
    on_progress: Callable[[int], None] | None = None,
) -> int:
    """Produce every value, at ``rate`` messages/s if positive; returns how many.

    Waits for every message to be acknowledged, and raises if any was not: a demo or
    benchmark that silently lost input would measure nothing.
    """
    failures: list[str] = []

    def delivered(err: object, _msg: object) -> None:
        if err is not None:
            failures.append(str(err))

    started = time.perf_counter()
    n = 0
    for value in values:
        while True:
            try:
                producer.produce(topic, value, key(value) if key else None,
                                 on_delivery=delivered)
                break
            except BufferError:
                producer.poll(0.05)  # local queue full: let the broker catch up
        n += 1
        if n % 10_000 == 0:
            producer.poll(0)
            if on_progress is not None:
                on_progress(n)
        if rate > 0:
            ahead = n / rate - (time.perf_counter() - started)
            if ahead > 0.005:
                time.sleep(ahead)
    remaining = producer.flush(60)
    if remaining or failures:
        raise RuntimeError(
            f"{remaining} messages not delivered, {len(failures)} failed "
            f"(first: {failures[:1]}); is the broker up?"
        )
    return n
