"""The bundle: named numpy arrays plus a checksummed JSON manifest, written manifest-last.

A bundle is a "folder" of objects under a key prefix::

    <prefix>/arrays/<name>.npy     one file per array, numpy's .npy format
    <prefix>/manifest.json         written LAST: the commit point

Why ``.npy`` per array: it is numpy's own non-executable format (a short header with
dtype and shape, then the raw bytes), loads at memory speed with ``allow_pickle=False``,
can be checksummed and verified file by file, and lets the files of one bundle be
uploaded and downloaded in parallel. Object arrays are refused, so loading a bundle never
runs code.

The manifest names the format and its version, the bundle's ``kind`` (checkpoint or
snapshot), a free ``meta`` dict, and the sha256, size, dtype and shape of every file.
Because it is written after every file is complete, a crash mid-write leaves a bundle
without a manifest, which readers treat as absent; a bundle with a manifest whose files
do not match it (a flipped byte, a truncated upload) is refused with
:class:`BundleIntegrityError`.

Example
-------
>>> import tempfile, numpy as np
>>> from service.storage.local import LocalFolderStore
>>> store = LocalFolderStore(tempfile.mkdtemp())
>>> m = write_bundle(store, "ckpt/000001", {"w": np.arange(3.0)}, {"step": 7})
>>> arrays, manifest = read_bundle(store, "ckpt/000001")
>>> arrays["w"].tolist(), manifest.meta["step"], manifest.files["w"].size
([0.0, 1.0, 2.0], 7, 152)
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.lib.format as npy_format
import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.storage.errors import ObjectNotFound
from service.storage.objectstore import ObjectStore, join_key, validate_key

BUNDLE_FORMAT = "freshrec.bundle"
BUNDLE_FORMAT_VERSION = 1
#: Versions this code can read. A newer writer bumps the version when a reader of an
#: older one would misread the bundle; the older reader then refuses instead of guessing.
SUPPORTED_FORMAT_VERSIONS = frozenset({1})
MANIFEST_NAME = "manifest.json"

BundleKind = Literal["checkpoint", "snapshot", "shared"]
M = TypeVar("M", bound="BundleManifest")


class BundleError(Exception):
    """Base of the bundle errors."""


class BundleNotFound(BundleError):
    """No committed bundle (no manifest) at the prefix."""


class BundleIntegrityError(BundleError):
    """The bundle's files do not match its manifest, or the manifest is damaged."""


class UnsupportedFormatError(BundleError):
    """The manifest names a format or version this code cannot read."""


