"""Snapshots through the running service (issue 6), stored on the stack's S3 server.

``freshrec run`` learns a generated ratings stream sent in chunks of exactly
``FRESHREC_SNAPSHOT__EVERY_EVENTS`` events, and each chunk is waited for until the service
has applied it *and* its promotion gate has decided on the candidate. So candidate ``k``
is the model after exactly ``k`` chunks, whatever the load, and every gate decision is the
same on every run.

The scenario: a good stream publishes versions; a burst of poisoned ratings (the same
users and items with the opposite opinion) makes the candidate worse on the held-out
window, and the gate holds it back; ``freshrec snapshots rollback`` moves ``latest`` to an
earlier version while the service runs, and the service, learning on from its own state,
gates its next candidate against that version. Separately, a flipped byte in a published
array file makes ``load_snapshot`` refuse the version.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from service.demo.generator import StreamSpec
from service.snapshots.client import LoadedSnapshot, load_snapshot
from service.snapshots.manifest import SnapshotManifest
from service.snapshots.registry import SnapshotRegistry
from service.storage import open_store
from service.storage.bundle import BundleIntegrityError
from service.storage.config import StorageConfig
from tests.service_process import REPO_ROOT, ServiceProcess
from tests.services import S3Endpoint
from tests.streams import (
    ChunkedStream,
    Transform,
    inverted_ratings,
    parse_key,
    sample,
    samples,
    service_env,
    wait_applied,
)

pytestmark = pytest.mark.integration

MODEL = "svc"
CHUNK = 2_500  # = FRESHREC_SNAPSHOT__EVERY_EVENTS: one gate decision per chunk
WORLD = StreamSpec(n_users=400, n_items=150)


def storage_env(s3: S3Endpoint, prefix: str) -> dict[str, str]:
    return {
        "FRESHREC_STORAGE__URL": f"s3://{s3.bucket}/{prefix.rstrip('/')}",
        "FRESHREC_STORAGE__ENDPOINT_URL": s3.url,
        "FRESHREC_STORAGE__ACCESS_KEY": s3.access_key,
        "FRESHREC_STORAGE__SECRET_KEY": s3.secret_key,
        "FRESHREC_STORAGE__REGION": s3.region,
    }


def snapshot_env(kafka_bootstrap: str, topic: str, storage: dict[str, str]) -> dict[str, str]:
    return service_env(
        kafka_bootstrap,
        topic,
        storage,
        FRESHREC_SNAPSHOT__MODEL_NAME=MODEL,
        # Candidates only every CHUNK events, never on a timer: the decisions follow the
        # stream, not the clock.
        FRESHREC_SNAPSHOT__EVERY_EVENTS=str(CHUNK),
        FRESHREC_SNAPSHOT__EVERY_SECONDS="3600",
        FRESHREC_SNAPSHOT__MIN_NEW_EVENTS="1000",
        FRESHREC_SNAPSHOT__MIN_HOLDOUT="200",
        FRESHREC_SNAPSHOT__HOLDOUT_WINDOW="20000",
        FRESHREC_SNAPSHOT__TOLERANCE="0.01",
        # 5% held out: the gate has a few hundred good held-out ratings after a few
        # chunks, so a burst of poison stays a minority of its window.
        FRESHREC_PREPROCESS__HOLDOUT_FRACTION="0.05",
        # ADWIN's default reaction ('adapt') changes the learning rate at the end of the
        # Kafka batch in which it fires, so the model would depend on how polls happen to
        # split the stream; alerts leave the model a function of the events alone.
        FRESHREC_DRIFT__ADWIN__REACTION="alert",
    )


class Gate:
    """Feeds chunks to the service and reports each chunk's gate decision."""

    def __init__(self, service: ServiceProcess, stream: ChunkedStream) -> None:
        self.service, self.stream = service, stream

    def _decisions(self) -> dict[str, float]:
        m = self.service.metrics()
        out = {"published": sample(m, "freshrec_snapshots_published_total")}
        for key, value in samples(m, "freshrec_snapshots_rejected_total").items():
            out[parse_key(key)[1]["reason"]] = value
        return out

    def feed(self, transform: Transform | None = None) -> str:
        """Send one chunk; return 'published' or the gate's rejection reason."""
        before = self._decisions()
        wait_applied(self.service, self.stream.send(CHUNK, transform))
        changed: dict[str, float] = {}

        def decided() -> bool:
            nonlocal changed
            now = self._decisions()
            changed = {k: v - before.get(k, 0.0) for k, v in now.items() if v != before.get(k)}
            return bool(changed)

        self.service.wait_until(f"the gate's decision after {self.stream.sent} events", decided)
        assert len(changed) == 1 and next(iter(changed.values())) == 1, (
            f"expected exactly one decision per chunk, got {changed}"
        )
        (outcome,) = changed
        assert outcome != "storage_error", self.service.log()
        return outcome


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``freshrec`` as an operator runs it, with the service's storage settings."""
    return subprocess.run(
        [sys.executable, "-m", "service", *args],
        env={**os.environ, **env, "PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def registry(storage: dict[str, str]) -> SnapshotRegistry:
    config = StorageConfig(
        url=storage["FRESHREC_STORAGE__URL"],
        endpoint_url=storage["FRESHREC_STORAGE__ENDPOINT_URL"],
        access_key=storage["FRESHREC_STORAGE__ACCESS_KEY"],
        secret_key=storage["FRESHREC_STORAGE__SECRET_KEY"],
    )
    return SnapshotRegistry(open_store(config), MODEL)


def load(s3: S3Endpoint, storage: dict[str, str], version: str = "latest") -> LoadedSnapshot:
    return load_snapshot(
        storage["FRESHREC_STORAGE__URL"], version, model=MODEL, endpoint_url=s3.url,
        access_key=s3.access_key, secret_key=s3.secret_key, region=s3.region,
    )


def test_poison_is_held_back_and_rollback_sets_the_champion(
    kafka_bootstrap: str,
    s3_endpoint: S3Endpoint,
    unique_topic: Callable[..., str],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    topic = unique_topic()
    storage = storage_env(s3_endpoint, unique_prefix)
    env = snapshot_env(kafka_bootstrap, topic, storage)
    stream = ChunkedStream(kafka_bootstrap, topic, replace(WORLD, seed=21), 100 * CHUNK)
    reg = registry(storage)
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        service.wait_ready()
        gate = Gate(service, stream)

        # 1. A good stream: the first candidate with enough held-out data is published,
        #    the next one, better still, too.
        outcomes = [gate.feed() for _ in range(3)]
        assert outcomes == ["not_enough_holdout", "published", "published"], outcomes
        assert reg.latest_version() == "000002"
        v2 = reg.manifest("000002")
        assert v2.meta.parent_version == "000001"
        assert v2.meta.validation.reason == "passed"
        assert v2.meta.offsets == {topic: {0: stream.sent}}

        snap = load(s3_endpoint, storage)
        assert snap.version == "000002"
        # Its predictions for the most active users and most popular items are ratings
        # (the learner clips to the range seen) that follow the planted model.
        top_users, top_items = stream.most_active(30)
        users = [u for u in top_users for _ in top_items]
        items = [i for _ in top_users for i in top_items]
        pred = np.asarray(snap.predict(users, items), dtype=np.float64)
        assert np.isfinite(pred).all() and (pred >= 1.0).all() and (pred <= 5.0).all(), pred
        truth = np.clip(stream.stream.true_score(
            np.array([int(u[1:]) for u in users]), np.array([int(i[1:]) for i in items]),
            np.zeros(len(users), np.int64)), 1.0, 5.0)
        rmse = float(np.sqrt(np.mean((pred - truth) ** 2)))
        # Better than the best constant (the truth's own mean), and correlated with it.
        assert rmse < 0.85 * float(np.std(truth)), (rmse, float(np.std(truth)))
        assert float(np.corrcoef(pred, truth)[0, 1]) > 0.5

        # 2. Poison: the same users and items, opposite ratings. Both candidates are worse
        #    than the published model on the held-out window and are held back.
        held_back = sample(service.metrics(), "freshrec_snapshots_rejected_total",
                           reason="worse_than_champion")
        for _ in range(2):
            assert gate.feed(inverted_ratings) == "worse_than_champion"
            assert reg.latest_version() == "000002"
        m = service.metrics()
        assert sample(m, "freshrec_snapshots_rejected_total",
                      reason="worse_than_champion") == held_back + 2
        assert sample(m, "freshrec_model_version") == 2
        assert load(s3_endpoint, storage).version == "000002"

        # 3. Roll back to version 1 while the service runs.
        done = cli(env, "snapshots", "rollback", "1")
        assert done.returncode == 0, done.stderr
        assert "000002 -> 000001" in done.stdout, done.stdout
        assert reg.latest_version() == "000001"

        # The service keeps learning from its own (poisoned) state on good data, and its
        # candidates now have to beat version 1: the first that does is published with
        # version 1 as its parent.
        after_rollback: list[str] = []
        while "published" not in after_rollback:
            if len(after_rollback) == 12:
                pytest.fail(f"no candidate beat the rolled-back version 1 in 12 chunks "
                            f"({after_rollback}):\n{service.log()}")
            after_rollback.append(gate.feed())
        print(f"gate after the rollback, chunk by chunk: {after_rollback}")
        assert reg.latest_version() == "000003"
        v3 = reg.manifest("000003")
        assert v3.meta.parent_version == "000001", v3.meta
        assert v3.meta.validation.reason == "passed"
        assert v3.meta.validation.champion is not None
        # It is the service's own model, not version 1 reloaded: it reflects every event.
        assert v3.meta.offsets == {topic: {0: stream.sent}}
        assert v3.meta.counts["applied"] == stream.sent
        assert v3.meta.counts["examples_trained"] > v2.meta.counts["examples_trained"]
        assert f"loaded champion {MODEL} version 000001" in (tmp_path / "service.log").read_text()
    finally:
        code = service.terminate()
    assert code == 0, service.log()
    # The list the operator sees tells the same story.
    listed = cli(env, "snapshots", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()[2:]] == [
        "000003", "000002", "000001"], listed.stdout


def test_a_flipped_byte_in_a_published_array_is_refused(
    kafka_bootstrap: str,
    s3_endpoint: S3Endpoint,
    unique_topic: Callable[..., str],
    unique_prefix: str,
    tmp_path: Path,
) -> None:
    topic = unique_topic()
    storage = storage_env(s3_endpoint, unique_prefix)
    env = snapshot_env(kafka_bootstrap, topic, storage)
    stream = ChunkedStream(kafka_bootstrap, topic, replace(WORLD, seed=22), 10 * CHUNK)
    service = ServiceProcess(env, tmp_path / "service.log").start()
    try:
        service.wait_ready()
        gate = Gate(service, stream)
        outcomes = [gate.feed() for _ in range(3)]
        assert outcomes.count("published") == 2, outcomes
    finally:
        code = service.terminate()
    assert code == 0, service.log()
    assert load(s3_endpoint, storage).version == "000002"

    # Flip one byte in the middle of the largest array file of version 2, on the server.
    s3 = s3_endpoint.client()
    prefix = f"{unique_prefix}models/{MODEL}/versions/000002/arrays/"
    objects = s3.list_objects_v2(Bucket=s3_endpoint.bucket, Prefix=prefix)["Contents"]
    victim = max(objects, key=lambda o: o["Size"])["Key"]
    data = bytearray(s3.get_object(Bucket=s3_endpoint.bucket, Key=victim)["Body"].read())
    data[len(data) // 2] ^= 0x01
    s3.put_object(Bucket=s3_endpoint.bucket, Key=victim, Body=bytes(data))
    name = victim[len(prefix) - len("arrays/"):]  # "arrays/<array>.npy", as the manifest says

    for version in ("latest", "2"):
        with pytest.raises(BundleIntegrityError) as refused:
            load(s3_endpoint, storage, version)
        message = str(refused.value)
        assert name in message and "modified or corrupted" in message, message
    # The operator cannot roll back onto it either; the untouched version still loads.
    registry(storage).rollback("1")
    refused_cli = cli(env, "snapshots", "rollback", "2")
    assert refused_cli.returncode == 1
    assert name in refused_cli.stderr, refused_cli.stderr
    assert load(s3_endpoint, storage).version == "000001"
    assert isinstance(registry(storage).manifest("000002"), SnapshotManifest)
