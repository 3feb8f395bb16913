"""``--settings``: freshrec settings for a quality run, without touching code or the shell.

Each ``--settings`` value is either a JSON object of nested settings
(``'{"learner": {"n_factors": 10}}'``) or one ``NAME=VALUE`` assignment, ``NAME`` written
as the environment variable (``FRESHREC_LEARNER__N_FACTORS``) or dotted
(``learner.n_factors``); ``VALUE`` is read as JSON when it parses (numbers, booleans,
lists), as a string otherwise. Later values win.

The run's settings are freshrec's defaults, then the data kind's model (FTRL for clicks,
BPR for implicit logs; ratings keep the default biased MF), then these overrides.
``FRESHREC_*`` variables in the environment are ignored, so a table can be reproduced
from its command line alone.

Example
-------
>>> o = parse_overrides(['{"learner": {"n_factors": 8}}', "FRESHREC_DRIFT__ENABLED=false",
...                      "preprocess.holdout_fraction=0"])
>>> o
{'learner': {'n_factors': 8}, 'drift': {'enabled': False}, 'preprocess': {'holdout_fraction': 0}}
>>> s = bench_settings("clicks", o)
>>> s.learner.model, s.preprocess.task, s.learner.n_factors, s.drift.enabled
('ftrl', 'binary', 8, False)
"""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource

from service.config import Settings

# What each data kind trains when --settings does not say otherwise.
KIND_DEFAULTS: dict[str, dict[str, Any]] = {
    "ratings": {"preprocess": {"task": "regression"}},
    "clicks": {"learner": {"model": "ftrl"}, "preprocess": {"task": "binary"}},
    "implicit": {"learner": {"model": "bpr"}, "preprocess": {"task": "binary"}},
}


class BenchSettings(Settings):
    """freshrec's :class:`~service.config.Settings`, from arguments only (no environment,
    no config file): a benchmark run is what its command line says."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings,)


def _value(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` laid over it, nested dicts merged key by key."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_overrides(values: Sequence[str]) -> dict[str, Any]:
    """Nested settings from ``--settings`` values (see the module docstring)."""
    out: dict[str, Any] = {}
    for text in values:
        text = text.strip()
        if text.startswith("{"):
            try:
                extra = orjson.loads(text)
            except orjson.JSONDecodeError as exc:
                raise ValueError(f"--settings {text!r} is not valid JSON ({exc})") from exc
            if not isinstance(extra, dict):
                raise ValueError(f"--settings {text!r} must be a JSON object")
            out = merge(out, extra)
            continue
        name, sep, value = text.partition("=")
        if not sep or not name:
            raise ValueError(f"--settings {text!r} must be NAME=VALUE (e.g. "
                             "FRESHREC_LEARNER__N_FACTORS=10 or learner.n_factors=10) or a "
                             "JSON object")
        if name.upper().startswith("FRESHREC_"):
            path = name[len("FRESHREC_"):].lower().split("__")
        else:
            path = name.lower().split(".")
        nested: dict[str, Any] = {path[-1]: _value(value)}
        for part in reversed(path[:-1]):
            nested = {part: nested}
        out = merge(out, nested)
    return out


def check_names(overrides: dict[str, Any], model: type[BaseModel] = Settings,
                prefix: str = "") -> None:
    """Refuse a setting name that does not exist, suggesting the closest one.

    The nested sections (``learner``, ``drift.adwin``...) ignore unknown keys, so a typo
    such as ``learner.n_factor`` would otherwise run with the default, silently.

    >>> check_names({"learner": {"n_factor": 3}})
    Traceback (most recent call last):
    ...
    ValueError: --settings: no setting learner.n_factor (did you mean learner.n_factors?)
    """
    for key, value in overrides.items():
        field = model.model_fields.get(key)
        if field is None:
            close = difflib.get_close_matches(key, list(model.model_fields), n=1)
            hint = f" (did you mean {prefix}{close[0]}?)" if close else (
                f"; {prefix.rstrip('.') or 'the top level'} has "
                f"{', '.join(model.model_fields)}")
            raise ValueError(f"--settings: no setting {prefix}{key}{hint}")
        sub = field.annotation
        if isinstance(value, dict) and isinstance(sub, type) and issubclass(sub, BaseModel):
            check_names(value, sub, f"{prefix}{key}.")


def bench_settings(kind: str, overrides: dict[str, Any] | None = None,
                   extra: dict[str, Any] | None = None) -> Settings:
    """The settings of a run on data of ``kind``: defaults, the kind's model, overrides,
    then ``extra`` (what a contender fixes, e.g. its update strategy)."""
    check_names(overrides or {})
    merged = merge(merge(KIND_DEFAULTS[kind], overrides or {}), extra or {})
    try:
        return BenchSettings(**merged)
    except ValidationError as exc:
        raise ValueError(f"--settings do not make valid freshrec settings for {kind} data:\n"
                         f"{exc}") from exc
