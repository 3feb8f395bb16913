"""An object store in an S3 bucket (AWS or any S3-compatible server such as versitygw).

Parameters
----------
bucket, prefix
    Objects live under ``s3://bucket/prefix/``; keys are relative to the prefix.
endpoint_url
    The server, e.g. ``http://127.0.0.1:19000`` for the local stack (None: AWS).
access_key, secret_key, region
    Credentials; when None boto3's usual lookup (``AWS_*`` variables, profiles) applies.
connect_timeout_s, read_timeout_s
    Socket timeouts; a short connect timeout makes a server that is down fail fast.
retry
    Backoff policy for transient failures (connection refused or reset, timeouts, 5xx,
    throttling). botocore's own retries are switched off so the two do not multiply.

Addressing is path-style (``endpoint/bucket/key``), which every S3-compatible server
accepts, whereas virtual-hosted style needs wildcard DNS.

Example
-------
>>> store = S3Store("freshrec", "tests", endpoint_url="http://127.0.0.1:19000",
...                 access_key="freshrec", secret_key="freshrec-secret")  # doctest: +SKIP
>>> store.put("hello.txt", b"hi"); store.get("hello.txt")  # doctest: +SKIP
b'hi'
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any, TypeVar

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from service.storage.backoff import RetriesExhausted, RetryPolicy
from service.storage.errors import ObjectNotFound, StorageError, StorageUnavailable
from service.storage.objectstore import join_key, validate_key, validate_prefix

T = TypeVar("T")

# Above this size uploads go multipart (parallel parts, and a failed part is retried
# alone by the transfer manager instead of the whole object).
_MULTIPART_BYTES = 64 * 1024 * 1024
_THROTTLE_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
     "InternalError", "ServiceUnavailable", "RequestLimitExceeded"}
)
_NOT_FOUND_CODES = frozenset({"NoSuchKey", "404", "NotFound"})
_AUTH_CODES = frozenset(
    {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
     "ExpiredToken", "403", "Forbidden"}
)


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: ClientError) -> int:
    return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)


def is_transient(exc: BaseException) -> bool:
    """Whether retrying ``exc`` may succeed: network trouble, timeouts, 5xx, throttling."""
    if isinstance(
        exc, BotoConnectionError | HTTPClientError | IncompleteReadError | ResponseStreamingError
    ):
        return True
    if isinstance(exc, ClientError):
        return _status(exc) >= 500 or _error_code(exc) in _THROTTLE_CODES
    return False


class S3Store:
    """Objects in ``s3://bucket/prefix`` through a boto3 client (thread-safe)."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        region: str = "us-east-1",
        connect_timeout_s: float = 3.0,
        read_timeout_s: float = 60.0,
        max_pool_connections: int = 10,
        retry: RetryPolicy | None = None,
    ) -> None:
        if access_key is not None and secret_key is None:
            raise ValueError(
                "an S3 access key was given without its secret: set "
                "FRESHREC_STORAGE__SECRET_KEY (or pass secret_key)"
            )
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        if self.prefix:
            validate_key(self.prefix)
        self.endpoint_url = endpoint_url
        self.url = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._where = f"{self.url} at {endpoint_url or 'the AWS default endpoint'}"
        self._retry = retry or RetryPolicy()
        session = boto3.session.Session()
        self._client: Any = session.client(
            "s3",
            endpoint_url=endpoint_url,
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            region_name=region,
            config=Config(
                s3={"addressing_style": "path"},
                connect_timeout=connect_timeout_s,
                read_timeout=read_timeout_s,
                retries={"total_max_attempts": 1},
                max_pool_connections=max_pool_connections,
            ),
        )
        self._transfer = TransferConfig(
            multipart_threshold=_MULTIPART_BYTES, multipart_chunksize=16 * 1024 * 1024,
            max_concurrency=4,
        )

    def __repr__(self) -> str:
        return f"S3Store({self.url!r}, endpoint_url={self.endpoint_url!r})"

    def _full(self, key: str) -> str:
        return join_key(self.prefix, validate_key(key))

    def _run(self, what: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return self._retry.run(fn, is_transient)
        except RetriesExhausted as exc:
            raise StorageUnavailable(
                f"{what} {key!r} in {self._where} failed {exc.attempts} times "
                f"(last error: {exc.last}). Is the S3 server up and is "
                "FRESHREC_STORAGE__ENDPOINT_URL right? For the local stack: "
                "deploy/local/stack.sh up"
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise StorageError(
                f"{what} {key!r} in {self._where}: no usable S3 credentials ({exc}); set "
                "FRESHREC_STORAGE__ACCESS_KEY and FRESHREC_STORAGE__SECRET_KEY"
            ) from exc
        except ClientError as exc:
            code = _error_code(exc)
            if code in _NOT_FOUND_CODES:
                raise ObjectNotFound(f"no object {key!r} in {self._where}") from exc
            if code == "NoSuchBucket":
                raise StorageError(
                    f"{what} {key!r}: bucket {self.bucket!r} does not exist at "
                    f"{self.endpoint_url or 'AWS'}; create it first (the local stack "
                    "creates 'freshrec')"
                ) from exc
            if code in _AUTH_CODES:
                raise StorageError(
                    f"{what} {key!r} in {self._where} was refused ({code}); check "
                    "FRESHREC_STORAGE__ACCESS_KEY / FRESHREC_STORAGE__SECRET_KEY and the "
                    "bucket's permissions"
                ) from exc
            raise StorageError(f"{what} {key!r} in {self._where} failed: {exc}") from exc

    def put(self, key: str, data: bytes) -> None:
        full = self._full(key)

        def upload() -> None:
            if len(data) > _MULTIPART_BYTES:
                self._client.upload_fileobj(
                    io.BytesIO(data), self.bucket, full, Config=self._transfer
                )
            else:
                self._client.put_object(Bucket=self.bucket, Key=full, Body=data)

        self._run("writing", key, upload)

    def get(self, key: str) -> bytes:
        full = self._full(key)

        def download() -> bytes:
            # Body.read() checks the byte count against Content-Length and raises
            # IncompleteReadError (retried) on a cut connection.
            body: bytes = self._client.get_object(Bucket=self.bucket, Key=full)["Body"].read()
            return body

        return self._run("reading", key, download)

    def exists(self, key: str) -> bool:
        full = self._full(key)

        def head() -> bool:
            try:
                self._client.head_object(Bucket=self.bucket, Key=full)
            except ClientError as exc:
                if _error_code(exc) in _NOT_FOUND_CODES or _status(exc) == 404:
                    return False
                raise
            return True

        return self._run("checking", key, head)

    def list(self, prefix: str = "") -> list[str]:
        validate_prefix(prefix)
        full = (self.prefix + "/" + prefix) if self.prefix else prefix
        strip = len(self.prefix) + 1 if self.prefix else 0

        def list_all() -> list[str]:
            keys: list[str] = []
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                keys.extend(obj["Key"][strip:] for obj in page.get("Contents", ()))
            return sorted(keys)

        return self._run("listing", prefix or "(everything)", list_all)

    def delete(self, key: str) -> None:
        full = self._full(key)
        self._run(
            "deleting", key, lambda: self._client.delete_object(Bucket=self.bucket, Key=full)
        )