class FileEntry(BaseModel):
    """One array file of a bundle."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(description="Key of the file, relative to the bundle prefix.")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="Hex sha256 of the file.")
    size: int = Field(ge=0, description="Size of the file in bytes.")
    dtype: str = Field(description="numpy dtype string of the array, e.g. '<f4'.")
    shape: list[int] = Field(description="Shape of the array.")


class BundleManifest(BaseModel):
    """The commit record of a bundle."""

    model_config = ConfigDict(extra="forbid")

    format: Literal["freshrec.bundle"] = Field(
        default="freshrec.bundle", description="Format name."
    )
    format_version: int = Field(
        default=BUNDLE_FORMAT_VERSION, ge=1, description="Format version."
    )
    kind: BundleKind = Field(description="What the bundle holds.")
    created_at: datetime = Field(description="When the bundle was written (UTC).")
    meta: dict[str, Any] = Field(
        default_factory=dict, description="Free metadata of the writer."
    )
    files: dict[str, FileEntry] = Field(description="Array name -> file entry.")

    def to_json(self) -> bytes:
        """Canonical bytes (sorted keys, indented): what is stored and checksummed."""
        return orjson.dumps(
            self.model_dump(mode="json"), option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS
        )

    def sha256(self) -> str:
        """Checksum of :meth:`to_json`, e.g. for a pointer that pins this exact manifest."""
        return hashlib.sha256(self.to_json()).hexdigest()

    def total_bytes(self) -> int:
        return sum(f.size for f in self.files.values())


def array_key(name: str) -> str:
    """Relative key of array ``name`` inside a bundle."""
    return f"arrays/{validate_key(name)}.npy"


def _npy_bytes(array: npt.NDArray[Any]) -> bytes:
    """The ``.npy`` file of ``array``, byte for byte what :func:`numpy.save` writes.

    ``np.save`` into a ``BytesIO`` and ``getvalue()`` copy the data twice; a checkpoint of
    a million-user model holds several 128 MB arrays, so the header is written alone and
    joined to a view of the array: one copy, a third less transient memory per write.
    """
    a = np.asarray(array, order="C")  # not ascontiguousarray: it makes 0-d arrays 1-d
    if a.dtype.hasobject or a.dtype.names is not None:
        buf = io.BytesIO()  # structured dtypes: leave the header details to numpy
        np.save(buf, a, allow_pickle=False)
        return buf.getvalue()
    header = io.BytesIO()
    npy_format.write_array_header_1_0(header, npy_format.header_data_from_array_1_0(a))
    data = a.reshape(-1).view(np.uint8).data if a.size else memoryview(b"")
    return b"".join((header.getvalue(), data))


def _map(fn: Callable[[Any], Any], items: Sequence[Any], threads: int) -> list[Any]:
    # hashlib and socket/file I/O release the GIL, so a few threads overlap hashing,
    # uploads and downloads of the different files of a bundle.
    if threads <= 1 or len(items) <= 1:
        return [fn(x) for x in items]
    with ThreadPoolExecutor(max_workers=min(threads, len(items))) as pool:
        return list(pool.map(fn, items))


def write_bundle(
    store: ObjectStore,
    prefix: str,
    arrays: Mapping[str, npt.NDArray[Any]],
    meta: Mapping[str, Any],
    *,
    kind: BundleKind = "checkpoint",
    io_threads: int = 4,
    created_at: datetime | None = None,
) -> BundleManifest:
    """Write ``arrays`` and then the manifest under ``prefix``; return the manifest.

    Array names are key-like (``user_factors``, ``encoding/user_vocab``). ``meta`` must be
    JSON-serialisable. Writing over an existing bundle first removes its manifest, so a
    crash half way leaves no bundle rather than a mix of old and new files.
    """
    prefix = validate_key(prefix.strip("/"))
    if not arrays:
        raise ValueError("a bundle needs at least one array")
    items: list[tuple[str, npt.NDArray[Any]]] = []
    for name, arr in arrays.items():
        array_key(name)  # validates the name
        a = np.asarray(arr)
        if a.dtype.hasobject:
            raise ValueError(
                f"array {name!r} has dtype {a.dtype} holding Python objects, which cannot "
                "be stored without pickle; convert it to a numeric, bool or fixed-width "
                "string dtype"
            )
        items.append((name, a))
    try:
        orjson.dumps(dict(meta))
    except TypeError as exc:
        raise ValueError(f"bundle meta must be JSON-serialisable: {exc}") from exc

    manifest_key = join_key(prefix, MANIFEST_NAME)
    if store.exists(manifest_key):
        store.delete(manifest_key)

    def put_one(item: tuple[str, npt.NDArray[Any]]) -> tuple[str, FileEntry]:
        name, a = item
        data = _npy_bytes(a)
        rel = array_key(name)
        store.put(join_key(prefix, rel), data)
        return name, FileEntry(
            path=rel,
            sha256=hashlib.sha256(data).hexdigest(),
            size=len(data),
            dtype=a.dtype.str,
            shape=list(a.shape),
        )

    files = dict(_map(put_one, items, io_threads))
    manifest = BundleManifest(
        kind=kind,
        created_at=created_at or datetime.now(UTC),
        meta=dict(meta),
        files=files,
    )
    store.put(manifest_key, manifest.to_json())
    return manifest


def parse_manifest(raw: bytes, where: str, model: type[M]) -> M:
    """Validate manifest bytes into ``model``, refusing unknown formats and versions."""
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise BundleIntegrityError(
            f"manifest of {where} is not valid JSON ({exc}); it is truncated or damaged"
        ) from exc
    if not isinstance(doc, dict):
        raise BundleIntegrityError(f"manifest of {where} is not a JSON object")
    fmt, version = doc.get("format"), doc.get("format_version")
    if fmt != BUNDLE_FORMAT:
        raise UnsupportedFormatError(
            f"{where} has format {fmt!r}, expected {BUNDLE_FORMAT!r}; it was not written "
            "by freshrec"
        )
    if version not in SUPPORTED_FORMAT_VERSIONS:
        raise UnsupportedFormatError(
            f"{where} has {BUNDLE_FORMAT} version {version!r}, but this freshrec reads "
            f"versions {sorted(SUPPORTED_FORMAT_VERSIONS)}; upgrade freshrec to read it"
        )
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        raise BundleIntegrityError(f"manifest of {where} is malformed: {exc}") from exc


def read_manifest(
    store: ObjectStore,
    prefix: str,
    *,
    model: type[M] = BundleManifest,  # type: ignore[assignment]
    expected_sha256: str | None = None,
) -> M:
    """The committed manifest at ``prefix``; :class:`BundleNotFound` if there is none."""
    prefix = validate_key(prefix.strip("/"))
    where = f"bundle {prefix!r} in {store.url}"
    try:
        raw = store.get(join_key(prefix, MANIFEST_NAME))
    except ObjectNotFound as exc:
        raise BundleNotFound(
            f"no bundle at {prefix!r} in {store.url} (no {MANIFEST_NAME}: never written, "
            "still being written, or deleted)"
        ) from exc
    if expected_sha256 is not None:
        actual = hashlib.sha256(raw).hexdigest()
        if actual != expected_sha256:
            raise BundleIntegrityError(
                f"manifest of {where} has sha256 {actual}, but the pointer to it says "
                f"{expected_sha256}: it was modified after publication"
            )
    return parse_manifest(raw, where, model)


def _load_npy(data: bytes, name: str, where: str) -> npt.NDArray[Any]:
    try:
        return np.load(io.BytesIO(data), allow_pickle=False)  # type: ignore[no-any-return]
    except (ValueError, EOFError, OSError) as exc:
        raise BundleIntegrityError(f"array {name!r} of {where} cannot be decoded: {exc}") from exc


def read_bundle(
    store: ObjectStore,
    prefix: str,
    verify: bool = True,
    *,
    model: type[M] = BundleManifest,  # type: ignore[assignment]
    expected_kind: BundleKind | None = None,
    expected_manifest_sha256: str | None = None,
    io_threads: int = 4,
) -> tuple[dict[str, npt.NDArray[Any]], M]:
    """Load every array of the bundle at ``prefix`` and its manifest.

    With ``verify`` (the default) each file's size and sha256 are checked against the
    manifest before it is decoded; without it only sizes, dtypes and shapes are checked.

    Raises
    ------
    BundleNotFound
        No manifest at ``prefix``.
    UnsupportedFormatError
        Unknown format name or version.
    BundleIntegrityError
        A file is missing, truncated, modified, or does not decode to the recorded
        dtype and shape; or the manifest itself is damaged.
    """
    manifest = read_manifest(store, prefix, model=model, expected_sha256=expected_manifest_sha256)
    prefix = prefix.strip("/")
    where = f"bundle {prefix!r} in {store.url}"
    if expected_kind is not None and manifest.kind != expected_kind:
        raise BundleIntegrityError(f"{where} is a {manifest.kind}, expected a {expected_kind}")

    def load(item: tuple[str, FileEntry]) -> tuple[str, npt.NDArray[Any]]:
        name, entry = item
        try:
            data = store.get(join_key(prefix, validate_key(entry.path)))
        except ObjectNotFound as exc:
            raise BundleIntegrityError(
                f"file {entry.path!r} listed in the manifest of {where} is missing"
            ) from exc
        if len(data) != entry.size:
            raise BundleIntegrityError(
                f"file {entry.path!r} of {where} has {len(data)} bytes, the manifest says "
                f"{entry.size}: it is truncated or was rewritten"
            )
        if verify:
            actual = hashlib.sha256(data).hexdigest()
            if actual != entry.sha256:
                raise BundleIntegrityError(
                    f"file {entry.path!r} of {where} has sha256 {actual}, the manifest says "
                    f"{entry.sha256}: it was modified or corrupted; refusing to load it"
                )
        arr = _load_npy(data, name, where)
        if arr.dtype.str != entry.dtype or list(arr.shape) != entry.shape:
            raise BundleIntegrityError(
                f"array {name!r} of {where} is {arr.dtype.str}{list(arr.shape)}, the "
                f"manifest says {entry.dtype}{entry.shape}"
            )
        return name, arr

    arrays = dict(_map(load, list(manifest.files.items()), io_threads))
    return arrays, manifest


def bundle_exists(store: ObjectStore, prefix: str) -> bool:
    """Whether a committed bundle (one with a manifest) is at ``prefix``."""
    return store.exists(join_key(validate_key(prefix.strip("/")), MANIFEST_NAME))


def delete_bundle(store: ObjectStore, prefix: str) -> int:
    """Delete the bundle at ``prefix``, manifest first so it vanishes before its files do.

    Also removes files of an uncommitted bundle. Returns the number of objects deleted.
    """
    prefix = validate_key(prefix.strip("/"))
    manifest_key = join_key(prefix, MANIFEST_NAME)
    keys = store.list(prefix + "/")
    n = 0
    if manifest_key in keys:
        store.delete(manifest_key)
        n += 1
    for key in keys:
        if key != manifest_key:
            store.delete(key)
            n += 1
    return n
