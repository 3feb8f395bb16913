"""The whole pipeline on the real stack: Kafka → freshrec run → S3 snapshot + Prometheus."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from service.demo.generator import StreamSpec, SyntheticStream
from service.demo.publish import make_producer, publish
from service.snapshots.client import load_snapshot
from tests.service_process import ServiceProcess
from tests.services import S3Endpoint

pytestmark = pytest.mark.integration

N_EVENTS = 30_000


def _prometheus_value(prometheus_url: str, query: str) -> float | None:
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=5) as r:
        body = json.load(r)
    result = body["data"]["result"]
    return float(result[0]["value"][1]) if result else None


def test_events_are_applied_published_and_scraped(
    kafka_bootstrap: str,
    s3_endpoint: S3Endpoint,
    prometheus_url: str,
    prometheus_targets: Callable[[str, str], Path],
    unique_topic: Callable[..., str],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    # 1. N events with known structure on a fresh topic.
    topic = unique_topic()
    stream = SyntheticStream(StreamSpec(n_users=400, n_items=150, seed=11))
    values = stream.encoded_events(N_EVENTS, start_ms=int(time.time() * 1000) - N_EVENTS)
    assert publish(make_producer(kafka_bootstrap), topic, values) == N_EVENTS

    # 2. The service, as a user runs it, snapshots going to the real S3 server.
    storage_url = f"s3://{s3_endpoint.bucket}/{unique_prefix.rstrip('/')}"
    service = ServiceProcess(
        {
            "FRESHREC_KAFKA__BOOTSTRAP_SERVERS": kafka_bootstrap,
            "FRESHREC_KAFKA__TOPIC": topic,
            "FRESHREC_KAFKA__GROUP_ID": f"e2e-{uuid.uuid4().hex[:8]}",
            "FRESHREC_STORAGE__URL": storage_url,
            "FRESHREC_STORAGE__ENDPOINT_URL": s3_endpoint.url,
            "FRESHREC_STORAGE__ACCESS_KEY": s3_endpoint.access_key,
            "FRESHREC_STORAGE__SECRET_KEY": s3_endpoint.secret_key,
            "FRESHREC_SNAPSHOT__EVERY_EVENTS": "10000",
            "FRESHREC_SNAPSHOT__MODEL_NAME": "e2e",
            "FRESHREC_SNAPSHOT__MIN_NEW_EVENTS": "1000",
        },
        tmp_path / "service.log",
    ).start()
    try:
        service.wait_ready()
        name = f"e2e-{uuid.uuid4().hex[:8]}"
        prometheus_targets(name, service.address)

        # 3. Every event applied (none of these is invalid or duplicated).
        service.wait_until(
            f"{N_EVENTS} events applied",
            lambda: service.total("freshrec_events_applied_total") >= N_EVENTS,
        )
        assert service.total("freshrec_events_applied_total") == N_EVENTS
        assert service.total("freshrec_events_rejected_total") == 0
        service.wait_until(
            "a snapshot published",
            lambda: service.total("freshrec_snapshots_published_total") >= 1,
        )

        # 4. Prometheus scraped the service and its query API has the counter.
        query = f'sum(freshrec_events_applied_total{{target="{name}"}})'
        service.wait_until(
            "Prometheus to scrape the applied counter",
            lambda: _prometheus_value(prometheus_url, query) == N_EVENTS,
            timeout=60,
        )
    finally:
        code = service.terminate()
    assert code == 0, service.log()

    # 5. The snapshot and its manifest are in the bucket and load into a model.
    keys = [o["Key"] for o in s3_endpoint.client().list_objects_v2(
        Bucket=s3_endpoint.bucket, Prefix=unique_prefix)["Contents"]]
    assert any(k.endswith("manifest.json") and "/models/e2e/" in k for k in keys), keys
    snapshot = load_snapshot(
        storage_url,
        model="e2e",
        endpoint_url=s3_endpoint.url,
        access_key=s3_endpoint.access_key,
        secret_key=s3_endpoint.secret_key,
    )
    users = [f"u{u}" for u in range(20)]
    items = [f"i{i}" for i in range(20)]
    predictions = np.asarray(snapshot.predict(users, items))
    assert predictions.shape == (20,)
    assert np.isfinite(predictions).all()
    assert 1.0 <= float(predictions.mean()) <= 5.0
    assert len(snapshot.recommend("u1", k=5)) == 5
