"""Registry layout, the latest pointer, pins, retention, rollback and the publisher."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
import pytest

from service.snapshots import (
    PromotionGate,
    SnapshotConfig,
    SnapshotIntegrityError,
    SnapshotNotFound,
    SnapshotPublisher,
    SnapshotRegistry,
    normalize_version,
)
from service.storage import LocalFolderStore
from tests.unit.test_snapshot_fakes import FakeLearner, planted_batch

CFG = SnapshotConfig(model_name="m", keep=3, min_holdout=50, min_new_events=100, tolerance=0.05)
OFFSETS = {"events": {0: 120, 1: 98}}


def _publisher(tmp_path: Path, cfg: SnapshotConfig = CFG) -> SnapshotPublisher:
    return SnapshotPublisher(LocalFolderStore(tmp_path), cfg,
                             learner_factory=FakeLearner.from_state)


def _publish(pub: SnapshotPublisher, learner: FakeLearner | None = None, **kw: object) -> str:
    learner = learner or FakeLearner()
    return pub.publish(learner.get_state(), {"user": {"kind": "identity"}}, OFFSETS,
                       {"learned": 10}, {"reason": "passed"}, task="regression", **kw)


def test_layout_pointer_and_manifest(tmp_path: Path) -> None:
    pub = _publisher(tmp_path)
    v1 = _publish(pub)
    v2 = _publish(pub)
    assert (v1, v2) == ("000001", "000002")
    keys = pub.registry.store.list("models/m/")
    assert "models/m/latest" in keys
    assert "models/m/versions/000002/manifest.json" in keys
    assert "models/m/versions/000002/arrays/model/user_bias.npy" in keys
    pointer = orjson.loads(pub.registry.store.get("models/m/latest"))
    assert pointer["version"] == "000002" and pointer["action"] == "publish"
    m = pub.registry.manifest("latest")
    assert m.meta.parent_version == "000001" and m.meta.offsets == OFFSETS
    assert m.meta.model_type == "fake_bias" and m.meta.hyperparameters["n_items"] == 40
    assert m.sha256() == pointer["manifest_sha256"]
    assert set(m.model_arrays()) == {"mean", "user_bias", "item_bias"}


def test_incomplete_version_is_invisible_and_never_reused(tmp_path: Path) -> None:
    pub = _publisher(tmp_path)
    _publish(pub)
    store = pub.registry.store
    store.put("models/m/versions/000002/arrays/model/mean.npy", b"partial")  # crashed write
    assert pub.registry.versions() == ["000001"]
    assert pub.registry.latest_version() == "000001"
    with pytest.raises(SnapshotNotFound):
        pub.registry.read("2")
    assert _publish(pub) == "000003"


def test_retention_keeps_last_k_plus_pinned_plus_latest(tmp_path: Path) -> None:
    pub = _publisher(tmp_path)
    _publish(pub)
    _publish(pub)
    pub.registry.pin("1", note="launch")
    with pytest.raises(SnapshotNotFound):
        pub.registry.pin("9")
    with pytest.raises(SnapshotNotFound):
        pub.registry.pin("9")
    for _ in range(4):
        _publish(pub)  # versions 3..6, retention after each
    assert pub.registry.versions() == ["000001", "000004", "000005", "000006"]
    assert pub.registry.pinned() == {"000001"}
    # Rolling back to an old version protects it even once it falls out of the last K.
    pub.registry.rollback("4")
    assert pub.registry.apply_retention(1) == ["000005"]
    assert pub.registry.versions() == ["000001", "000004", "000006"]
    _publish(pub)
    _publish(pub)
    assert pub.registry.versions() == ["000001", "000006", "000007", "000008"]
    pub.registry.unpin("1")
    assert pub.registry.apply_retention(3) == ["000001"]
    assert not pub.registry.store.list("models/m/versions/000001/")


def test_rollback_verifies_and_publisher_notices(tmp_path: Path) -> None:
    pub = _publisher(tmp_path)
    a, b = FakeLearner(), FakeLearner()
    a.arrays["mean"][0], b.arrays["mean"][0] = 1.0, 2.0
    _publish(pub, a)
    _publish(pub, b, champion=FakeLearner.from_state(b.get_state()))
    assert pub.champion_version == "000002"
    champ = pub.load_champion()
    assert champ is not None and champ.arrays["mean"][0] == 2.0

    # An operator rolls back from another process.
    other = SnapshotRegistry(LocalFolderStore(tmp_path), "m")
    other.rollback("000001")
    assert pub.latest_version() == "000001"
    champ = pub.load_champion()
    assert champ is not None and champ.arrays["mean"][0] == 1.0
    assert pub.champion_version == "000001"
    assert orjson.loads(pub.registry.store.get("models/m/latest"))["action"] == "rollback"
    # The next publication descends from the rolled-back version.
    assert _publish(pub) == "000003"
    assert pub.registry.manifest("3").meta.parent_version == "000001"

    # A corrupted version cannot be rolled back to.
    path = tmp_path / "models/m/versions/000002/arrays/model/mean.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotIntegrityError):
        other.rollback("2")
    assert other.latest_version() == "000003"
    with pytest.raises(SnapshotNotFound):
        other.rollback("42")


def test_manifest_edited_after_publication_is_refused_via_latest(tmp_path: Path) -> None:
    pub = _publisher(tmp_path)
    _publish(pub)
    key = "models/m/versions/000001/manifest.json"
    doc = orjson.loads(pub.registry.store.get(key))
    doc["meta"]["validation"]["reason"] = "forged"
    pub.registry.store.put(key, orjson.dumps(doc))
    with pytest.raises(SnapshotIntegrityError, match="modified after publication"):
        pub.registry.read("latest")
    pub.registry.read("1")  # by explicit version there is no pointer to compare with


def test_consider_publishes_good_and_holds_back_poisoned(tmp_path: Path) -> None:
    pub = _publisher(tmp_path)
    gate = PromotionGate(CFG)
    stream = planted_batch(6000, seed=4)
    learner = FakeLearner()
    first, second = stream.select(np.arange(6000) < 3000), stream.select(np.arange(6000) >= 3000)
    for part in (first,):
        gate.observe(part)
        learner.learn(part.select(~part.holdout))
    common = {"encoding": {}, "offsets": OFFSETS, "counts": {"learned": 2400}}
    out = pub.consider(learner, gate, events_since_last=2400, **common)
    assert out.published and out.version == "000001"
    assert out.decision.reason == "first_publication"
    assert pub.champion_version == "000001"

    poisoned = FakeLearner.from_state(learner.get_state())
    poisoned.arrays["item_bias"] *= -1
    out = pub.consider(poisoned, gate, events_since_last=2400, **common)
    assert not out.published and out.decision.reason == "worse_than_champion"
    assert pub.latest_version() == "000001"

    gate.observe(second)
    learner.learn(second.select(~second.holdout))
    out = pub.consider(learner, gate, events_since_last=50, **common)
    assert out.decision.reason == "not_enough_events"
    out = pub.consider(learner, gate, events_since_last=2400, **common)
    assert out.published and out.version == "000002", out.decision.message
    m = pub.registry.manifest("latest")
    assert m.meta.validation.reason == "passed" and m.meta.validation.metric == "rmse"
    assert m.meta.validation.candidate == out.decision.candidate
    assert m.meta.task == "regression" and m.meta.parent_version == "000001"
    assert pub.gate_counts == {"first_publication": 1, "worse_than_champion": 1,
                               "not_enough_events": 1, "passed": 1}


def test_versions_and_names() -> None:
    assert normalize_version(7) == "000007"
    with pytest.raises(ValueError, match="not a number"):
        normalize_version("v7")
    with pytest.raises(ValueError):
        SnapshotRegistry(LocalFolderStore("/tmp"), "a/b")
    with pytest.raises(ValueError):
        SnapshotConfig(model_name="../x")
