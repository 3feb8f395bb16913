"""An object store in a local folder, with atomic, durable writes.

Parameters
----------
root
    The folder. It is created on the first write, not before: a reader pointed at a
    wrong path gets a clear "not found" instead of a fresh empty folder.
retry
    Backoff policy for transient OS errors (``EAGAIN``, ``EBUSY``, ``ESTALE`` on network
    filesystems ...).

Example
-------
>>> import tempfile
>>> store = LocalFolderStore(tempfile.mkdtemp())
>>> store.put("models/m/latest", b"{}")
>>> store.list("models/"), store.get("models/m/latest")
(['models/m/latest'], b'{}')
"""

from __future__ import annotations

import contextlib
import errno
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from service.storage.backoff import RetriesExhausted, RetryPolicy
from service.storage.errors import ObjectNotFound, StorageError, StorageUnavailable
from service.storage.objectstore import validate_key, validate_prefix

T = TypeVar("T")

_TRANSIENT_ERRNOS = frozenset(
    {errno.EAGAIN, errno.EBUSY, errno.EINTR, errno.ETIMEDOUT, getattr(errno, "ESTALE", -1)}
)
# In-flight writes are dot-files (keys can never start with "."), so list() skips them
# and a crash leaves at worst an invisible temp file behind.
_TMP_MARK = ".tmp-"


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNOS


class LocalFolderStore:
    """Objects as files under ``root``: ``put`` writes a temp file, fsyncs, then renames."""

    def __init__(self, root: str | os.PathLike[str], *, retry: RetryPolicy | None = None) -> None:
        self.root = Path(root).expanduser().absolute()
        self.url = f"file://{self.root}"
        self._retry = retry or RetryPolicy()

    def __repr__(self) -> str:
        return f"LocalFolderStore({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        return self.root.joinpath(*validate_key(key).split("/"))

    def _run(self, what: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return self._retry.run(fn, _is_transient)
        except RetriesExhausted as exc:
            raise StorageUnavailable(
                f"{what} {key!r} in {self.url} kept failing after {exc.attempts} attempts "
                f"({exc.last}); is the filesystem (or network mount) healthy?"
            ) from exc
        except FileNotFoundError as exc:
            raise ObjectNotFound(f"no object {key!r} in {self.url}") from exc
        except PermissionError as exc:
            raise StorageError(
                f"{what} {key!r} in {self.url} was denied ({exc}); check the folder's "
                "owner and permissions"
            ) from exc
        except OSError as exc:
            raise StorageError(
                f"{what} {key!r} in {self.url} failed ({exc}); is the disk full or read-only?"
            ) from exc

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)

        def write() -> None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}{_TMP_MARK}{uuid.uuid4().hex}")
            try:
                with open(tmp, "wb") as f:
                    f.write(data)
                    f.flush()
                    # fsync before the rename: otherwise a power cut can leave the new
                    # name pointing at an empty file.
                    os.fsync(f.fileno())
                os.replace(tmp, path)
            except BaseException:
                with contextlib.suppress(OSError):
                    tmp.unlink()
                raise
            _fsync_dir(path.parent)

        self._run("writing", key, write)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        return self._run("reading", key, path.read_bytes)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        # Walk only the deepest folder the prefix is sure to be inside.
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        if not base.is_dir():
            return []
        keys = [k for k in self._walk(base) if k.startswith(prefix)]
        keys.sort()
        return keys

    def _walk(self, base: Path) -> Iterator[str]:
        root_len = len(str(self.root)) + 1
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            rel = dirpath[root_len:].replace(os.sep, "/")
            for name in filenames:
                if name.startswith("."):
                    continue  # temp files of in-flight writes
                yield f"{rel}/{name}" if rel else name

    def delete(self, key: str) -> None:
        path = self._path(key)

        def unlink() -> None:
            path.unlink(missing_ok=True)
            # Prune folders left empty, so listings and `ls` stay tidy.
            parent = path.parent
            while parent != self.root and parent.is_relative_to(self.root):
                try:
                    parent.rmdir()
                except OSError:
                    break
                parent = parent.parent

        self._run("deleting", key, unlink)


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the directory entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # e.g. platforms where directories cannot be opened
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
