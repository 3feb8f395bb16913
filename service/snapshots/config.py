"""Snapshot publication settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class SnapshotConfig(BaseModel):
    """When candidates are published, and how they are gated."""

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    every_events: int = Field(
        default=500_000, ge=1, description="Consider publishing after this many applied events."
    )
    every_seconds: float = Field(
        default=30.0, gt=0, description="... or after this many seconds, whichever comes first."
    )
    model_name: str = Field(
        default="default",
        pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$",
        description="Name of the model in the registry (letters, digits, '_', '.', '-').",
    )
    keep: int = Field(
        default=10, ge=1, description="Published versions kept (pinned ones are extra)."
    )
    holdout_window: int = Field(
        default=20_000,
        ge=1,
        description="Most recent held-out examples the gate evaluates candidates on.",
    )
    min_holdout: int = Field(
        default=200,
        ge=1,
        description="Held-out examples (positives for ranking) needed before any publication.",
    )
    min_new_events: int = Field(
        default=1_000,
        ge=0,
        description="Events learned since the last publication before a new one is considered.",
    )
    tolerance: float = Field(
        default=0.01,
        ge=0,
        description=(
            "Relative slack: a candidate whose holdout metric is worse than the published "
            "model's by more than this fraction (0.01 = 1%) is held back."
        ),
    )
    ranking_negatives: int = Field(
        default=50,
        ge=1,
        le=10_000,
        description="Sampled negative items per held-out positive for the ranking metric.",
    )
    gate_seed: int = Field(
        default=0, description="Seed of the ranking metric's negative sampling (deterministic)."
    )
