"""The Grafana dashboard and the alert rules only query metrics the catalogue exports."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

from service.observability.metrics import ServiceMetrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "freshrec.json"
DATASOURCES = ROOT / "deploy" / "grafana" / "provisioning" / "datasources" / "prometheus.yml"
RULES = ROOT / "deploy" / "prometheus" / "rules" / "freshrec.yml"

_METRIC = re.compile(r"\b((?:freshrec|process|python)_[a-zA-Z0-9_]+)\b")
_SAMPLE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "info": ("_info",),
    "gauge": ("",),
}


def _exported_series() -> set[str]:
    names: set[str] = set()
    for family in ServiceMetrics().registry.collect():
        for suffix in _SAMPLE_SUFFIXES.get(family.type, ("",)):
            names.add(family.name + suffix)
    return names


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            elif key == "query" and isinstance(value, str | dict):
                yield from ([value] if isinstance(value, str) else _exprs(value))
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _exprs(item)


def _queried_metrics(exprs: list[str]) -> set[str]:
    return {m for e in exprs for m in _METRIC.findall(e)}


def test_dashboard_is_valid_json_with_unique_panels() -> None:
    dash = json.loads(DASHBOARD.read_text())
    assert dash["uid"] == "freshrec"
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for p in dash["panels"]:
        assert {"h", "w", "x", "y"} <= set(p["gridPos"]), p["title"]


def test_dashboard_queries_only_catalogued_metrics() -> None:
    dash = json.loads(DASHBOARD.read_text())
    exprs = list(_exprs(dash))
    queried = _queried_metrics(exprs)
    assert len(queried) >= 20, f"expected the dashboard to query the catalogue, got {queried}"
    unknown = queried - _exported_series()
    assert not unknown, f"dashboard queries metrics that ServiceMetrics does not export: {unknown}"


def test_dashboard_covers_each_area() -> None:
    queried = _queried_metrics(list(_exprs(json.loads(DASHBOARD.read_text()))))
    for needed in (
        "freshrec_events_consumed_total",  # throughput
        "freshrec_progressive_loss",  # loss
        "freshrec_drift_statistic",  # drift
        "freshrec_drift_detections_total",
        "freshrec_consumer_lag",  # lag
        "freshrec_last_snapshot_timestamp_seconds",  # snapshots
        "freshrec_service_state",  # state
    ):
        assert needed in queried, f"the dashboard has no panel on {needed}"


def test_dashboard_uses_the_provisioned_datasource() -> None:
    uid = yaml.safe_load(DATASOURCES.read_text())["datasources"][0]["uid"]
    dash = json.loads(DASHBOARD.read_text())
    for p in dash["panels"]:
        if p["type"] != "row":
            assert p["datasource"]["uid"] == uid, p["title"]


def test_alert_rules_query_only_catalogued_metrics() -> None:
    rules = yaml.safe_load(RULES.read_text())
    exprs = [r["expr"] for g in rules["groups"] for r in g["rules"]]
    unknown = _queried_metrics(exprs) - _exported_series()
    assert not unknown, f"alert rules query metrics that ServiceMetrics does not export: {unknown}"
