"""Topic administration: make sure the event and dead-letter topics exist; read limits."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic, ResourceType

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The Kafka broker did not answer in time."""


def ensure_topics(
    bootstrap_servers: str,
    topics: dict[str, int],
    *,
    timeout_s: float = 15.0,
) -> list[str]:
    """Create each topic in ``topics`` (name -> partitions) that does not exist yet.

    Returns the names created. Existing topics are left as they are, whatever their
    partition count: changing partitions would remap keys, which is the operator's call.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    try:
        existing = set(admin.list_topics(timeout=timeout_s).topics)
    except KafkaException as exc:
        raise BrokerUnavailable(
            f"Kafka at {bootstrap_servers} did not answer within {timeout_s:.0f}s ({exc}). "
            "Is the broker running? For the local stack: deploy/local/stack.sh up"
        ) from exc
    missing = [NewTopic(name, num_partitions=n, replication_factor=-1)
               for name, n in topics.items() if name not in existing]
    if not missing:
        return []
    created: list[str] = []
    for name, future in admin.create_topics(missing, operation_timeout=timeout_s).items():
        try:
            future.result(timeout=timeout_s)
            created.append(name)
            log.info("created topic %s", name)
        except KafkaException as exc:
            # Another instance may have created it in the meantime: that is fine.
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise
    return created


def max_record_bytes(
    bootstrap_servers: str, topic: str, *, timeout_s: float = 15.0
) -> int | None:
    """The most bytes one record may have on ``topic``, as the broker will judge it.

    That is the topic's ``max.message.bytes`` (the broker's ``message.max.bytes`` unless
    the topic overrides it). Falls back to the broker's own setting when the topic cannot
    be described (missing, or no describe rights); ``None`` when neither can be read.
    """
    admin = AdminClient({"bootstrap.servers": bootstrap_servers})
    resource = ConfigResource(ResourceType.TOPIC, topic)
    try:
        entries = admin.describe_configs([resource])[resource].result(timeout=timeout_s)
        return int(entries["max.message.bytes"].value)
    except (KafkaException, KeyError, ValueError, TypeError) as exc:
        log.info("cannot read max.message.bytes of topic %s (%s); asking the broker",
                 topic, exc)
    try:
        brokers = admin.list_topics(timeout=timeout_s).brokers
        broker = ConfigResource(ResourceType.BROKER, str(min(brokers)))
        entries = admin.describe_configs([broker])[broker].result(timeout=timeout_s)
        return int(entries["message.max.bytes"].value)
    except (KafkaException, KeyError, ValueError, TypeError) as exc:
        log.warning("cannot read the broker's message.max.bytes either (%s)", exc)
        return None
