"""Leader election through a Kafka consumer group: one active instance, hot standbys.

Every instance joins the consumer group ``<group_id>.lease`` on a one-partition topic
``<topic>.lease``. Kafka's group protocol gives that partition to exactly one member: the
holder is the active instance and consumes every partition of the event topic; the others
are standbys. When the active instance dies (or stops polling for longer than
``max.poll.interval.ms``), the group coordinator hands the lease partition to a standby
within the session timeout, and the standby takes over from the newest checkpoint.

Why a lease instead of subscribing to the event topic directly: freshrec keeps one model
per group, and that model must see every partition; a plain subscription would split the
partitions between instances and train two diverging models. The lease keeps the event
consumer an assign()-mode consumer, whose offsets can still be committed under the
service's group id for lag monitoring.

Limits: a paused active instance (a long GC stop, a frozen VM) may not notice at once that
it lost the lease. Checkpoints are therefore numbered by leader epoch first (see
``service.checkpoint.manager``), so a late write by a former leader never wins over the
new leader's checkpoints, and every checkpoint is self-consistent (state + offsets).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

log = logging.getLogger(__name__)

LEASE_PARTITION = 0


def lease_topic(topic: str) -> str:
    return f"{topic}.lease"


def lease_group(group_id: str) -> str:
    return f"{group_id}.lease"


class LeaderLease:
    """Holds (or waits for) the lease of one service group.

    Parameters
    ----------
    bootstrap_servers, group_id, topic
        The service's broker, group and event topic; the lease lives beside them.
    on_acquired
        Called (inside :meth:`poll`) when this instance becomes the active one.
    on_released
        Called with ``lost=False`` before the lease is handed over in an orderly
        rebalance, and with ``lost=True`` when it was taken away (session expired).
    session_timeout_ms
        How long the group waits for a silent instance before moving the lease: this
        bounds the standby's takeover time.
    instance_id
        Static group membership: a restarted instance with the same id takes its lease
        back at once, without waiting for the session timeout.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        group_id: str,
        topic: str,
        *,
        on_acquired: Callable[[], None],
        on_released: Callable[[bool], None],
        session_timeout_ms: int = 6000,
        instance_id: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        self.topic = lease_topic(topic)
        self._on_acquired = on_acquired
        self._on_released = on_released
        self.held = False
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            "group.id": lease_group(group_id),
            "enable.auto.commit": False,
            "session.timeout.ms": session_timeout_ms,
            "heartbeat.interval.ms": max(500, session_timeout_ms // 6),
            # The main loop polls the lease between batches; a batch, a checkpoint copy or
            # a slow snapshot gate must never take this long.
            "max.poll.interval.ms": 60_000,
            # Sticky: a standby joining the group must not take the lease from the active
            # instance (an eager range assignment could hand it to the newcomer).
            "partition.assignment.strategy": "cooperative-sticky",
        }
        if instance_id:
            conf["group.instance.id"] = instance_id
        conf.update(extra or {})
        self._consumer = Consumer(conf, logger=log)
        self._consumer.subscribe(
            [self.topic], on_assign=self._assigned, on_revoke=self._revoked,
            on_lost=self._lost,
        )

    def _assigned(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == LEASE_PARTITION for tp in partitions) and not self.held:
            self.held = True
            log.info("acquired the lease: this instance is now active")
            self._on_acquired()

    def _revoked(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if any(tp.partition == LEASE_PARTITION for tp in partitions) and self.held:
            self.held = False
            log.info("handing the lease over (rebalance)")
            self._on_released(False)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self.held:
            self.held = False
            log.warning("lost the lease (session expired): becoming a standby")
            self._on_released(True)

    def poll(self) -> None:
        """Serve the group protocol; callbacks run here, on the caller's thread."""
        # Nobody produces to the lease topic; poll only drives heartbeats and rebalances.
        self._consumer.poll(0)

    def close(self) -> None:
        """Leave the group at once, so a standby takes over without waiting a timeout."""
        self._consumer.close()
