"""No message stops the service: on the real broker, `freshrec run` as users run it.

Each test publishes good events around something that used to stop the service, or that
a user would want to hear about, and checks three things: the service is still up and
has learned every good event behind it, the odd message ended on the dead-letter topic
(cut, as a reference, or at least as a logged reference), and the counts add up.
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from service.ingest.admin import max_record_bytes
from tests.service_process import ServiceProcess
from tests.streams import env_storage, file_storage, newest_checkpoint, read_topic, service_env

pytestmark = pytest.mark.integration

N_GOOD = 300  # on each side of the odd message


def _rating(i: int, **fields: object) -> dict[str, object]:
    return {"schema_version": 1, "event_id": f"e{i}-{uuid.uuid4().hex[:6]}",
            "event_type": "rating", "user_id": f"u{i % 37}", "item_id": f"i{i % 11}",
            "timestamp": int(time.time() * 1000) - 60_000 + i, "value": 1.0 + i % 5,
            **fields}


def _good(start: int, n: int = N_GOOD) -> list[bytes]:
    return [orjson.dumps(_rating(i)) for i in range(start, start + n)]


def _producer(bootstrap: str) -> Producer:
    # Large enough for a message at the broker's own limit (librdkafka's default is 1 MB).
    return Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2 << 20,
                     "linger.ms": 5})


def _publish(bootstrap: str, topic: str, values: list[bytes], key: bytes | None = None
             ) -> None:
    producer = _producer(bootstrap)
    for v in values:
        producer.produce(topic, value=v, key=key)
    assert producer.flush(30) == 0


def _service(bootstrap: str, topic: str, tmp_path: Path, module: str = "service",
             **extra: str) -> tuple[ServiceProcess, dict[str, str]]:
    env = service_env(bootstrap, topic, file_storage(str(tmp_path / "store")),
                      FRESHREC_CHECKPOINT__EVERY_SECONDS="1", **extra)
    return ServiceProcess(env, tmp_path / "service.log", module=module).start(), env


def _wait_consumed(service: ServiceProcess, n: int, timeout: float = 120) -> None:
    service.wait_until(f"{n} events consumed",
                       lambda: service.total("freshrec_events_consumed_total") >= n, timeout)


def test_a_poison_pill_is_cut_onto_the_dlq_and_learning_goes_on(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path,
) -> None:
    # The pill: a valid event whose user id has about a million characters, just
    # under the broker's limit as a message, over it as a copy with freshrec's headers.
    topic = unique_topic()
    limit = max_record_bytes(kafka_bootstrap, topic)
    assert limit is not None
    head = orjson.dumps(_rating(10_000, user_id=""))
    pill = orjson.dumps(_rating(10_000, user_id="u" * (limit - 300 - len(head))))
    assert limit - 400 < len(pill) < limit - 200
    _publish(kafka_bootstrap, topic, [*_good(0), pill, *_good(1000)])
    service, _ = _service(kafka_bootstrap, topic, tmp_path)
    try:
        _wait_consumed(service, 2 * N_GOOD + 1)
        (copy,) = read_topic(kafka_bootstrap, f"{topic}.dlq", 1)
        headers = dict(copy.headers())
        assert headers["freshrec.copy"] == b"cut"
        assert headers["freshrec.reason"] == b"oversized_message"
        assert headers["freshrec.source.offset"] == str(N_GOOD).encode()
        assert headers["freshrec.original.size"] == str(len(pill)).encode()
        assert headers["freshrec.original.sha256"] == hashlib.sha256(pill).hexdigest().encode()
        assert pill.startswith(copy.value()) and len(copy.value()) < len(pill)
        # Learning went on behind it, and the service is still up.
        assert service.total("freshrec_events_applied_total") == 2 * N_GOOD
        assert service.total("freshrec_events_rejected_total") == 1
        assert service.total("freshrec_dlq_reduced_copies_total") == 1
        assert service.alive()
    finally:
        assert service.terminate() == 0


def test_an_unwritable_dlq_gives_copies_up_logged_and_learning_goes_on(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path,
) -> None:
    topic = unique_topic()
    _publish(kafka_bootstrap, topic, [*_good(0), b"{not json", *_good(1000)])
    service, _ = _service(kafka_bootstrap, topic, tmp_path,
                          FRESHREC_KAFKA__DLQ_TOPIC="not a valid topic!",
                          FRESHREC_KAFKA__CREATE_TOPICS="false")
    try:
        _wait_consumed(service, 2 * N_GOOD + 1)
        service.wait_until("the copy given up", lambda: service.total(
            "freshrec_dlq_messages_total") > 0 and "dead-letter copy given up" in service.log())
        metrics = service.metrics()
        assert metrics["freshrec_dlq_messages_total{outcome=undeliverable}"] == 1
        assert service.total("freshrec_events_applied_total") == 2 * N_GOOD
        assert service.total("freshrec_events_rejected_total") == 1
        # The reference in the log says where the original is.
        line = next(x for x in service.log().splitlines() if "dead-letter copy given up" in x)
        reference, _ = json.JSONDecoder().raw_decode(line, line.index("reference: ") + 11)
        assert reference["source"] == {"topic": topic, "partition": 0, "offset": N_GOOD}
        assert reference["reason"] == "not_json"
        assert reference["sha256"] == hashlib.sha256(b"{not json").hexdigest()
        assert service.alive()
    finally:
        assert service.terminate() == 0


def test_duplicates_are_counted_not_dead_lettered(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path,
) -> None:
    topic = unique_topic()
    good = _good(0)
    retried = good[:50]  # an at-least-once producer's retries
    _publish(kafka_bootstrap, topic, [*good, *retried, b"[]"])
    service, _ = _service(kafka_bootstrap, topic, tmp_path)
    try:
        _wait_consumed(service, len(good) + len(retried) + 1)
        assert service.total("freshrec_events_deduplicated_total") == len(retried)
        assert service.total("freshrec_events_applied_total") == len(good)
        assert service.total("freshrec_events_rejected_total") == 1  # the list only
        copies = read_topic(kafka_bootstrap, f"{topic}.dlq")
        assert [dict(c.headers())["freshrec.reason"] for c in copies] == [b"not_object"]
    finally:
        assert service.terminate() == 0


def test_an_exception_in_the_pipeline_rejects_one_message_and_learns_the_rest_once(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path,
) -> None:
    # tests.faulty_pipeline processes every batch for real, then raises if the batch
    # holds the marker: the model is half updated each time, and must be rewound.
    topic = unique_topic()
    marker = f"boom-{uuid.uuid4().hex[:6]}"
    poisoned = orjson.dumps(_rating(5000, item_id=marker))
    _publish(kafka_bootstrap, topic, [*_good(0), poisoned, *_good(1000)])
    service, env = _service(kafka_bootstrap, topic, tmp_path, module="tests.faulty_pipeline",
                            FRESHREC_TEST_POISON=marker)
    try:
        _wait_consumed(service, 2 * N_GOOD + 1)
        (copy,) = read_topic(kafka_bootstrap, f"{topic}.dlq", 1)
        headers = dict(copy.headers())
        assert headers["freshrec.reason"] == b"internal_error"
        assert b"PlantedBug" in headers["freshrec.detail"]
        assert headers["freshrec.source.offset"] == str(N_GOOD).encode()
        assert copy.value() == poisoned
        assert service.total("freshrec_pipeline_failures_total") >= 2  # batch, then alone
        assert service.alive()
    finally:
        assert service.terminate() == 0
    # Every other event learned exactly once: the final checkpoint's model counts them.
    offsets, _, meta = newest_checkpoint(env_storage(env), env["FRESHREC_KAFKA__GROUP_ID"],
                                         topic)
    assert offsets == {0: 2 * N_GOOD + 1}
    assert meta["pipeline"]["examples_trained"] + meta["gate"]["n"] == 2 * N_GOOD
    totals = meta["pipeline"]["extra"]["totals"]
    assert totals == {"consumed": 2 * N_GOOD + 1, "applied": 2 * N_GOOD, "rejected": 1,
                      "deduplicated": 0}


def test_a_stream_without_schema_version_is_loud(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path,
) -> None:
    topic = unique_topic()
    unversioned = []
    for i in range(N_GOOD):
        event = _rating(i)
        del event["schema_version"]
        unversioned.append(orjson.dumps(event))
    _publish(kafka_bootstrap, topic, unversioned)
    service, _ = _service(kafka_bootstrap, topic, tmp_path)
    try:
        _wait_consumed(service, N_GOOD)
        service.wait_until("the warning", lambda: "events were rejected" in service.log())
        assert service.metrics()["freshrec_events_rejected_share{}"] == 1.0
        warning = next(x for x in service.log().splitlines() if "events were rejected" in x)
        assert "WARNING" in warning and "missing_field" in warning
        assert 'add "schema_version": 1' in warning
    finally:
        assert service.terminate() == 0
