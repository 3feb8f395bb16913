"""The snapshot registry: versions, the ``latest`` pointer, pins, retention and rollback.

Layout in the object store, for a model named ``default``::

    models/default/versions/000041/manifest.json      one bundle per published version
    models/default/versions/000041/arrays/model/...
    models/default/versions/000042/...
    models/default/latest                               {"version": "000042", ...}
    models/default/pins/000017                          pinned: never deleted by retention

Versions are zero-padded increasing integers. ``latest`` is moved only after a
version's files and manifest are complete, and it records the sha256 of that manifest, so
a reader of ``latest`` also detects a manifest changed after publication. Rollback simply
points ``latest`` at another complete (and verified) version. Retention keeps the newest
``keep`` versions, every pinned one and whatever ``latest`` points at.

One process publishes a given model at a time (the runtime that owns its consumer group);
the CLI only moves ``latest`` and pins.

Example
-------
>>> import tempfile, numpy as np
>>> from service.storage.local import LocalFolderStore
>>> reg = SnapshotRegistry(LocalFolderStore(tempfile.mkdtemp()), "default")
>>> reg.latest_version() is None, reg.next_version()
(True, '000001')
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal

import numpy.typing as npt
import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from service.snapshots.manifest import VERSION_RE, SnapshotManifest, SnapshotMeta
from service.storage.bundle import (
    MANIFEST_NAME,
    BundleIntegrityError,
    BundleNotFound,
    delete_bundle,
    read_bundle,
    read_manifest,
    write_bundle,
)
from service.storage.errors import ObjectNotFound
from service.storage.objectstore import ObjectStore, join_key, validate_key

log = logging.getLogger(__name__)


class SnapshotNotFound(LookupError):
    """The model has no such version (or nothing published yet)."""


class LatestPointer(BaseModel):
    """Content of ``models/<name>/latest``."""

    model_config = ConfigDict(extra="forbid")

    version: str = Field(pattern=r"^[0-9]{6,}$")
    manifest_sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    updated_at: datetime
    action: Literal["publish", "rollback"] = "publish"


def normalize_version(version: str | int) -> str:
    """``42``, ``"42"`` or ``"000042"`` -> ``"000042"``.

    >>> normalize_version("42"), normalize_version(1234567)
    ('000042', '1234567')
    """
    text = str(version).strip()
    if not text.isdigit():
        raise ValueError(f"snapshot version {version!r} is not a number (e.g. 42 or 000042)")
    return f"{int(text):06d}"


class SnapshotRegistry:
    """Read and write the snapshots of one model in a store.

    Parameters
    ----------
    store
        Where snapshots live.
    model_name
        The model's name (a key segment).
    io_threads
        Files of one snapshot transferred concurrently.
    """

    def __init__(self, store: ObjectStore, model_name: str = "default", io_threads: int = 4):
        validate_key(model_name)
        if "/" in model_name:
            raise ValueError(f"model name {model_name!r} must not contain '/'")
        self.store = store
        self.model_name = model_name
        self.io_threads = io_threads
        self.root = f"models/{model_name}"

    def __repr__(self) -> str:
        return f"SnapshotRegistry({self.store.url!r}, {self.model_name!r})"

    # -- keys ---------------------------------------------------------------------------
    def version_prefix(self, version: str) -> str:
        return join_key(self.root, "versions", normalize_version(version))

    @property
    def latest_key(self) -> str:
        return join_key(self.root, "latest")

    def pin_key(self, version: str) -> str:
        return join_key(self.root, "pins", normalize_version(version))

    # -- listing ------------------------------------------------------------------------
    def _version_keys(self) -> dict[str, list[str]]:
        base = join_key(self.root, "versions") + "/"
        out: dict[str, list[str]] = {}
        for key in self.store.list(base):
            version = key[len(base):].split("/", 1)[0]
            if VERSION_RE.match(version):
                out.setdefault(version, []).append(key)
        return out

    def versions(self) -> list[str]:
        """Complete (committed) versions, oldest first."""
        found = self._version_keys()
        done = [
            v for v, keys in found.items()
            if join_key(self.root, "versions", v, MANIFEST_NAME) in keys
        ]
        return sorted(done, key=int)

    def next_version(self) -> str:
        """One above every version folder, complete or not (so none is ever reused)."""
        found = self._version_keys()
        return normalize_version(max((int(v) for v in found), default=0) + 1)

    def pinned(self) -> set[str]:
        base = join_key(self.root, "pins") + "/"
        return {k[len(base):] for k in self.store.list(base) if VERSION_RE.match(k[len(base):])}

    # -- the latest pointer -------------------------------------------------------------
    def read_pointer(self) -> LatestPointer | None:
        """The ``latest`` pointer, or None if nothing was published."""
        try:
            raw = self.store.get(self.latest_key)
        except ObjectNotFound:
            return None
        try:
            return LatestPointer.model_validate(orjson.loads(raw))
        except (orjson.JSONDecodeError, ValidationError) as exc:
            raise BundleIntegrityError(
                f"{self.latest_key!r} in {self.store.url} is damaged ({exc}); repair it with "
                "'freshrec snapshots rollback VERSION'"
            ) from exc

    def latest_version(self) -> str | None:
        """The version ``latest`` names (one small GET: cheap enough to poll)."""
        pointer = self.read_pointer()
        return pointer.version if pointer else None

    def point_latest(self, version: str, manifest_sha256: str, action: str) -> LatestPointer:
        """Write ``latest`` (no checks: callers have just written or verified ``version``)."""
        pointer = LatestPointer(
            version=version,
            manifest_sha256=manifest_sha256,
            updated_at=datetime.now(UTC),
            action=action,  # type: ignore[arg-type]
        )
        self.store.put(
            self.latest_key,
            orjson.dumps(pointer.model_dump(mode="json"), option=orjson.OPT_INDENT_2),
        )
        return pointer

    # -- reading ------------------------------------------------------------------------
    def resolve(self, version: str = "latest") -> tuple[str, str | None]:
        """``(version, expected manifest sha256 or None)`` for a version or ``"latest"``."""
        if version == "latest":
            pointer = self.read_pointer()
            if pointer is None:
                raise SnapshotNotFound(
                    f"model {self.model_name!r} has no published snapshot in {self.store.url}"
                )
            return pointer.version, pointer.manifest_sha256
        return normalize_version(version), None

    def manifest(self, version: str = "latest") -> SnapshotManifest:
        v, sha = self.resolve(version)
        try:
            return read_manifest(
                self.store, self.version_prefix(v), model=SnapshotManifest, expected_sha256=sha
            )
        except BundleNotFound as exc:
            raise SnapshotNotFound(
                f"model {self.model_name!r} has no complete version {v} in {self.store.url}"
            ) from exc

    def read(
        self, version: str = "latest", verify: bool = True
    ) -> tuple[dict[str, npt.NDArray[Any]], SnapshotManifest]:
        """Every array of a snapshot (checksums verified) and its manifest."""
        v, sha = self.resolve(version)
        try:
            return read_bundle(
                self.store,
                self.version_prefix(v),
                verify,
                model=SnapshotManifest,
                expected_kind="snapshot",
                expected_manifest_sha256=sha,
                io_threads=self.io_threads,
            )
        except BundleNotFound as exc:
            raise SnapshotNotFound(
                f"model {self.model_name!r} has no complete version {v} in {self.store.url}"
            ) from exc

    # -- writing ------------------------------------------------------------------------
    def write(
        self, arrays: Mapping[str, npt.NDArray[Any]], meta: SnapshotMeta
    ) -> SnapshotManifest:
        """Write the bundle of version ``meta.version`` (does not move ``latest``)."""
        if meta.model_name != self.model_name:
            raise ValueError(f"meta is for model {meta.model_name!r}, not {self.model_name!r}")
        written = write_bundle(
            self.store,
            self.version_prefix(meta.version),
            arrays,
            meta.model_dump(mode="json"),
            kind="snapshot",
            io_threads=self.io_threads,
        )
        return SnapshotManifest.model_validate(written.model_dump())

    def set_latest(self, version: str, *, action: str = "publish", verify: bool = True) -> str:
        """Point ``latest`` at a complete version; with ``verify`` its files are checked first.

        Returns the version. This is rollback when ``version`` is older than the current one.
        """
        v = normalize_version(version)
        if verify:
            _, manifest = self.read(v, verify=True)
        else:
            manifest = self.manifest(v)
        self.point_latest(v, manifest.sha256(), action)
        return v

    def rollback(self, version: str) -> str:
        """Point ``latest`` at ``version`` after verifying it; the runtime notices and adopts it."""
        return self.set_latest(version, action="rollback", verify=True)

    def pin(self, version: str, note: str = "") -> None:
        v = normalize_version(version)
        if v not in self.versions():
            raise SnapshotNotFound(f"model {self.model_name!r} has no complete version {v}")
        doc = {"pinned_at": datetime.now(UTC).isoformat(), "note": note}
        self.store.put(self.pin_key(v), orjson.dumps(doc))

    def unpin(self, version: str) -> None:
        self.store.delete(self.pin_key(version))

    def apply_retention(self, keep: int) -> list[str]:
        """Delete versions beyond the newest ``keep``, except pinned ones and ``latest``.

        Incomplete folders (a crash mid-publication) older than the newest complete
        version are removed too. Returns the versions deleted.
        """
        if keep < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        found = self._version_keys()
        complete = self.versions()
        protected = set(complete[-keep:]) | self.pinned()
        latest = self.latest_version()
        if latest:
            protected.add(latest)
        newest = int(complete[-1]) if complete else 0
        doomed = [
            v for v in sorted(found, key=int)
            if v not in protected and (v in complete or int(v) < newest)
        ]
        for v in doomed:
            delete_bundle(self.store, self.version_prefix(v))
            log.info("retention deleted %s version %s", self.model_name, v)
        return doomed
