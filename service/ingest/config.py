"""Kafka settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

# Consumer properties freshrec's exactly-once protocol depends on: not overridable.
MANAGED_CONSUMER_PROPERTIES = frozenset({
    "bootstrap.servers", "group.id", "enable.auto.commit", "enable.auto.offset.store",
    "auto.offset.reset", "error_cb",
})


class KafkaConfig(BaseModel):
    """Where events come from and where rejected ones go."""

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

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
    dead_letter_duplicates: bool = Field(
        False,
        description="Also copy duplicates (replays of an event id already applied) to the "
        "dead-letter topic; they are counted in freshrec_events_deduplicated_total either "
        "way.",
    )
    dead_letter_timeout_s: float = Field(
        60.0, gt=0,
        description="How long dead-letter copies may keep failing while the broker answers "
        "before they are given up (logged with a reference to the original) (seconds).",
    )
    topic_partitions: int = Field(1, ge=1, description="Partitions when creating the topic.")
    batch_size: int = Field(
        5000, ge=1, le=1_000_000, description="Most messages taken from the consumer at once."
    )
    poll_timeout_s: float = Field(
        0.05, gt=0,
        description="How long one poll waits for a first message when none is waiting "
        "(seconds); messages already fetched are taken at once.",
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

    consumer_config: dict[str, str | int | float | bool] = Field(
        default_factory=dict,
        description="Extra librdkafka properties of the event consumer, e.g. "
        '{"fetch.wait.max.ms": 10}; they override freshrec\'s fetch defaults (JSON in the '
        "environment variable).",
    )

    @field_validator("consumer_config")
    @classmethod
    def _not_managed(
        cls, value: dict[str, str | int | float | bool]
    ) -> dict[str, str | int | float | bool]:
        managed = sorted(MANAGED_CONSUMER_PROPERTIES & value.keys())
        if managed:
            raise ValueError(
                f"consumer_config may not set {managed}: freshrec manages them for "
                "exactly-once processing (use bootstrap_servers, group_id and "
                "auto_offset_reset instead)"
            )
        return value

    def dead_letter_topic(self) -> str:
        return self.dlq_topic or f"{self.topic}.dlq"
