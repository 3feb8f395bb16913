"""Topic administration: make sure the event and dead-letter topics exist."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

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
