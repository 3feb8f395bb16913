"""docs/metrics.md documents exactly the metrics ServiceMetrics exports, in both directions."""

from __future__ import annotations

import re
from pathlib import Path

from prometheus_client.metrics import MetricWrapperBase

from service.observability.metrics import ServiceMetrics

DOC = Path(__file__).resolve().parents[2] / "docs" / "metrics.md"

_SUFFIX = {"counter": "_total", "info": "_info"}


def _doc_rows() -> dict[str, tuple[str, set[str]]]:
    """Exported name -> (type, label names) from the catalogue table."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 5 or not cells[0].startswith("`freshrec_"):
            continue
        name = cells[0].strip("`")
        assert name not in rows, f"{name} is listed twice in {DOC.name}"
        # "outcome (`acked`, `failed`)" -> "outcome": values in parentheses are documentation.
        labels = {
            part.strip()
            for part in re.sub(r"\([^)]*\)", "", cells[2]).split(",")
            if part.strip()
        }
        rows[name] = (cells[1], labels)
    return rows


def _registry_rows(metrics: ServiceMetrics) -> dict[str, tuple[str, set[str]]]:
    """Exported name -> (type, label names) from the live registry."""
    rows: dict[str, tuple[str, set[str]]] = {}
    for family in metrics.registry.collect():
        if not family.name.startswith("freshrec_"):
            continue
        labels: set[str] = set()
        for sample in family.samples:
            labels |= set(sample.labels) - {"le"}
        rows[family.name + _SUFFIX.get(family.type, "")] = (family.type, labels)
    # Families with labels have no samples until first use: take their label names from
    # the metric objects themselves.
    for attr in vars(metrics).values():
        if isinstance(attr, MetricWrapperBase) and attr._labelnames:
            for family in attr.collect():
                exported = family.name + _SUFFIX.get(family.type, "")
                rows[exported] = (family.type, set(attr._labelnames))
    return rows


def test_every_exported_metric_is_documented_and_vice_versa() -> None:
    documented = _doc_rows()
    exported = _registry_rows(ServiceMetrics())
    missing_in_doc = sorted(set(exported) - set(documented))
    missing_in_code = sorted(set(documented) - set(exported))
    assert not missing_in_doc, f"add these metrics to {DOC}: {missing_in_doc}"
    assert not missing_in_code, f"{DOC} lists metrics the code does not export: {missing_in_code}"


def test_documented_types_and_labels_match_the_code() -> None:
    documented = _doc_rows()
    for name, (mtype, labels) in _registry_rows(ServiceMetrics()).items():
        doc_type, doc_labels = documented[name]
        assert doc_type == mtype, f"{name}: documented as {doc_type}, exported as {mtype}"
        assert doc_labels == labels, f"{name}: documented labels {doc_labels}, code {labels}"


def test_the_table_parser_sees_the_whole_catalogue() -> None:
    # Guards against a table format change that would make both sets empty and the
    # comparison above pass vacuously.
    assert len(_doc_rows()) >= 25
