"""Object storage settings."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class StorageConfig(BaseModel):
    """Where snapshots and checkpoints are written.

    ``url`` is either ``file:///abs/path`` / ``file://relative/path`` (a local folder, the
    default, needs nothing else) or ``s3://bucket/prefix`` with ``endpoint_url`` and
    credentials for an S3-compatible server.
    """

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        default="file://./freshrec-data", description="file:// folder or s3://bucket/prefix."
    )
    endpoint_url: str | None = Field(
        default=None,
        description="S3 endpoint, e.g. http://127.0.0.1:19000 (None: AWS defaults).",
    )
    access_key: str | None = Field(default=None, description="S3 access key id.")
    secret_key: SecretStr | None = Field(default=None, description="S3 secret access key.")
    region: str = Field(default="us-east-1", description="S3 region name.")
    retries: int = Field(
        default=5, ge=0, description="Retries with exponential backoff per write."
    )
    backoff_s: float = Field(
        default=0.2,
        ge=0,
        description="Upper bound of the first retry sleep; doubles per retry (jittered).",
    )
    backoff_max_s: float = Field(
        default=5.0, ge=0, description="Longest sleep between two retries."
    )
    connect_timeout_s: float = Field(
        default=3.0, gt=0, description="S3 connect timeout: a server that is down fails fast."
    )
    read_timeout_s: float = Field(
        default=60.0, gt=0, description="S3 read timeout per request."
    )
    io_threads: int = Field(
        default=4, ge=1, le=64, description="Files of one bundle read or written concurrently."
    )

class _StorageEnv(StorageConfig, BaseSettings):
    # Reads only FRESHREC_STORAGE__* so that the serving client need not load (or be
    # broken by) the settings of stages it does not run.
    model_config = SettingsConfigDict(env_prefix="FRESHREC_STORAGE__", extra="ignore")


def storage_config_from_env(**overrides: Any) -> StorageConfig:
    """A :class:`StorageConfig` from ``FRESHREC_STORAGE__*`` variables, ``overrides`` winning.

    ``None`` overrides are ignored, so callers can pass optional arguments straight through.

    Example
    -------
    >>> import os
    >>> os.environ["FRESHREC_STORAGE__REGION"] = "eu-west-1"
    >>> storage_config_from_env(url="s3://b/p").region
    'eu-west-1'
    >>> del os.environ["FRESHREC_STORAGE__REGION"]
    """
    given = {k: v for k, v in overrides.items() if v is not None}
    return StorageConfig.model_validate(dict(_StorageEnv(**given)))
