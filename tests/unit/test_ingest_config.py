"""Kafka settings: extra consumer properties reach librdkafka, managed ones are refused."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaException
from pydantic import ValidationError

from service.config import Settings
from service.ingest.config import MANAGED_CONSUMER_PROPERTIES
from service.ingest.consumer import BatchConsumer


def test_consumer_config_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRESHREC_KAFKA__CONSUMER_CONFIG", '{"fetch.wait.max.ms": 10}')
    assert Settings().kafka.consumer_config == {"fetch.wait.max.ms": 10}


@pytest.mark.parametrize("name", sorted(MANAGED_CONSUMER_PROPERTIES))
def test_managed_properties_are_refused_with_the_setting_to_use(name: str) -> None:
    with pytest.raises(ValidationError, match="freshrec manages them"):
        Settings(kafka={"consumer_config": {name: "x"}})  # type: ignore[arg-type]


def test_extra_properties_override_the_fetch_defaults() -> None:
    # librdkafka validates properties when the client is created (no broker needed):
    # an unknown property proves the dict reaches it, a known one is accepted.
    with pytest.raises(KafkaException, match=r"no\.such\.property"):
        BatchConsumer("127.0.0.1:1", "g", "t", extra={"no.such.property": 1})
    consumer = BatchConsumer("127.0.0.1:1", "g", "t", extra={"max.partition.fetch.bytes": 1024})
    consumer.close()
