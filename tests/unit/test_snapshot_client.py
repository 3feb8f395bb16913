"""The serving client, the manifest schema and the ``freshrec snapshots`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from service.cli import main
from service.snapshots import (
    SnapshotConfig,
    SnapshotIntegrityError,
    SnapshotManifest,
    SnapshotNotFound,
    SnapshotPublisher,
    load_snapshot,
    vocabulary_arrays,
)
from service.snapshots.manifest import SCHEMA_PATH, render_schema
from service.storage import LocalFolderStore
from tests.unit.test_snapshot_fakes import FakeLearner

USERS = ["", "ann", "ben", "cat"]
ITEMS = ["", "x-1", "x-2", "x-3", "x-4"]


def _publish(root: Path, n: int = 1, **enc: object) -> SnapshotPublisher:
    pub = SnapshotPublisher(LocalFolderStore(root), SnapshotConfig(model_name="recs"),
                            learner_factory=FakeLearner.from_state)
    u8, uo = vocabulary_arrays(USERS)
    i8, io = vocabulary_arrays(ITEMS)
    encoding = enc or {
        "user": {"kind": "vocabulary", "utf8": "u8", "offsets": "uo"},
        "item": {"kind": "vocabulary", "utf8": "i8", "offsets": "io"},
    }
    for k in range(n):
        learner = FakeLearner(n_users=len(USERS), n_items=len(ITEMS))
        learner.arrays["item_bias"][:] = [0.0, 0.1, 0.9, 0.5, 0.2]
        learner.arrays["user_bias"][:] = [0.0, 1.0, 2.0, 3.0]
        learner.arrays["mean"][0] = 3.0 + k
        pub.publish(learner.get_state(), encoding, {"t": {0: 10 * (k + 1)}}, {"learned": 10},
                    {"metric": "rmse", "candidate": 0.9 - k / 10, "reason": "passed"},
                    encoding_arrays={"u8": u8, "uo": uo, "i8": i8, "io": io},
                    task="regression")
    return pub


def test_load_predict_recommend_with_original_ids(tmp_path: Path) -> None:
    _publish(tmp_path, n=2)
    snap = load_snapshot(str(tmp_path), model="recs", learner_factory=FakeLearner.from_state)
    assert snap.version == "000002"
    np.testing.assert_allclose(snap.predict(["ben", "nobody"], ["x-2", "x-3"]),
                               [4.0 + 2.0 + 0.9, 4.0 + 0.0 + 0.5], rtol=1e-6)
    assert [i for i, _ in snap.recommend("ann", k=3)] == ["x-2", "x-3", "x-4"]
    assert [i for i, _ in snap.recommend("ann", k=2, exclude=["x-2"])] == ["x-3", "x-4"]
    old = load_snapshot(f"file://{tmp_path}", "1", model="recs",
                        learner_factory=FakeLearner.from_state)
    assert old.predict("cat", "x-1")[0] == pytest.approx(3.0 + 3.0 + 0.1)


def test_flipped_byte_refused_by_client(tmp_path: Path) -> None:
    _publish(tmp_path)
    path = tmp_path / "models/recs/versions/000001/arrays/model/item_bias.npy"
    data = bytearray(path.read_bytes())
    data[-2] ^= 0x10
    path.write_bytes(bytes(data))
    with pytest.raises(SnapshotIntegrityError, match="item_bias"):
        load_snapshot(str(tmp_path), model="recs", learner_factory=FakeLearner.from_state)


def test_missing_model_and_hash_encoding(tmp_path: Path) -> None:
    with pytest.raises(SnapshotNotFound, match="'recs' has no published snapshot"):
        load_snapshot(str(tmp_path), model="recs", learner_factory=FakeLearner.from_state)
    _publish(tmp_path, user={"kind": "hash", "seed": 1}, item={"kind": "identity"})
    snap = load_snapshot(str(tmp_path), model="recs", learner_factory=FakeLearner.from_state)
    with pytest.raises(LookupError, match="pass encoder="):
        snap.predict(["ann"], ["1"])
    assert snap.predict_rows([1], [2])[0] == pytest.approx(3.0 + 1.0 + 0.9)

    class Enc:  # what the preprocessing code would provide
        def user_rows(self, ids): return np.array([USERS.index(i) for i in ids], np.int64)
        def item_rows(self, ids): return np.array([int(i) for i in ids], np.int64)
        def item_ids(self, rows): return np.asarray(rows).astype(str)

    snap = load_snapshot(str(tmp_path), model="recs", learner_factory=FakeLearner.from_state,
                         encoder=Enc())
    assert snap.predict(["ann"], ["2"])[0] == pytest.approx(3.0 + 1.0 + 0.9)
    assert snap.recommend("ann", k=1) == [("2", pytest.approx(0.9 + 1.0))]


def test_client_imports_without_kafka() -> None:
    code = ("import sys; import service.snapshots.client; "
            "bad = [m for m in sys.modules if m.startswith(('confluent_kafka', 'boto3'))]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])


def test_committed_schema_matches_the_models() -> None:
    assert SCHEMA_PATH.read_text() == render_schema(), (
        "schemas/snapshot-manifest.schema.json is stale: run "
        "python -m service.snapshots.manifest --write"
    )
    schema = json.loads(SCHEMA_PATH.read_text())
    assert set(schema["$defs"]["SnapshotMeta"]["properties"]) == set(
        SnapshotManifest.model_fields["meta"].annotation.model_fields  # type: ignore[union-attr]
    )


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    rc = main(["snapshots", *args])
    out = capsys.readouterr()
    return rc, out.out, out.err


def test_cli_list_show_pin_rollback_pull(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    _publish(store, n=3)
    monkeypatch.setenv("FRESHREC_STORAGE__URL", f"file://{store}")
    monkeypatch.setenv("FRESHREC_SNAPSHOT__MODEL_NAME", "recs")

    rc, out, _ = _cli(capsys, "list")
    lines = out.splitlines()
    assert rc == 0 and lines[1].split()[:2] == ["VERSION", "CREATED"]
    assert lines[2].startswith("000003") and lines[2].endswith("latest")
    assert [ln.split()[0] for ln in lines[2:]] == ["000003", "000002", "000001"]

    rc, out, _ = _cli(capsys, "show", "2")
    fields = {ln.split()[0]: ln.split(None, 1)[1] for ln in out.splitlines()[:10]}
    assert rc == 0 and fields["version"] == "000002" and fields["parent"] == "000001"
    assert "model/item_bias" in out and "rmse 0.8" in out

    rc, out, _ = _cli(capsys, "show", "latest", "--json")
    assert SnapshotManifest.model_validate_json(out).meta.version == "000003"

    assert _cli(capsys, "pin", "1", "--note", "launch")[0] == 0
    assert _cli(capsys, "rollback", "1")[1].strip() == "latest of 'recs': 000003 -> 000001"
    rc, out, _ = _cli(capsys, "list", "--json")
    flags = {d["version"]: (d["latest"], d["pinned"]) for d in json.loads(out)}
    assert flags == {"000001": (True, True), "000002": (False, False), "000003": (False, False)}
    assert _cli(capsys, "pin", "1", "--unpin")[0] == 0

    dest = tmp_path / "pulled"
    rc, out, _ = _cli(capsys, "pull", "3", "--to", str(dest))
    assert rc == 0 and "verified" in out
    snap = load_snapshot(str(dest), model="recs", learner_factory=FakeLearner.from_state)
    assert snap.version == "000003"

    rc, _, err = _cli(capsys, "rollback", "9")
    assert rc == 1 and "no complete version 000009" in err
    rc, _, err = _cli(capsys, "--url", str(tmp_path / "empty"), "show", "latest")
    assert rc == 1 and "no published snapshot" in err


def test_cli_pull_refuses_corrupt_version(tmp_path: Path, capsys: pytest.CaptureFixture[str]
                                          ) -> None:
    _publish(tmp_path / "s")
    path = tmp_path / "s/models/recs/versions/000001/arrays/model/mean.npy"
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    rc, _, err = _cli(capsys, "--url", str(tmp_path / "s"), "--model", "recs", "pull", "1",
                      "--to", str(tmp_path / "d"))
    assert rc == 1 and "does not match its manifest" in err
    assert not (tmp_path / "d/models/recs/latest").exists()
