"""Write the JSON Schema of the event contract from the pydantic model.

The committed file ``schemas/event.v1.json`` is generated, never hand-edited: a unit test
fails when it no longer matches :class:`service.events.model.Event`.

Usage::

    python -m service.events.schema_export           # rewrite schemas/event.v1.json
    python -m service.events.schema_export --check   # exit 1 if the file is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.events.model import SCHEMA_VERSION, Event

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
SCHEMA_PATH = SCHEMA_DIR / f"event.v{SCHEMA_VERSION}.json"


def event_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of an event, as validated on input."""
    schema = Event.model_json_schema(mode="validation")
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"freshrec/event.v{SCHEMA_VERSION}.json",
        **schema,
        "title": f"freshrec event, schema version {SCHEMA_VERSION}",
    }


def render() -> str:
    """The file's exact text (stable key order, trailing newline)."""
    return json.dumps(event_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit with status 1 if the committed schema is out of date")
    parser.add_argument("--out", type=Path, default=SCHEMA_PATH, help="file to write")
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text(encoding="utf-8") if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run 'python -m service.events.schema_export'",
                  file=sys.stderr)
            return 1
        print(f"{args.out} is up to date")
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
