"""docker-compose.yml cannot run here (no Docker engine), so check what can go wrong in it:
settings names that the service would reject and ports that do not line up."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from service.config import Settings, env_var_names
from service.observability.config import HttpConfig

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _freshrec_env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    return {k: str(v) for k, v in env.items() if k.startswith("FRESHREC_")}


def test_every_freshrec_variable_is_a_real_setting(compose: dict[str, Any]) -> None:
    known = env_var_names()
    for name, service in compose["services"].items():
        for var in _freshrec_env(service):
            assert var in known, f"{name}: {var} is not a freshrec setting"


def test_service_environment_parses_into_settings(
    compose: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = _freshrec_env(compose["services"]["freshrec"])
    for var, value in env.items():
        monkeypatch.setenv(var, value)
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert settings.storage.url.startswith("s3://")


def test_ports_agree(compose: dict[str, Any]) -> None:
    service = compose["services"]["freshrec"]
    port = int(_freshrec_env(service)["FRESHREC_HTTP__PORT"])
    published = {int(p.split(":")[1]) for p in service["ports"]}
    assert port in published, "the metrics port must be published"
    assert port == HttpConfig().port, "compose should use the service's default port"
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    assert f"FRESHREC_HTTP__PORT={port}" in dockerfile
    assert f"EXPOSE {port}" in dockerfile
    prometheus = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    targets = [
        t
        for job in prometheus["scrape_configs"]
        for sc in job.get("static_configs", [])
        for t in sc["targets"]
    ]
    assert f"freshrec:{port}" in targets, "Prometheus must scrape the service's port"


def test_s3_endpoint_matches_the_store(compose: dict[str, Any]) -> None:
    env = _freshrec_env(compose["services"]["freshrec"])
    command = compose["services"]["s3"]["command"]
    s3_port = command[command.index("--port") + 1].rsplit(":", 1)[1]
    assert env["FRESHREC_STORAGE__ENDPOINT_URL"] == f"http://s3:{s3_port}"
