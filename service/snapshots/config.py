"""Snapshot publication settings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class SnapshotConfig(BaseModel):
    """When candidates are published, and how they are gated."""

    every_events: int = Field(
        50_000, ge=1, description="Consider publishing after this many applied events."
    )
    every_seconds: float = Field(
        30.0, gt=0, description="... or after this many seconds, whichever comes first."
    )
    model_name: str = Field("default", description="Name of the model in the registry.")
    keep: int = Field(10, ge=1, description="Published versions kept (pinned ones are extra).")
