"""CheckpointManager on a local folder: the commit protocol and recovery rules."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.checkpoint.config import CheckpointConfig
from service.checkpoint.manager import CheckpointManager, namespaced, split_namespaced
from service.storage import LocalFolderStore, StorageUnavailable


class FakePipeline:
    """State is one counter array; enough to see which checkpoint was restored."""

    def __init__(self, value: float = 0.0) -> None:
        self.weights = np.full(4, value)
        self.meta: dict[str, Any] = {"value": value}

    def get_state(self) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        return {"w": self.weights.copy()}, dict(self.meta)

    def set_state(self, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
        self.weights = arrays["w"]
        self.meta = meta


def manager(root: Path, keep: int = 3) -> CheckpointManager:
    return CheckpointManager(
        LocalFolderStore(root), CheckpointConfig(keep=keep), group_id="g", topic="t"
    )


def test_round_trip_restores_state_and_offsets(tmp_path: Path) -> None:
    durable: list[dict[int, int]] = []
    m = manager(tmp_path)
    assert m.save(FakePipeline(1.5), {0: 10, 1: 7}, wait=True,
                  on_durable=lambda offsets, _s: durable.append(offsets))
    assert durable == [{0: 10, 1: 7}]

    restored_into = FakePipeline()
    restored = manager(tmp_path).restore_latest(restored_into)
    assert restored is not None
    assert restored.offsets == {0: 10, 1: 7}
    assert restored_into.weights.tolist() == [1.5] * 4
    assert restored_into.meta == {"value": 1.5}


def test_newest_complete_checkpoint_wins(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.save(FakePipeline(1.0), {0: 1}, wait=True)
    m.save(FakePipeline(2.0), {0: 2}, wait=True)
    # A crash mid-write leaves array files without a manifest: invisible to recovery.
    store = LocalFolderStore(tmp_path)
    store.put("checkpoints/g/t/00000001-000000000003/arrays/w.npy", b"partial")
    p = FakePipeline()
    restored = manager(tmp_path).restore_latest(p)
    assert restored is not None and restored.offsets == {0: 2}
    assert p.weights[0] == 2.0


def test_corrupt_checkpoint_falls_back_to_the_previous_one(tmp_path: Path) -> None:
    m = manager(tmp_path)
    m.save(FakePipeline(1.0), {0: 1}, wait=True)
    m.save(FakePipeline(2.0), {0: 2}, wait=True)
    [array_file] = (tmp_path / "checkpoints/g/t/00000001-000000000002").rglob("*.npy")
    data = bytearray(array_file.read_bytes())
    data[-1] ^= 0xFF
    array_file.write_bytes(bytes(data))
    p = FakePipeline()
    restored = manager(tmp_path).restore_latest(p)
    assert restored is not None and restored.offsets == {0: 1}


def test_new_checkpoints_number_past_leftovers(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    store.put("checkpoints/g/t/00000009-000000000009/arrays/w.npy", b"partial")
    m = manager(tmp_path)
    assert m.restore_latest(FakePipeline()) is None
    m.save(FakePipeline(3.0), {0: 3}, wait=True)
    assert any(k.startswith("checkpoints/g/t/00000010-000000000001/")
               for k in store.list("checkpoints/"))


def test_prune_keeps_the_newest(tmp_path: Path) -> None:
    m = manager(tmp_path, keep=2)
    for i in range(5):
        m.save(FakePipeline(float(i)), {0: i}, wait=True)
    names = {k.split("/")[3] for k in LocalFolderStore(tmp_path).list("checkpoints/g/t/")}
    assert names == {"00000001-000000000004", "00000001-000000000005"}


def test_store_failure_is_not_mistaken_for_no_checkpoint(tmp_path: Path) -> None:
    class DownStore(LocalFolderStore):
        def list(self, prefix: str) -> list[str]:
            raise StorageUnavailable("down")

    m = CheckpointManager(DownStore(tmp_path), CheckpointConfig(), group_id="g", topic="t")
    with pytest.raises(StorageUnavailable):
        m.restore_latest(FakePipeline())


def test_failed_write_is_reported_and_offsets_not_advanced(tmp_path: Path) -> None:
    class FailingStore(LocalFolderStore):
        def put(self, key: str, data: bytes) -> None:
            raise StorageUnavailable("down")

    m = CheckpointManager(FailingStore(tmp_path), CheckpointConfig(), group_id="g", topic="t")
    durable: list[dict[int, int]] = []
    with pytest.raises(StorageUnavailable):
        m.save(FakePipeline(), {0: 5}, wait=True,
               on_durable=lambda o, _s: durable.append(o))
    assert durable == []
    assert m.offsets() == {}
    assert m.failures == 1


def test_namespacing_round_trip() -> None:
    arrays, meta = namespaced({"a": ({"x": np.arange(3)}, {"k": 1}),
                               "b": ({"x": np.ones(2)}, {})})
    assert set(arrays) == {"a.x", "b.x"}
    assert meta == {"a": {"k": 1}, "b": {}}
    assert split_namespaced(arrays, "a")["x"].tolist() == [0, 1, 2]


def test_a_new_epoch_wins_over_a_former_leaders_later_write(tmp_path: Path) -> None:
    old_leader = manager(tmp_path)
    old_leader.save(FakePipeline(1.0), {0: 1}, wait=True)  # epoch 1
    new_leader = manager(tmp_path)
    assert new_leader.restore_latest(FakePipeline()) is not None
    new_leader.begin_epoch()  # epoch 2
    new_leader.save(FakePipeline(2.0), {0: 2}, wait=True)
    # The former leader, not knowing it lost the lease, writes again in epoch 1.
    for _ in range(3):
        old_leader.save(FakePipeline(9.0), {0: 9}, wait=True)
    p = FakePipeline()
    restored = manager(tmp_path, keep=10).restore_latest(p)
    assert restored is not None and restored.offsets == {0: 2}
    assert p.weights[0] == 2.0


def test_a_store_that_fails_the_prune_fails_neither_the_checkpoint_nor_the_caller(
    tmp_path: Path,
) -> None:
    # The store can die between the manifest landing and the prune's listing (CI saw it):
    # the checkpoint is durable all the same, and the old folders wait for the next prune.
    class DiesAfterWrites(LocalFolderStore):
        down = False

        def list(self, prefix: str) -> list[str]:
            if self.down:
                raise StorageUnavailable("down")
            return super().list(prefix)

    store = DiesAfterWrites(tmp_path)
    m = CheckpointManager(store, CheckpointConfig(keep=1), group_id="g", topic="t")
    m.save(FakePipeline(1.0), {0: 1}, wait=True)
    store.down = True
    durable: list[dict[int, int]] = []
    assert m.save(FakePipeline(2.0), {0: 2}, wait=True,
                  on_durable=lambda o, _s: durable.append(o))
    assert durable == [{0: 2}] and m.offsets() == {0: 2} and m.failures == 0
    store.down = False
    names = {k.split("/")[3] for k in store.list("checkpoints/g/t/")}
    assert names == {"00000001-000000000001", "00000001-000000000002"}
    m.save(FakePipeline(3.0), {0: 3}, wait=True)
    names = {k.split("/")[3] for k in store.list("checkpoints/g/t/")}
    assert names == {"00000001-000000000003"}
