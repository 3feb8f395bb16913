"""The bundle format: round trips, refusal of damaged bundles, manifest-last commit."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from service.storage import (
    BundleIntegrityError,
    BundleNotFound,
    LocalFolderStore,
    UnsupportedFormatError,
    bundle_exists,
    delete_bundle,
    read_bundle,
    read_manifest,
    write_bundle,
)
from service.storage.bundle import MANIFEST_NAME, _npy_bytes


def _arrays() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {
        "user_factors": rng.normal(size=(50, 8)).astype(np.float32),
        "item_bias": rng.normal(size=40),
        "interactions.seen": rng.integers(0, 40, size=(50, 4)),
        "encoding/vocab": np.array(["", "alice", "bob"]),
        "flag": np.array(True),
    }


@pytest.fixture
def store(tmp_path: Path) -> LocalFolderStore:
    return LocalFolderStore(tmp_path)


def test_round_trip_with_meta(store: LocalFolderStore) -> None:
    arrays = _arrays()
    written = write_bundle(store, "b/1", arrays, {"step": 3, "nested": {"a": [1, 2]}},
                           kind="snapshot")
    loaded, manifest = read_bundle(store, "b/1")
    assert manifest == written and manifest.kind == "snapshot"
    assert manifest.meta == {"step": 3, "nested": {"a": [1, 2]}}
    assert set(loaded) == set(arrays)
    for name, a in arrays.items():
        assert loaded[name].dtype == a.dtype
        np.testing.assert_array_equal(loaded[name], a)
    assert store.list("b/1/")[-1] == "b/1/manifest.json"


@settings(max_examples=30, deadline=None)
@given(arr=hnp.arrays(
    dtype=st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.uint8, np.bool_]),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, max_side=5),
))
def test_any_numeric_array_round_trips_bit_exactly(tmp_path_factory: pytest.TempPathFactory,
                                                   arr: np.ndarray) -> None:
    store = LocalFolderStore(tmp_path_factory.mktemp("rt"))
    write_bundle(store, "x", {"a": arr}, {})
    out, _ = read_bundle(store, "x")
    assert out["a"].dtype == arr.dtype and out["a"].shape == arr.shape
    assert out["a"].tobytes() == arr.tobytes()  # bit-exact, NaNs included


@settings(max_examples=60, deadline=None)
@given(arr=hnp.arrays(
    dtype=st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(), hnp.unicode_string_dtypes()),
    shape=hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=5),
), fortran=st.booleans())
def test_array_files_are_exactly_what_numpy_save_writes(arr: np.ndarray,
                                                        fortran: bool) -> None:
    # Bundles written before _npy_bytes stopped calling np.save must stay byte-identical
    # (same checksums), and np.load must read what we write.
    if fortran:
        arr = np.asfortranarray(arr)
    expected = io.BytesIO()
    np.save(expected, np.asarray(arr, order="C"), allow_pickle=False)
    data = _npy_bytes(arr)
    assert data == expected.getvalue()
    back = np.load(io.BytesIO(data), allow_pickle=False)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    assert back.tobytes() == np.asarray(arr, order="C").tobytes()


def _file(store: LocalFolderStore, key: str) -> Path:
    return store.root / key


def test_flipped_byte_is_refused(store: LocalFolderStore) -> None:
    write_bundle(store, "b", _arrays(), {})
    path = _file(store, "b/arrays/user_factors.npy")
    data = bytearray(path.read_bytes())
    data[-7] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(BundleIntegrityError, match=r"user_factors\.npy.*sha256.*modified"):
        read_bundle(store, "b")
    # Without verification a same-size flip goes unnoticed: that is what verify is for.
    loaded, _ = read_bundle(store, "b", verify=False)
    assert loaded["user_factors"].shape == (50, 8)


@pytest.mark.parametrize("verify", [True, False])
def test_truncated_file_is_refused(store: LocalFolderStore, verify: bool) -> None:
    write_bundle(store, "b", _arrays(), {})
    path = _file(store, "b/arrays/item_bias.npy")
    path.write_bytes(path.read_bytes()[:-5])
    with pytest.raises(BundleIntegrityError, match="truncated"):
        read_bundle(store, "b", verify=verify)


def test_missing_file_is_refused(store: LocalFolderStore) -> None:
    write_bundle(store, "b", _arrays(), {})
    store.delete("b/arrays/flag.npy")
    with pytest.raises(BundleIntegrityError, match="missing"):
        read_bundle(store, "b")


def _rewrite_manifest(store: LocalFolderStore, prefix: str, **changes: object) -> None:
    key = f"{prefix}/{MANIFEST_NAME}"
    doc = orjson.loads(store.get(key))
    doc.update(changes)
    store.put(key, orjson.dumps(doc))


def test_unknown_format_version_is_refused(store: LocalFolderStore) -> None:
    write_bundle(store, "b", _arrays(), {})
    _rewrite_manifest(store, "b", format_version=2)
    with pytest.raises(UnsupportedFormatError, match=r"version 2.*upgrade freshrec"):
        read_bundle(store, "b")


def test_unknown_format_name_is_refused(store: LocalFolderStore) -> None:
    write_bundle(store, "b", _arrays(), {})
    _rewrite_manifest(store, "b", format="something.else")
    with pytest.raises(UnsupportedFormatError, match="not written by freshrec"):
        read_bundle(store, "b")


def test_damaged_manifest_is_refused(store: LocalFolderStore) -> None:
    write_bundle(store, "b", _arrays(), {})
    key = f"b/{MANIFEST_NAME}"
    store.put(key, store.get(key)[:40])
    with pytest.raises(BundleIntegrityError, match="not valid JSON"):
        read_bundle(store, "b")
    write_bundle(store, "c", _arrays(), {})
    _rewrite_manifest(store, "c", kind="weights")
    with pytest.raises(BundleIntegrityError, match="malformed"):
        read_bundle(store, "c")


def test_manifest_changed_after_the_fact_is_caught_by_expected_sha(
    store: LocalFolderStore,
) -> None:
    written = write_bundle(store, "b", _arrays(), {"step": 1})
    read_manifest(store, "b", expected_sha256=written.sha256())  # ok
    _rewrite_manifest(store, "b", meta={"step": 2})
    with pytest.raises(BundleIntegrityError, match="modified after publication"):
        read_bundle(store, "b", expected_manifest_sha256=written.sha256())


def test_shape_swap_with_matching_checksum_is_refused(store: LocalFolderStore) -> None:
    write_bundle(store, "b", {"a": np.zeros((2, 3)), "b": np.zeros((3, 2))}, {})
    doc = orjson.loads(store.get(f"b/{MANIFEST_NAME}"))
    doc["files"]["a"]["shape"] = [3, 2]
    store.put(f"b/{MANIFEST_NAME}", orjson.dumps(doc))
    with pytest.raises(BundleIntegrityError, match="manifest says"):
        read_bundle(store, "b")


def test_files_without_manifest_are_invisible(store: LocalFolderStore, monkeypatch) -> None:
    """A crash after the arrays but before the manifest leaves no bundle at all."""
    real_put = store.put

    def crash_on_manifest(key: str, data: bytes) -> None:
        if key.endswith(MANIFEST_NAME):
            raise KeyboardInterrupt("power cut")
        real_put(key, data)

    monkeypatch.setattr(store, "put", crash_on_manifest)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(store, "b", _arrays(), {})
    monkeypatch.undo()
    assert store.list("b/")  # the array files are there ...
    assert not bundle_exists(store, "b")  # ... but there is no bundle
    with pytest.raises(BundleNotFound, match=r"no manifest\.json"):
        read_bundle(store, "b")


def test_rewrite_removes_old_manifest_first(store: LocalFolderStore, monkeypatch) -> None:
    write_bundle(store, "b", {"a": np.zeros(3)}, {"v": 1})
    real_put = store.put

    def crash_on_array(key: str, data: bytes) -> None:
        if key.endswith(".npy"):
            raise KeyboardInterrupt("crash")
        real_put(key, data)

    monkeypatch.setattr(store, "put", crash_on_array)
    with pytest.raises(KeyboardInterrupt):
        write_bundle(store, "b", {"a": np.ones(3)}, {"v": 2}, io_threads=1)
    monkeypatch.undo()
    # Never a mix of the old manifest and new files: the bundle is simply gone.
    assert not bundle_exists(store, "b")


def test_pickle_is_never_used(store: LocalFolderStore) -> None:
    with pytest.raises(ValueError, match="without pickle"):
        write_bundle(store, "b", {"o": np.array([{"x": 1}], dtype=object)}, {})
    assert store.list() == []
    # A file smuggling a pickled object array behind a matching checksum is not loaded.
    write_bundle(store, "c", {"a": np.zeros(2)}, {})
    import hashlib
    import io
    buf = io.BytesIO()
    np.save(buf, np.array([1, "x"], dtype=object), allow_pickle=True)
    data = buf.getvalue()
    store.put("c/arrays/a.npy", data)
    doc = orjson.loads(store.get(f"c/{MANIFEST_NAME}"))
    doc["files"]["a"].update(size=len(data), sha256=hashlib.sha256(data).hexdigest())
    store.put(f"c/{MANIFEST_NAME}", orjson.dumps(doc))
    with pytest.raises(BundleIntegrityError, match="cannot be decoded"):
        read_bundle(store, "c")


def test_bad_inputs(store: LocalFolderStore) -> None:
    with pytest.raises(ValueError, match="at least one array"):
        write_bundle(store, "b", {}, {})
    with pytest.raises(ValueError, match="JSON-serialisable"):
        write_bundle(store, "b", {"a": np.zeros(1)}, {"x": object()})
    with pytest.raises(ValueError, match="segment"):
        write_bundle(store, "b", {"../a": np.zeros(1)}, {})


def test_delete_bundle_removes_manifest_first(store: LocalFolderStore, monkeypatch) -> None:
    write_bundle(store, "b", _arrays(), {})
    deleted: list[str] = []
    real = store.delete
    monkeypatch.setattr(store, "delete", lambda k: (deleted.append(k), real(k)))
    n = delete_bundle(store, "b")
    assert deleted[0] == f"b/{MANIFEST_NAME}" and n == len(_arrays()) + 1
    assert store.list() == []
