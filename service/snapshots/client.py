"""Serving side: pull a published snapshot, verify it, and score with original ids.

Importable without Kafka: nothing on this module's import path imports confluent_kafka
(boto3 is imported only for ``s3://`` URLs).

Three lines for serving code::

    from service.snapshots.client import load_snapshot
    snap = load_snapshot("s3://freshrec/prod", model="default")  # latest, verified
    snap.recommend("user-42", k=10)                              # [(item id, score), ...]

Example
-------
>>> snap = load_snapshot("file:///no/such/folder")  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
service.snapshots.registry.SnapshotNotFound: model 'default' has no published snapshot ...
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from service.examples import ExampleBatch
from service.learners.base import Learner, ModelState
from service.snapshots.encoding import IdEncoder, encoder_from_snapshot
from service.snapshots.manifest import SnapshotManifest
from service.snapshots.publisher import LearnerFactory, default_learner_factory, state_from_snapshot
from service.snapshots.registry import SnapshotRegistry
from service.storage.config import storage_config_from_env
from service.storage.objectstore import ObjectStore, open_store


@dataclass(slots=True)
class LoadedSnapshot:
    """A verified snapshot, ready to score.

    Attributes
    ----------
    manifest
        The snapshot manifest (version, model type, metrics, offsets, checksums ...).
    learner
        The model rebuilt from the snapshot (:meth:`predict_rows` / :meth:`recommend_rows`
        use it with model rows).
    encoder
        Maps original ids to rows (from the manifest, or the one passed in).
    """

    manifest: SnapshotManifest
    state: ModelState
    learner: Learner
    encoder: IdEncoder
    encoding_arrays: dict[str, npt.NDArray[Any]] = field(default_factory=dict)

    @property
    def version(self) -> str:
        return self.manifest.meta.version

    @property
    def model_type(self) -> str:
        return self.manifest.meta.model_type

    def predict_rows(
        self, user_rows: npt.ArrayLike, item_rows: npt.ArrayLike
    ) -> npt.NDArray[np.float32]:
        """Scores of (user row, item row) pairs."""
        u = np.atleast_1d(np.asarray(user_rows, dtype=np.int64))
        i = np.atleast_1d(np.asarray(item_rows, dtype=np.int64))
        if u.shape != i.shape:
            raise ValueError(f"got {len(u)} users and {len(i)} items; pass one item per user")
        return self.learner.predict(ExampleBatch.from_arrays(u, i, np.zeros(len(u))))

    def predict(
        self, user_ids: Sequence[str] | str, item_ids: Sequence[str] | str
    ) -> npt.NDArray[np.float32]:
        """Scores of (user id, item id) pairs; unknown ids score as the "unknown" row 0."""
        users = [user_ids] if isinstance(user_ids, str) else list(user_ids)
        items = [item_ids] if isinstance(item_ids, str) else list(item_ids)
        return self.predict_rows(self.encoder.user_rows(users), self.encoder.item_rows(items))

    def recommend_rows(
        self,
        user_row: int,
        k: int = 10,
        exclude: npt.ArrayLike | None = None,
        exclude_seen: bool = True,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``k`` best item rows for a user row and their scores, best first."""
        ex = None if exclude is None else np.asarray(exclude, dtype=np.int64)
        return self.learner.recommend(int(user_row), k, ex, exclude_seen=exclude_seen)

    def recommend(
        self,
        user_id: str,
        k: int = 10,
        exclude: Sequence[str] | None = None,
        exclude_seen: bool = True,
    ) -> list[tuple[str, float]]:
        """The ``k`` best items for ``user_id`` as ``(item id, score)``, best first.

        ``exclude_seen`` leaves out the items the snapshot remembers the user had.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        row = int(self.encoder.user_rows([user_id])[0])
        ex = None if not exclude else self.encoder.item_rows(list(exclude))
        rows, scores = self.recommend_rows(row, k, ex, exclude_seen)
        ids = self.encoder.item_ids(rows)
        return [(str(i), float(s)) for i, s in zip(ids.tolist(), scores.tolist(), strict=True)]


def load_snapshot(
    url: str | ObjectStore,
    version: str = "latest",
    *,
    model: str = "default",
    endpoint_url: str | None = None,
    access_key: str | None = None,
    secret_key: str | None = None,
    region: str | None = None,
    verify: bool = True,
    encoder: IdEncoder | None = None,
    learner_factory: LearnerFactory | None = None,
) -> LoadedSnapshot:
    """Load, verify and rebuild a published snapshot.

    Parameters
    ----------
    url
        ``s3://bucket/prefix``, ``file:///folder`` (or a plain path), or an open store.
    version
        ``"latest"`` (follows the pointer and checks it names this exact manifest) or a
        version such as ``"42"`` / ``"000042"``.
    model
        Registry name of the model.
    endpoint_url, access_key, secret_key, region
        S3 settings; each defaults to ``FRESHREC_STORAGE__<NAME>`` from the environment.
    verify
        Check every file's sha256 (default). Sizes, dtypes and shapes are always checked.
    encoder
        Maps original ids to rows when the snapshot's own encoding cannot (e.g. hashed
        ids); see :mod:`service.snapshots.encoding`.
    learner_factory
        Rebuilds the learner; defaults to ``service.learners.learner_from_state``.

    Raises
    ------
    SnapshotNotFound, BundleIntegrityError, UnsupportedFormatError, StorageError
    """
    if isinstance(url, str):
        config = storage_config_from_env(
            url=url,
            endpoint_url=endpoint_url,
            access_key=access_key,
            secret_key=secret_key,
            region=region,
        )
        store = open_store(config)
        threads = config.io_threads
    else:
        store, threads = url, 4
    registry = SnapshotRegistry(store, model, io_threads=threads)
    arrays, manifest = registry.read(version, verify=verify)
    state, enc_arrays = state_from_snapshot(arrays, manifest)
    factory = learner_factory or default_learner_factory()
    learner = factory(state)
    return LoadedSnapshot(
        manifest=manifest,
        state=state,
        learner=learner,
        encoder=encoder or encoder_from_snapshot(manifest.meta.encoding, enc_arrays),
        encoding_arrays=enc_arrays,
    )
