"""HTTP endpoint settings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HttpConfig(BaseModel):
    """The HTTP server that serves /metrics, /healthz and /readyz."""

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Address to bind; 0.0.0.0 in containers.")
    port: int = Field(9108, ge=0, le=65535, description="Port (0 picks a free one).")
