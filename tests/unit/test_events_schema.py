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
    "map_too_large", "control_character",
}
# <reason>.json or <reason>.<variant>.json
SCHEMA_LEVEL_FILES = sorted(p for p in (EXAMPLES / "invalid").glob("*.json")
                            if p.name.split(".")[0] in SCHEMA_LEVEL)


def test_every_schema_level_reason_has_an_example() -> None:
    assert {p.name.split(".")[0] for p in SCHEMA_LEVEL_FILES} == SCHEMA_LEVEL


@pytest.mark.parametrize("path", SCHEMA_LEVEL_FILES, ids=lambda p: p.stem)
def test_schema_level_invalid_examples_fail_the_schema_and_the_model(path: Path) -> None:
    raw = path.read_bytes()
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(json.loads(raw), schema_export.event_schema())
    with pytest.raises(ValueError):
        Event.model_validate_json(raw)


def test_the_raw_del_example_holds_a_raw_del() -> None:
    raw = (EXAMPLES / "invalid" / "control_character.raw_del.json").read_bytes()
    assert b"\x7f" in raw and b"\\u007f" not in raw.lower()


GOOD = {"schema_version": 1, "event_id": "e-1", "event_type": "click", "user_id": "u42",
        "item_id": "i7", "timestamp": "2026-11-27T18:00:00Z",
        "context": {"device": "ios"}, "user_features": {"q": "a\tb"}}


def _with(where: str, text: str) -> dict[str, object]:
    if where in ("context", "user_features", "item_features"):
        return {**GOOD, where: {text: 1}}
    if where == "value":
        return {**GOOD, "item_features": {"query": text}}
    return {**GOOD, where: text}


@pytest.mark.parametrize("where", ["event_id", "user_id", "item_id", "event_type", "context",
                                   "user_features", "item_features", "value"])
@pytest.mark.parametrize("text", ["u\x00x", "\x1f", "i7\n", "\tu", "x\x7f", "u\x80",
                                  "\u00e9\u2028", "click"])
def test_schema_model_and_decoder_agree_on_control_characters(where: str, text: str) -> None:
    # A trailing newline too: the schema says "not": {"pattern": ...} because Python's re
    # (and so jsonschema) matches "$" before a final newline.
    event = _with(where, text)
    control = any(c < " " or c == "\x7f" for c in text) and where != "value"
    valid = text == "click" if where == "event_type" else not control
    schema_ok = jsonschema.Draft202012Validator(schema_export.event_schema()).is_valid(event)
    try:
        Event.model_validate(event)
        model_ok = True
    except ValueError:
        model_ok = False
    decoded = decode_batch([json.dumps(event).encode()], NOW)  # type: ignore[arg-type]
    assert (schema_ok, model_ok, not decoded.rejections) == (valid, valid, valid)
    if control:
        assert decoded.rejections[0].reason == "control_character"


def test_fast_path_and_model_have_the_same_fields() -> None:
    fast = set(EVENT_ADAPTER.json_schema()["properties"])
    assert fast == set(Event.model_fields)
