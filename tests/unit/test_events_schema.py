"""The committed JSON Schema matches the pydantic model, and the examples agree with both."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest

from service.events import schema_export
from service.events.decode import decode_batch
from service.events.model import EVENT_ADAPTER, Event
from service.events.timestamps import parse_rfc3339_one

EXAMPLES = Path(__file__).resolve().parents[2] / "schemas" / "examples"
NOW = parse_rfc3339_one("2026-11-27T18:00:00Z")


def test_committed_schema_is_generated_from_the_model() -> None:
    committed = schema_export.SCHEMA_PATH.read_text(encoding="utf-8")
    assert committed == schema_export.render(), (
        "schemas/event.v1.json is stale: run 'python -m service.events.schema_export'"
    )


def test_check_mode_reports_a_stale_file(tmp_path: Path) -> None:
    stale = tmp_path / "event.v1.json"
    stale.write_text("{}\n", encoding="utf-8")
    assert schema_export.main(["--check", "--out", str(stale)]) == 1
    assert schema_export.main(["--out", str(stale)]) == 0
    assert schema_export.main(["--check", "--out", str(stale)]) == 0


def test_schema_is_valid_json_schema() -> None:
    jsonschema.Draft202012Validator.check_schema(schema_export.event_schema())


@pytest.mark.parametrize("path", sorted((EXAMPLES / "valid").glob("*.json")),
                         ids=lambda p: p.stem)
def test_valid_examples_pass_schema_model_and_decoder(path: Path) -> None:
    raw = path.read_bytes()
    jsonschema.validate(json.loads(raw), schema_export.event_schema())
    event = Event.model_validate_json(raw)
    decoded = decode_batch([raw], NOW)  # type: ignore[arg-type]
    assert decoded.rejections == []
    assert decoded.user_id == [event.user_id] and decoded.item_id == [event.item_id]
    assert decoded.ts_ms.tolist() == [event.timestamp_ms]


# Reasons the schema can state (the others need the clock or configuration).
SCHEMA_LEVEL = {
    "not_object", "missing_field", "wrong_type", "unknown_event_type",
    "unknown_schema_version", "absurd_number", "empty_id", "id_too_long", "field_too_long",
    "map_too_large",
}


@pytest.mark.parametrize("name", sorted(SCHEMA_LEVEL))
def test_schema_level_invalid_examples_fail_the_schema_and_the_model(name: str) -> None:
    raw = (EXAMPLES / "invalid" / f"{name}.json").read_bytes()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(raw), schema_export.event_schema())
    with pytest.raises(ValueError):
        Event.model_validate_json(raw)


def test_fast_path_and_model_have_the_same_fields() -> None:
    fast = set(EVENT_ADAPTER.json_schema()["properties"])
    assert fast == set(Event.model_fields)
