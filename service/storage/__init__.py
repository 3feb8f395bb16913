"""Object stores (local folder, S3) and the checksummed bundle format.

>>> from service.storage import open_store, write_bundle, read_bundle  # doctest: +SKIP
"""

from service.storage.backoff import RetryPolicy
from service.storage.bundle import (
    BUNDLE_FORMAT,
    BUNDLE_FORMAT_VERSION,
    MANIFEST_NAME,
    BundleError,
    BundleIntegrityError,
    BundleManifest,
    BundleNotFound,
    FileEntry,
    UnsupportedFormatError,
    bundle_exists,
    delete_bundle,
    read_bundle,
    read_manifest,
    write_bundle,
)
from service.storage.config import StorageConfig, storage_config_from_env
from service.storage.errors import InvalidKey, ObjectNotFound, StorageError, StorageUnavailable
from service.storage.local import LocalFolderStore
from service.storage.objectstore import ObjectStore, join_key, open_store, parse_store_url

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_FORMAT_VERSION",
    "MANIFEST_NAME",
    "BundleError",
    "BundleIntegrityError",
    "BundleManifest",
    "BundleNotFound",
    "FileEntry",
    "InvalidKey",
    "LocalFolderStore",
    "ObjectNotFound",
    "ObjectStore",
    "RetryPolicy",
    "StorageConfig",
    "StorageError",
    "StorageUnavailable",
    "UnsupportedFormatError",
    "bundle_exists",
    "delete_bundle",
    "join_key",
    "open_store",
    "parse_store_url",
    "read_bundle",
    "read_manifest",
    "storage_config_from_env",
    "write_bundle",
]
