"""Checkpoint settings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class CheckpointConfig(BaseModel):
    """How often the full state is checkpointed for exactly-once recovery."""

    every_events: int = Field(20_000, ge=1, description="Checkpoint after this many events.")
    every_seconds: float = Field(10.0, gt=0, description="... or after this many seconds.")
    keep: int = Field(3, ge=1, description="Complete checkpoints kept.")
