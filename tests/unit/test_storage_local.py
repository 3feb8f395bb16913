"""LocalFolderStore, store URLs and the retry policy."""

from __future__ import annotations

import errno
import os
import random
import socket
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service.storage import (
    InvalidKey,
    LocalFolderStore,
    ObjectNotFound,
    RetryPolicy,
    StorageConfig,
    StorageError,
    StorageUnavailable,
    open_store,
    parse_store_url,
)
from service.storage.backoff import RetriesExhausted
from service.storage.s3 import S3Store

segment = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,8}", fullmatch=True)
keys = st.lists(segment, min_size=1, max_size=4).map("/".join)


def test_put_get_exists_list_delete(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "s")
    assert store.list() == [] and not store.exists("a/b")
    store.put("a/b", b"1")
    store.put("a/c/d", b"22")
    store.put("ab", b"3")
    assert store.get("a/c/d") == b"22"
    assert store.list("a/") == ["a/b", "a/c/d"]
    assert store.list("a") == ["a/b", "a/c/d", "ab"]  # S3 semantics: string prefix
    store.put("a/b", b"new")
    assert store.get("a/b") == b"new"
    store.delete("a/c/d")
    store.delete("a/c/d")  # idempotent
    assert store.list() == ["a/b", "ab"]
    assert not (tmp_path / "s" / "a" / "c").exists()  # empty folders pruned


def test_missing_object_and_missing_root_are_not_found(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path / "nope")
    with pytest.raises(ObjectNotFound, match="no object 'x'"):
        store.get("x")
    assert not (tmp_path / "nope").exists()  # reading never creates the folder


def test_temp_files_of_interrupted_writes_are_invisible(tmp_path: Path) -> None:
    store = LocalFolderStore(tmp_path)
    store.put("m/latest", b"v1")
    (tmp_path / "m" / ".latest.tmp-deadbeef").write_bytes(b"half")
    assert store.list() == ["m/latest"]
    assert store.get("m/latest") == b"v1"


def test_put_failure_leaves_old_object_and_no_temp(tmp_path: Path, monkeypatch) -> None:
    store = LocalFolderStore(tmp_path, retry=RetryPolicy(retries=0))
    store.put("k", b"old")

    def boom(src: object, dst: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(StorageError, match="disk full"):
        store.put("k", b"new")
    monkeypatch.undo()
    assert store.get("k") == b"old"
    assert sorted(os.listdir(tmp_path)) == ["k"]


@pytest.mark.parametrize(
    "key", ["", "/abs", "a//b", "../x", "a/../b", "a/./b", ".hidden", "a/", "a\\b", "é"]
)
def test_bad_keys_are_refused(tmp_path: Path, key: str) -> None:
    with pytest.raises(InvalidKey):
        LocalFolderStore(tmp_path).put(key, b"")


@settings(max_examples=40, deadline=None)
@given(entries=st.dictionaries(keys, st.binary(max_size=64), max_size=6))
def test_store_behaves_like_a_dict(tmp_path_factory: pytest.TempPathFactory,
                                   entries: dict[str, bytes]) -> None:
    store = LocalFolderStore(tmp_path_factory.mktemp("prop"))
    # A key cannot also be a "folder" of another key on a filesystem: keep a prefix-free set.
    clean = {k: v for k, v in entries.items()
             if not any(o != k and o.startswith(k + "/") for o in entries)
             and not any(o != k and k.startswith(o + "/") for o in entries)}
    for k, v in clean.items():
        store.put(k, v)
    assert store.list() == sorted(clean)
    for k, v in clean.items():
        assert store.get(k) == v


def test_urls() -> None:
    assert parse_store_url("s3://freshrec/a/b/") == ("s3", "freshrec", "a/b")
    assert parse_store_url("s3://freshrec") == ("s3", "freshrec", "")
    assert parse_store_url("file://./rel") == ("file", "./rel", "")
    assert parse_store_url("file:///abs/x") == ("file", "/abs/x", "")
    assert parse_store_url("/plain/path") == ("file", "/plain/path", "")
    with pytest.raises(ValueError, match="unsupported store URL scheme 'gs'"):
        parse_store_url("gs://b/p")
    with pytest.raises(ValueError, match="not a valid S3 bucket name"):
        parse_store_url("s3://Bad_Bucket/p")
    with pytest.raises(ValueError, match="empty"):
        parse_store_url("")


def test_open_store_picks_backend(tmp_path: Path) -> None:
    local = open_store(StorageConfig(url=f"file://{tmp_path}"))
    assert isinstance(local, LocalFolderStore) and local.root == tmp_path
    s3 = open_store(StorageConfig(url="s3://bucket-x/pre", endpoint_url="http://127.0.0.1:1",
                                  access_key="a", secret_key="b"))  # type: ignore[arg-type]
    assert isinstance(s3, S3Store) and s3.url == "s3://bucket-x/pre"


def test_retry_policy_backs_off_with_jitter_then_gives_up() -> None:
    sleeps: list[float] = []
    policy = RetryPolicy(retries=4, base_s=0.1, max_s=0.3, sleep=sleeps.append,
                         rng=random.Random(1))
    calls = []

    def always_down() -> None:
        calls.append(1)
        raise ConnectionRefusedError("down")

    with pytest.raises(RetriesExhausted) as info:
        policy.run(always_down, lambda e: isinstance(e, ConnectionError))
    assert len(calls) == 5 and info.value.attempts == 5
    caps = [0.1, 0.2, 0.3, 0.3]
    assert len(sleeps) == 4 and all(0 <= s <= c for s, c in zip(sleeps, caps, strict=True))
    # Non-transient errors are not retried.
    calls.clear()
    with pytest.raises(KeyError):
        policy.run(lambda: calls.append(1) or {}["x"], lambda e: False)
    assert len(calls) == 1


def test_local_store_retries_transient_os_errors(tmp_path: Path, monkeypatch) -> None:
    store = LocalFolderStore(tmp_path, retry=RetryPolicy(retries=3, sleep=lambda s: None))
    real_replace = os.replace
    failures = [OSError(errno.EBUSY, "busy"), OSError(errno.EAGAIN, "again")]

    def flaky(src: str, dst: str) -> None:
        if failures:
            raise failures.pop(0)
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", flaky)
    store.put("k", b"v")
    assert store.get("k") == b"v" and not failures


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_s3_store_down_raises_storage_unavailable_naming_url() -> None:
    port = _closed_port()
    store = S3Store("freshrec", "t", endpoint_url=f"http://127.0.0.1:{port}", access_key="a",
                    secret_key="b", connect_timeout_s=0.5,
                    retry=RetryPolicy(retries=2, sleep=lambda s: None))
    with pytest.raises(StorageUnavailable) as info:
        store.put("x", b"1")
    msg = str(info.value)
    assert "s3://freshrec/t" in msg and f"127.0.0.1:{port}" in msg
    assert "3 times" in msg and "Is the S3 server up" in msg
    with pytest.raises(StorageUnavailable):
        store.get("x")


def test_s3_store_requires_secret_with_key() -> None:
    with pytest.raises(ValueError, match="SECRET_KEY"):
        S3Store("freshrec", access_key="a")
