"""The snapshot manifest: what a published model is, where it came from, why it passed.

A snapshot is a bundle (see :mod:`service.storage.bundle`) of ``kind="snapshot"`` whose
``meta`` follows :class:`SnapshotMeta`. The JSON Schema of the whole manifest is committed
as ``schemas/snapshot-manifest.schema.json`` for consumers in other languages; regenerate
it with ``python -m service.snapshots.manifest --write`` after changing these models (a
test fails when the committed file drifts).

Array names inside a snapshot bundle are namespaced: ``model/<name>`` holds the learner's
``ModelState.arrays`` and ``encoding/<name>`` the id-encoding arrays (vocabularies).

Example
-------
>>> schema = snapshot_manifest_schema()
>>> schema["title"], "meta" in schema["required"]
('SnapshotManifest', True)
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from service.storage.bundle import BundleManifest

SNAPSHOT_META_VERSION = 1
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "snapshot-manifest.schema.json"
MODEL_PREFIX = "model/"
ENCODING_PREFIX = "encoding/"
VERSION_RE = re.compile(r"^[0-9]{6,}$")


class ValidationReport(BaseModel):
    """How the snapshot did on the gate's held-out window, next to the model it replaced."""

    model_config = ConfigDict(extra="forbid")

    metric: str | None = Field(
        default=None, description="rmse | log_loss | sampled_auc (None: not evaluated)."
    )
    higher_is_better: bool = Field(default=False, description="Direction of the metric.")
    candidate: float | None = Field(default=None, description="The snapshot's value.")
    champion: float | None = Field(
        default=None, description="The previously published model's value on the same window."
    )
    n_holdout: int = Field(default=0, ge=0, description="Held-out examples evaluated.")
    tolerance: float = Field(default=0.0, ge=0, description="Relative slack allowed.")
    reason: str = Field(default="unvalidated", description="The gate's decision code.")

    @field_validator("candidate", "champion", mode="before")
    @classmethod
    def _finite_or_none(cls, v: Any) -> Any:
        # JSON has no NaN; a non-finite metric is recorded as null.
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v


class SnapshotMeta(BaseModel):
    """The ``meta`` of a snapshot manifest."""

    model_config = ConfigDict(extra="forbid")

    meta_version: Literal[1] = Field(default=1, description="Version of this meta layout.")
    model_name: str = Field(description="Registry name of the model.")
    version: str = Field(pattern=r"^[0-9]{6,}$", description="This snapshot's version.")
    parent_version: str | None = Field(
        default=None, description="The version that was latest when this one was published."
    )
    model_type: str = Field(description="Learner type, for learner_from_state.")
    task: Literal["regression", "binary", "ranking"] | None = Field(
        default=None, description="What the model predicts."
    )
    hyperparameters: dict[str, Any] = Field(
        default_factory=dict, description="ModelState.config: the learner's hyperparameters."
    )
    state_format_version: int = Field(default=1, ge=1, description="ModelState.format_version.")
    counters: dict[str, int] = Field(
        default_factory=dict, description="ModelState.counters (events seen, updates ...)."
    )
    encoding: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Feature and id encoding (hash seeds and bits, vocabulary array names). "
            "'user' and 'item' entries with a 'kind' let clients map original ids to rows."
        ),
    )
    offsets: dict[str, dict[int, int]] = Field(
        default_factory=dict,
        description="Kafka topic -> partition -> next offset: the events this model reflects.",
    )
    counts: dict[str, int] = Field(
        default_factory=dict, description="Event counts (learned, held out, rejected ...)."
    )
    validation: ValidationReport = Field(
        default_factory=ValidationReport, description="The gate's evaluation."
    )


class SnapshotManifest(BundleManifest):
    """Manifest of a published snapshot: a bundle manifest with typed ``meta``."""

    kind: Literal["snapshot"] = Field(  # type: ignore[assignment]
        default="snapshot", description="Always 'snapshot'."
    )
    meta: SnapshotMeta = Field(description="What the snapshot is.")  # type: ignore[assignment]

    def model_arrays(self) -> list[str]:
        return [n[len(MODEL_PREFIX):] for n in self.files if n.startswith(MODEL_PREFIX)]

    def encoding_arrays(self) -> list[str]:
        return [n[len(ENCODING_PREFIX):] for n in self.files if n.startswith(ENCODING_PREFIX)]


def snapshot_manifest_schema() -> dict[str, Any]:
    """JSON Schema of :class:`SnapshotManifest` (what is committed under ``schemas/``)."""
    schema = SnapshotManifest.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = "freshrec/snapshot-manifest.schema.json"
    return schema


def render_schema() -> str:
    return json.dumps(snapshot_manifest_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.snapshots.manifest",
        description="Print (or --write) the JSON Schema of the snapshot manifest.",
    )
    parser.add_argument("--write", action="store_true", help=f"write it to {SCHEMA_PATH}")
    args = parser.parse_args(argv)
    text = render_schema()
    if args.write:
        SCHEMA_PATH.parent.mkdir(parents=True, exist_ok=True)
        SCHEMA_PATH.write_text(text)
        print(f"wrote {SCHEMA_PATH}")
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
