"""The object store protocol, key rules and ``open_store`` (URL -> backend).

Keys are relative, ``/``-separated paths such as ``models/default/latest``. The same key
means the same object in every backend, so a folder pulled from S3 with
``freshrec snapshots pull`` can be served from disk unchanged.

Example
-------
>>> import tempfile
>>> store = open_store(StorageConfig(url="file://" + tempfile.mkdtemp()))
>>> store.put("a/b.txt", b"hello")
>>> store.get("a/b.txt"), store.exists("a/c.txt"), store.list("a/")
(b'hello', False, ['a/b.txt'])
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from service.storage.config import StorageConfig
from service.storage.errors import InvalidKey

if TYPE_CHECKING:
    from service.storage.backoff import RetryPolicy

# Segments start with a letter, digit or underscore: no "." or ".." segments, and no
# dot-files, which LocalFolderStore keeps for its in-flight temporary files.
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.=+-]*$")


def validate_key(key: str) -> str:
    """Return ``key`` if it is a clean relative object key, else raise :class:`InvalidKey`.

    >>> validate_key("models/default/versions/000001/manifest.json")
    'models/default/versions/000001/manifest.json'
    >>> validate_key("../etc/passwd")
    Traceback (most recent call last):
    ...
    service.storage.errors.InvalidKey: invalid object key '../etc/passwd': ...
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"invalid object key {key!r}: keys are non-empty strings")
    bad = [s for s in key.split("/") if not _SEGMENT.match(s)]
    if bad:
        raise InvalidKey(
            f"invalid object key {key!r}: segment {bad[0]!r} is not allowed; use "
            "'/'-separated names of letters, digits, '_', '.', '-', '=', '+' that do not "
            "start with '.' (no empty, '.' or '..' segments, no leading '/')"
        )
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: empty, or a key prefix (it may end with '/')."""
    if prefix == "":
        return prefix
    trimmed = prefix[:-1] if prefix.endswith("/") else prefix
    validate_key(trimmed)
    return prefix


@runtime_checkable
class ObjectStore(Protocol):
    """A flat namespace of byte objects addressed by key.

    Implementations make ``put`` atomic: a reader sees the old object, the new one, or
    nothing, never a partial write. Nothing more is promised (no multi-object transactions):
    the bundle format builds its commit point on top by writing its manifest last.
    """

    url: str

    def put(self, key: str, data: bytes) -> None:
        """Write ``data`` under ``key``, replacing any previous object atomically."""
        ...

    def get(self, key: str) -> bytes:
        """The object's bytes; :class:`~service.storage.errors.ObjectNotFound` if missing."""
        ...

    def exists(self, key: str) -> bool:
        """Whether ``key`` holds an object."""
        ...

    def list(self, prefix: str = "") -> list[str]:
        """Every key starting with ``prefix`` (a string prefix, as in S3), sorted."""
        ...

    def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        ...


def join_key(*parts: str) -> str:
    """Join key parts with single slashes, ignoring empty parts.

    >>> join_key("models/", "/default", "", "latest")
    'models/default/latest'
    """
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


def parse_store_url(url: str) -> tuple[str, str, str]:
    """Split a store URL into ``(scheme, location, prefix)``.

    ``file://./folder``, ``file://relative/folder`` and ``file:///abs/folder`` name local
    folders (``location`` is the path, ``prefix`` empty); a plain path is accepted too.
    ``s3://bucket/some/prefix`` names a bucket and a key prefix.

    >>> parse_store_url("s3://freshrec/snapshots")
    ('s3', 'freshrec', 'snapshots')
    >>> parse_store_url("file:///var/lib/freshrec")
    ('file', '/var/lib/freshrec', '')
    >>> parse_store_url("file://./data")
    ('file', './data', '')
    """
    if not isinstance(url, str) or not url.strip():
        raise ValueError("store URL is empty: use file:///path/to/folder or s3://bucket/prefix")
    url = url.strip()
    if url.startswith("s3://"):
        rest = url[len("s3://"):]
        bucket, _, prefix = rest.partition("/")
        if not re.match(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", bucket):
            raise ValueError(
                f"{url!r}: {bucket!r} is not a valid S3 bucket name (3-63 lower-case letters, "
                "digits, '.' or '-'); expected s3://bucket/optional/prefix"
            )
        prefix = prefix.strip("/")
        if prefix:
            validate_key(prefix)
        return "s3", bucket, prefix
    if url.startswith("file://"):
        path = url[len("file://"):]
        if not path:
            raise ValueError(f"{url!r} names no folder: use file:///abs/path or file://./rel")
        return "file", path, ""
    if "://" in url:
        scheme = url.split("://", 1)[0]
        raise ValueError(
            f"unsupported store URL scheme {scheme!r} in {url!r}: use file:///path/to/folder "
            "or s3://bucket/prefix"
        )
    return "file", url, ""


def open_store(
    config: StorageConfig | str, *, retry: RetryPolicy | None = None
) -> ObjectStore:
    """The store that ``config.url`` names, configured from ``config``.

    A plain string is taken as the URL with default settings (no S3 credentials: boto3's
    own lookup then applies). Importing boto3 is deferred to the first S3 store, so local
    use stays light.
    """
    if isinstance(config, str):
        config = StorageConfig(url=config)
    scheme, location, prefix = parse_store_url(config.url)
    from service.storage.backoff import RetryPolicy

    policy = retry or RetryPolicy(
        retries=config.retries, base_s=config.backoff_s, max_s=config.backoff_max_s
    )
    if scheme == "s3":
        from service.storage.s3 import S3Store

        return S3Store(
            bucket=location,
            prefix=prefix,
            endpoint_url=config.endpoint_url,
            access_key=config.access_key,
            secret_key=config.secret_key.get_secret_value() if config.secret_key else None,
            region=config.region,
            connect_timeout_s=config.connect_timeout_s,
            read_timeout_s=config.read_timeout_s,
            max_pool_connections=max(10, config.io_threads * 2),
            retry=policy,
        )
    from service.storage.local import LocalFolderStore

    return LocalFolderStore(location, retry=policy)
