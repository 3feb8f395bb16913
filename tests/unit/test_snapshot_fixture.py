"""Snapshots written by bundle format version 1 must load forever.

``tests/fixtures/snapshots/v1`` is a local-folder store holding model ``default`` version
000001, written once by format version 1 with :func:`write_fixture` and committed. Never
regenerate it with a newer format: its whole point is to be old. Create one in a new place
with ``python -m tests.unit.test_snapshot_fixture DIR``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from service.snapshots import SnapshotConfig, SnapshotPublisher, load_snapshot, vocabulary_arrays
from service.storage import LocalFolderStore, read_manifest
from tests.unit.test_snapshot_fakes import FakeLearner

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "snapshots" / "v1"
USERS = ["", "alice", "bob", "carol", "dave", "erin", "frank", "grace"]
ITEMS = ["", "book", "film", "game", "song", "toy"]


def fixture_learner() -> FakeLearner:
    """The model stored in the fixture (deterministic)."""
    rng = np.random.default_rng(20240601)
    learner = FakeLearner(n_users=len(USERS), n_items=len(ITEMS))
    learner.arrays["mean"][0] = 3.5
    learner.arrays["user_bias"][1:] = rng.normal(0, 0.5, len(USERS) - 1)
    learner.arrays["item_bias"][1:] = rng.normal(0, 0.5, len(ITEMS) - 1)
    return learner


def write_fixture(root: Path) -> str:
    pub = SnapshotPublisher(LocalFolderStore(root), SnapshotConfig(),
                            learner_factory=FakeLearner.from_state)
    u8, uo = vocabulary_arrays(USERS)
    i8, io = vocabulary_arrays(ITEMS)
    return pub.publish(
        fixture_learner().get_state(),
        {"user": {"kind": "vocabulary", "utf8": "user_utf8", "offsets": "user_offsets"},
         "item": {"kind": "vocabulary", "utf8": "item_utf8", "offsets": "item_offsets"},
         "feature_hash": {"seed": 7, "bits": 10}},
        {"freshrec.events": {0: 1000, 1: 990}},
        {"learned": 1790, "held_out": 200},
        {"metric": "rmse", "candidate": 0.91, "champion": None, "n_holdout": 200,
         "reason": "first_publication", "tolerance": 0.01},
        encoding_arrays={"user_utf8": u8, "user_offsets": uo, "item_utf8": i8,
                         "item_offsets": io},
        task="regression",
    )


def test_v1_fixture_still_loads_and_predicts() -> None:
    manifest = read_manifest(LocalFolderStore(FIXTURE), "models/default/versions/000001")
    assert manifest.format_version == 1  # the fixture really is version 1
    snap = load_snapshot(f"file://{FIXTURE}", learner_factory=FakeLearner.from_state)
    assert snap.version == "000001" and snap.model_type == "fake_bias"
    assert snap.manifest.meta.offsets == {"freshrec.events": {0: 1000, 1: 990}}
    truth = fixture_learner()
    for name, a in truth.arrays.items():
        np.testing.assert_array_equal(snap.state.arrays[name], a)
    expected = 3.5 + truth.arrays["user_bias"][2] + truth.arrays["item_bias"][3]
    assert snap.predict(["bob"], ["game"])[0] == np.float32(expected)
    best = int(np.argmax(truth.arrays["item_bias"][1:])) + 1
    assert snap.recommend("alice", k=1)[0][0] == ITEMS[best]


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else FIXTURE
    if (target / "models").exists():
        sys.exit(f"{target} already holds a fixture; it must never be regenerated in place")
    print("wrote version", write_fixture(target), "under", target)
