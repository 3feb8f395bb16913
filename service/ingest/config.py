"""Kafka settings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class KafkaConfig(BaseModel):
    """Where events come from and where rejected ones go."""

    bootstrap_servers: str = Field(
        "127.0.0.1:19092", description="Kafka bootstrap servers (the local stack's by default)."
    )
    topic: str = Field("freshrec.events", description="Topic of behaviour events.")
    group_id: str = Field("freshrec", description="Consumer group of the service.")
    dlq_topic: str | None = Field(
        None, description="Dead-letter topic; defaults to '<topic>.dlq'."
    )
    create_topics: bool = Field(
        True, description="Create the event and dead-letter topics if they are missing."
    )
    topic_partitions: int = Field(1, ge=1, description="Partitions when creating the topic.")
    batch_size: int = Field(
        5000, ge=1, le=1_000_000, description="Most messages taken from the consumer at once."
    )
    poll_timeout_s: float = Field(
        0.05, gt=0, description="How long one poll waits for messages (seconds)."
    )
    auto_offset_reset: str = Field(
        "earliest",
        pattern="^(earliest|latest)$",
        description="Where to start with no checkpoint and no committed offset.",
    )

    session_timeout_ms: int = Field(
        6000, ge=1000, le=300_000,
        description="How long a silent active instance keeps the lease before a standby "
        "takes over (milliseconds).",
    )

    instance_id: str | None = Field(
        None,
        description="Stable identity of this instance (e.g. the pod name): with it, a "
        "restarted instance takes its lease back at once instead of after the session "
        "timeout (Kafka static membership).",
    )

    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"
