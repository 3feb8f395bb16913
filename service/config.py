"""Service settings, from ``FRESHREC_*`` environment variables and an optional TOML file.

Every setting has a documented default that works with the local stack
(``deploy/local/stack.sh up``). Nested settings use a double underscore in environment
variables: ``FRESHREC_KAFKA__TOPIC=ratings`` sets ``kafka.topic``. A config file named by
``FRESHREC_CONFIG`` (or ``freshrec run --config``) is read first; environment variables
override it.

Example
-------
>>> import os
>>> os.environ["FRESHREC_KAFKA__TOPIC"] = "ratings"
>>> Settings().kafka.topic
'ratings'
>>> del os.environ["FRESHREC_KAFKA__TOPIC"]
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, ValidationError, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from service.checkpoint.config import CheckpointConfig
from service.drift.config import DriftConfig
from service.ingest.config import KafkaConfig
from service.learners.config import LearnerConfig
from service.observability.config import HttpConfig
from service.preprocess.config import PreprocessConfig
from service.scaleout.config import ScaleConfig
from service.snapshots.config import SnapshotConfig
from service.storage.config import StorageConfig

CONFIG_FILE_ENV = "FRESHREC_CONFIG"


class Settings(BaseSettings):
    """All of freshrec's settings."""

    model_config = SettingsConfigDict(
        env_prefix="FRESHREC_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    kafka: KafkaConfig = Field(default_factory=KafkaConfig)  # type: ignore[arg-type]
    storage: StorageConfig = Field(default_factory=StorageConfig)  # type: ignore[arg-type]
    learner: LearnerConfig = Field(default_factory=LearnerConfig)  # type: ignore[arg-type]
    preprocess: PreprocessConfig = Field(default_factory=PreprocessConfig)  # type: ignore[arg-type]
    snapshot: SnapshotConfig = Field(default_factory=SnapshotConfig)  # type: ignore[arg-type]
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig)  # type: ignore[arg-type]
    http: HttpConfig = Field(default_factory=HttpConfig)  # type: ignore[arg-type]
    drift: DriftConfig = Field(default_factory=DriftConfig)  # type: ignore[arg-type]
    scale: ScaleConfig = Field(default_factory=ScaleConfig)  # type: ignore[arg-type]
    log_level: str = Field("INFO", description="Python logging level.")

    @model_validator(mode="after")
    def _tasks_agree(self) -> Settings:
        """The labels preprocessing makes must be the ones the model learns from.

        Models that only do one task pull the preprocessing task along when it was left at
        its default; an explicit contradiction is an error that says what to change.
        """
        model = self.learner.model
        implied = {"biased_mf": "regression", "ftrl": "binary", "bpr": "binary"}.get(model)
        if implied is None and self.learner.task != "auto":
            implied = self.learner.task  # fm / sklearn with an explicit task
        pre = self.preprocess
        if implied is not None and pre.task != implied:
            if "task" in pre.model_fields_set:
                raise ValueError(
                    f"learner.model={model!r} learns from {implied} labels, but "
                    f"preprocess.task={pre.task!r}: set FRESHREC_PREPROCESS__TASK={implied} "
                    "or choose a model for that task (fm and sklearn do both)"
                )
            self.preprocess = pre.model_copy(update={"task": implied})
        if model in ("fm", "sklearn") and self.learner.task == "auto":
            self.learner = self.learner.model_copy(update={"task": self.preprocess.task})
        if self.preprocess.learn_positives_without_impression is None:
            # Implicit feedback is positives only (BPR samples its negatives); a click
            # model must not learn positives by a shape no impression has.
            self.preprocess = self.preprocess.model_copy(
                update={"learn_positives_without_impression": model == "bpr"})
        if self.scale.shards > 1 and self.learner.shadows is None:
            # Shadow learners are not sharded: a sharded run's default is the model alone
            # (an explicit shadows > 0 is refused when the pipeline starts, with the fix).
            self.learner = self.learner.model_copy(update={"shadows": 0})
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        path = os.environ.get(CONFIG_FILE_ENV)
        if path:
            if not Path(path).is_file():
                raise FileNotFoundError(
                    f"{CONFIG_FILE_ENV}={path!r} does not name a file; "
                    "point it at a TOML config file or unset it."
                )
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)


class SettingsError(ValueError):
    """The settings are invalid: the message names each variable and what is wrong."""


def load_settings(config_file: str | None = None, **overrides: Any) -> Settings:
    """Settings from the environment, ``config_file`` (TOML) and keyword overrides.

    Raises :class:`SettingsError` naming every invalid or unknown setting by its
    environment variable (a misspelt one is refused, not silently ignored).
    """
    if config_file is not None:
        os.environ[CONFIG_FILE_ENV] = config_file
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        lines = []
        for error in exc.errors():
            var = "FRESHREC_" + "__".join(str(part).upper() for part in error["loc"])
            what = ("no such setting" if error["type"] == "extra_forbidden"
                    else error["msg"])
            lines.append(f"  {var}: {what} (got {error.get('input')!r:.80})")
        raise SettingsError(
            "invalid settings:\n" + "\n".join(lines)
            + "\n`freshrec settings` lists every setting with its default") from None


def settings_rows(
    model: type[BaseModel] = Settings, prefix: str = "FRESHREC_"
) -> list[tuple[str, str, str]]:
    """``(environment variable, default, description)`` for every leaf setting."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows.extend(settings_rows(annotation, f"{prefix}{name.upper()}__"))
            continue
        default = field.get_default(call_default_factory=True)
        rows.append((f"{prefix}{name.upper()}", repr(default) if default is not None else "—",
                     field.description or ""))
    return rows


def env_var_names() -> set[str]:
    """Every environment variable name that maps to a setting (for docs and compose checks)."""
    return {var for var, _, _ in settings_rows()}
