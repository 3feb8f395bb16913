"""Checkpoint settings."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class CheckpointConfig(BaseModel):
    """How often the full state is checkpointed for exactly-once recovery.

    A checkpoint bounds how much is consumed again after a crash (never what is applied:
    that is exactly once either way), so the defaults favour time over event counts:
    a busy stream is not slowed down by checkpointing every few thousand events.
    """

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    every_events: int = Field(default=1_000_000, ge=1,
                              description="Checkpoint after this many consumed events.")
    every_seconds: float = Field(default=10.0, gt=0,
                                 description="... or after this many seconds.")
    keep: int = Field(default=3, ge=1, description="Checkpoints kept (older ones pruned).")
    max_uncheckpointed_events: int = Field(
        default=5_000_000, ge=1,
        description="Pause consumption when this many consumed events are not yet in a "
        "durable checkpoint (the object store is down or slow), so memory stays bounded.",
    )
    shutdown_timeout_s: float = Field(
        default=60.0, gt=0,
        description="On SIGTERM, how long the final checkpoint may take before exiting "
        "without it (nothing is lost: the events are consumed again after restart).",
    )
    on_missing: Literal["fail", "committed", "earliest"] = Field(
        default="fail",
        description="What to do when the storage holds no checkpoint but the consumer "
        "group has committed offsets (a new or mistyped storage.url, or lost "
        "checkpoints): 'fail' refuses to start and says what it found; 'committed' "
        "starts a fresh model from the committed offsets, skipping every event consumed "
        "before (logged as a WARNING); 'earliest' starts a fresh model from the oldest "
        "offset still in each partition (WARNING).",
    )
    standby_refresh_s: float = Field(
        default=5.0, gt=0,
        description="How often a standby loads the newest checkpoint, to take over fast.",
    )
