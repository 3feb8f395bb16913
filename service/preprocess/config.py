"""Preprocessing settings."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PreprocessConfig(BaseModel):
    """Dedup, id encoding and label settings."""

    dedup_window_events: int = Field(
        1_000_000, ge=0, description="Most event ids remembered for dedup (0 disables)."
    )
    user_capacity: int = Field(1 << 20, ge=2, description="Rows in the user table.")
    item_capacity: int = Field(1 << 18, ge=2, description="Rows in the item table.")
