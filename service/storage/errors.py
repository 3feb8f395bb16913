"""Typed errors of the object stores, so callers can tell "down" from "missing" from "denied"."""

from __future__ import annotations


class StorageError(RuntimeError):
    """An object store operation failed for a reason retrying will not fix.

    The message names the store URL and says what to check.
    """


class StorageUnavailable(StorageError):
    """The store did not answer (or kept failing transiently) after every retry."""


class ObjectNotFound(StorageError, KeyError):
    """The requested key does not exist in the store."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a plain message reads better in logs and CLIs.
        return str(self.args[0]) if self.args else "object not found"


class InvalidKey(StorageError, ValueError):
    """A key is not a clean relative path (empty segment, '..', leading '/', ...)."""
