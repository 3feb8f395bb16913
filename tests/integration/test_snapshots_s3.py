"""Snapshots on the real S3 server (versitygw in the local stack).

Each test writes under its own ``unique_prefix`` of the shared bucket.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from service.demo.generator import StreamSpec, SyntheticStream
from service.examples import ExampleBatch
from service.learners.biased_mf import BiasedMF
from service.snapshots import (
    PromotionGate,
    SnapshotConfig,
    SnapshotIntegrityError,
    SnapshotPublisher,
    load_snapshot,
    vocabulary_arrays,
)
from service.storage import StorageConfig, StorageError, open_store
from service.storage.s3 import S3Store
from tests.unit.test_snapshot_fakes import FakeLearner
from tests.unit.test_snapshot_fixture import FIXTURE, ITEMS, fixture_learner

pytestmark = pytest.mark.integration

N_USERS, N_ITEMS = 300, 120


def _config(ep, prefix: str, **kw) -> StorageConfig:  # type: ignore[no-untyped-def]
    return StorageConfig(url=f"s3://{ep.bucket}/{prefix.rstrip('/')}", endpoint_url=ep.url,
                         access_key=ep.access_key, secret_key=ep.secret_key,  # type: ignore[arg-type]
                         region=ep.region, **kw)


def _stream(n: int, seed: int) -> ExampleBatch:
    r = SyntheticStream(StreamSpec(n_users=N_USERS - 1, n_items=N_ITEMS - 1, seed=seed,
                                   noise=0.3)).ratings(n)
    batch = ExampleBatch.from_arrays(r.user + 1, r.item + 1, r.rating)
    batch.holdout[::10] = True  # the runtime's holdout split: never trained on
    return batch


def _encoding() -> tuple[dict, dict]:
    users = [""] + [f"u{i}" for i in range(1, N_USERS)]
    items = [""] + [f"i{i}" for i in range(1, N_ITEMS)]
    u8, uo = vocabulary_arrays(users)
    i8, io = vocabulary_arrays(items)
    return ({"user": {"kind": "vocabulary", "utf8": "u8", "offsets": "uo"},
             "item": {"kind": "vocabulary", "utf8": "i8", "offsets": "io"}},
            {"u8": u8, "uo": uo, "i8": i8, "io": io})


def test_publish_good_model_and_hold_back_poisoned_one(s3_endpoint, unique_prefix) -> None:
    cfg = SnapshotConfig(model_name="mf", min_holdout=200, min_new_events=1000, tolerance=0.02)
    store = open_store(_config(s3_endpoint, unique_prefix))
    pub = SnapshotPublisher(store, cfg)  # the real learner_from_state
    gate = PromotionGate(cfg)
    encoding, enc_arrays = _encoding()
    learner = BiasedMF(N_USERS, N_ITEMS, n_factors=8, seed=1)
    stream = _stream(30_000, seed=3)
    gate.observe(stream)
    learner.learn(stream.select(~stream.holdout))

    out = pub.consider(learner, gate, events_since_last=27_000, encoding=encoding,
                       offsets={"events": {0: 30_000}}, counts={"learned": 27_000},
                       encoding_arrays=enc_arrays)
    assert out.published and out.version == "000001", out.decision.message
    assert out.decision.reason == "first_publication"

    # A candidate trained further on poisoned data (ratings flipped) is worse on holdout.
    poisoned = BiasedMF.from_state(learner.get_state())
    bad = _stream(20_000, seed=4)
    bad.y = (6.0 - bad.y).astype(np.float32)
    poisoned.learn(bad)
    out = pub.consider(poisoned, gate, events_since_last=20_000, encoding=encoding,
                       offsets={"events": {0: 50_000}}, counts={"learned": 47_000},
                       encoding_arrays=enc_arrays)
    assert not out.published and out.decision.reason == "worse_than_champion"
    assert out.decision.candidate > out.decision.champion  # RMSE went up
    assert pub.latest_version() == "000001"
    assert pub.gate_counts["worse_than_champion"] == 1

    # Serving pulls the published model from S3 and scores with original ids.
    snap = load_snapshot(f"s3://{s3_endpoint.bucket}/{unique_prefix}", model="mf",
                         endpoint_url=s3_endpoint.url, access_key=s3_endpoint.access_key,
                         secret_key=s3_endpoint.secret_key)
    assert snap.version == "000001"
    assert snap.manifest.meta.offsets == {"events": {0: 30_000}}
    assert snap.manifest.meta.validation.metric == "rmse"
    held = stream.select(stream.holdout)
    ids_u = [f"u{u}" for u in held.user[:50]]
    ids_i = [f"i{i}" for i in held.item[:50]]
    np.testing.assert_allclose(snap.predict(ids_u, ids_i),
                               learner.predict(held.select(np.arange(len(held)) < 50)),
                               rtol=1e-5)
    recs = snap.recommend("u5", k=5)
    assert len(recs) == 5 and all(i.startswith("i") for i, _ in recs)


def test_flipped_byte_on_the_server_is_refused(s3_endpoint, unique_prefix,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    store = open_store(_config(s3_endpoint, unique_prefix))
    pub = SnapshotPublisher(store, SnapshotConfig(model_name="m"),
                            learner_factory=FakeLearner.from_state)
    learner = FakeLearner()
    learner.arrays["item_bias"][:] = np.linspace(0, 1, 40)
    pub.publish(learner.get_state(), {}, {}, {}, None)

    # Storage settings through the environment, as serving processes get them.
    monkeypatch.setenv("FRESHREC_STORAGE__ENDPOINT_URL", s3_endpoint.url)
    monkeypatch.setenv("FRESHREC_STORAGE__ACCESS_KEY", s3_endpoint.access_key)
    monkeypatch.setenv("FRESHREC_STORAGE__SECRET_KEY", s3_endpoint.secret_key)
    url = f"s3://{s3_endpoint.bucket}/{unique_prefix}"
    assert load_snapshot(url, model="m", learner_factory=FakeLearner.from_state).version

    s3 = s3_endpoint.client()
    key = f"{unique_prefix}models/m/versions/000001/arrays/model/item_bias.npy"
    data = bytearray(s3.get_object(Bucket=s3_endpoint.bucket, Key=key)["Body"].read())
    data[-3] ^= 0x04
    s3.put_object(Bucket=s3_endpoint.bucket, Key=key, Body=bytes(data))
    with pytest.raises(SnapshotIntegrityError, match="item_bias"):
        load_snapshot(url, model="m", learner_factory=FakeLearner.from_state)


def test_version_1_fixture_loads_from_s3(s3_endpoint, unique_prefix) -> None:
    s3 = s3_endpoint.client()
    for path in FIXTURE.rglob("*"):
        if path.is_file():
            key = unique_prefix + path.relative_to(FIXTURE).as_posix()
            s3.put_object(Bucket=s3_endpoint.bucket, Key=key, Body=path.read_bytes())
    snap = load_snapshot(f"s3://{s3_endpoint.bucket}/{unique_prefix}",
                         endpoint_url=s3_endpoint.url, access_key=s3_endpoint.access_key,
                         secret_key=s3_endpoint.secret_key,
                         learner_factory=FakeLearner.from_state)
    assert snap.manifest.format_version == 1 and snap.version == "000001"
    truth = fixture_learner()
    np.testing.assert_array_equal(snap.state.arrays["item_bias"], truth.arrays["item_bias"])
    best = int(np.argmax(truth.arrays["item_bias"][1:])) + 1
    assert snap.recommend("alice", k=1)[0][0] == ITEMS[best]


def test_store_operations_and_large_object(s3_endpoint, unique_prefix) -> None:
    store = open_store(_config(s3_endpoint, unique_prefix))
    assert isinstance(store, S3Store)
    store.put("a/b", b"1")
    store.put("a/c", b"22")
    assert store.list("a/") == ["a/b", "a/c"] and store.exists("a/b")
    big = np.random.default_rng(0).bytes(70 * 1024 * 1024)  # above the multipart threshold
    store.put("big", big)
    assert store.get("big") == big
    store.delete("a/b")
    store.delete("a/b")
    assert store.list("a/") == ["a/c"] and not store.exists("a/b")


def test_wrong_credentials_say_what_to_check(s3_endpoint, unique_prefix) -> None:
    store = S3Store(s3_endpoint.bucket, unique_prefix, endpoint_url=s3_endpoint.url,
                    access_key=s3_endpoint.access_key, secret_key="wrong",
                    region=s3_endpoint.region)
    with pytest.raises(StorageError, match="ACCESS_KEY"):
        store.put("x", b"1")
    missing = S3Store("no-such-bucket-freshrec", endpoint_url=s3_endpoint.url,
                      access_key=s3_endpoint.access_key, secret_key=s3_endpoint.secret_key)
    with pytest.raises(StorageError, match="does not exist"):
        missing.put("x", b"1")


def test_cli_pull_from_s3(s3_endpoint, unique_prefix, tmp_path: Path,
                          monkeypatch: pytest.MonkeyPatch,
                          capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    store = open_store(_config(s3_endpoint, unique_prefix))
    pub = SnapshotPublisher(store, SnapshotConfig(model_name="m"),
                            learner_factory=FakeLearner.from_state)
    pub.publish(FakeLearner().get_state(), {}, {}, {}, None)
    pub.publish(FakeLearner().get_state(), {}, {}, {}, None)
    for var, value in (("URL", f"s3://{s3_endpoint.bucket}/{unique_prefix}"),
                       ("ENDPOINT_URL", s3_endpoint.url),
                       ("ACCESS_KEY", s3_endpoint.access_key),
                       ("SECRET_KEY", s3_endpoint.secret_key)):
        monkeypatch.setenv(f"FRESHREC_STORAGE__{var}", value)
    assert main(["snapshots", "--model", "m", "rollback", "1"]) == 0
    assert main(["snapshots", "--model", "m", "pull", "latest", "--to", str(tmp_path)]) == 0
    assert main(["snapshots", "--model", "m", "list"]) == 0
    out = capsys.readouterr().out
    assert "000001" in out.splitlines()[-1] and "latest" in out.splitlines()[-1]
    local = load_snapshot(str(tmp_path), model="m", learner_factory=FakeLearner.from_state)
    assert local.version == "000001"
