"""The runtime's side of snapshots: gate a candidate, publish it, track the champion.

Parameters
----------
store
    Where snapshots go (:func:`service.storage.open_store`).
config
    :class:`SnapshotConfig` (``model_name``, ``keep`` and the gate's settings).
learner_factory
    Rebuilds a learner from a :class:`ModelState`; defaults to
    ``service.learners.learner_from_state``.

The runtime calls :meth:`SnapshotPublisher.consider` every ``every_events`` events or
``every_seconds`` seconds, from a background thread if it likes (``get_state`` returns
copies). ``consider`` loads the champion (cached; reloaded when ``latest`` moved, e.g.
after ``freshrec snapshots rollback``), asks the gate, and publishes on acceptance:
files, then manifest, then ``latest``, then retention. ``gate_counts`` counts decisions
by reason for the metrics endpoint.

Example
-------
>>> import tempfile
>>> from service.storage.local import LocalFolderStore
>>> pub = SnapshotPublisher(LocalFolderStore(tempfile.mkdtemp()), SnapshotConfig())
>>> pub.latest_version() is None and pub.load_champion() is None
True
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from service.learners.base import Learner, ModelState
from service.snapshots.config import SnapshotConfig
from service.snapshots.gate import GateDecision, PromotionGate
from service.snapshots.manifest import (
    ENCODING_PREFIX,
    MODEL_PREFIX,
    SnapshotManifest,
    SnapshotMeta,
    ValidationReport,
)
from service.snapshots.registry import SnapshotRegistry
from service.storage.errors import StorageError
from service.storage.objectstore import ObjectStore

log = logging.getLogger(__name__)

LearnerFactory = Callable[[ModelState], Learner]


def default_learner_factory() -> LearnerFactory:
    """``service.learners.learner_from_state``, imported on first use."""
    try:
        from service.learners import learner_from_state
    except ImportError as exc:
        raise RuntimeError(
            "service.learners.learner_from_state is not available in this build; pass "
            "learner_factory= to rebuild learners from snapshots"
        ) from exc
    factory: LearnerFactory = learner_from_state
    return factory


def snapshot_arrays(
    state: ModelState, encoding_arrays: Mapping[str, npt.NDArray[Any]] | None = None
) -> dict[str, npt.NDArray[Any]]:
    """Namespaced bundle arrays: ``model/<name>`` and ``encoding/<name>``."""
    arrays = {f"{MODEL_PREFIX}{k}": np.asarray(v) for k, v in state.arrays.items()}
    for k, v in (encoding_arrays or {}).items():
        arrays[f"{ENCODING_PREFIX}{k}"] = np.asarray(v)
    return arrays


def state_from_snapshot(
    arrays: Mapping[str, npt.NDArray[Any]], manifest: SnapshotManifest
) -> tuple[ModelState, dict[str, npt.NDArray[Any]]]:
    """Split a snapshot's arrays back into the ModelState and the encoding arrays."""
    meta = manifest.meta
    model = {k[len(MODEL_PREFIX):]: v for k, v in arrays.items() if k.startswith(MODEL_PREFIX)}
    enc = {k[len(ENCODING_PREFIX):]: v for k, v in arrays.items() if k.startswith(ENCODING_PREFIX)}
    state = ModelState(
        model_type=meta.model_type,
        config=dict(meta.hyperparameters),
        arrays=model,
        format_version=meta.state_format_version,
        counters=dict(meta.counters),
    )
    return state, enc


@dataclass(frozen=True, slots=True)
class PublishOutcome:
    """What :meth:`SnapshotPublisher.consider` did."""

    decision: GateDecision
    version: str | None

    @property
    def published(self) -> bool:
        return self.version is not None


class SnapshotPublisher:
    """Publishes validated snapshots of one model and keeps its champion at hand."""

    def __init__(
        self,
        store: ObjectStore,
        config: SnapshotConfig | None = None,
        *,
        learner_factory: LearnerFactory | None = None,
        io_threads: int = 4,
    ) -> None:
        self.config = config or SnapshotConfig()
        self.registry = SnapshotRegistry(store, self.config.model_name, io_threads)
        self._factory = learner_factory
        self._champion: Learner | None = None
        self._champion_version: str | None = None
        self.gate_counts: Counter[str] = Counter()

    @property
    def factory(self) -> LearnerFactory:
        if self._factory is None:
            self._factory = default_learner_factory()
        return self._factory

    @property
    def champion_version(self) -> str | None:
        """The version of the champion last loaded or published by this publisher."""
        return self._champion_version

    def latest_version(self) -> str | None:
        """What ``latest`` points at now (one small read); compare to ``champion_version``."""
        return self.registry.latest_version()

    def load_champion(self) -> Learner | None:
        """The published model as a learner, or None; reloaded only when ``latest`` moved."""
        pointer = self.registry.read_pointer()
        if pointer is None:
            self._champion, self._champion_version = None, None
            return None
        if self._champion is not None and pointer.version == self._champion_version:
            return self._champion
        arrays, manifest = self.registry.read(pointer.version)
        state, _ = state_from_snapshot(arrays, manifest)
        self._champion = self.factory(state)
        self._champion_version = pointer.version
        log.info("loaded champion %s version %s", self.config.model_name, pointer.version)
        return self._champion

    def publish(
        self,
        state: ModelState,
        encoding: Mapping[str, Any],
        offsets: Mapping[str, Mapping[int, int]],
        counts: Mapping[str, int],
        metrics: GateDecision | ValidationReport | Mapping[str, Any] | None,
        *,
        encoding_arrays: Mapping[str, npt.NDArray[Any]] | None = None,
        task: str | None = None,
        champion: Learner | None = None,
    ) -> str:
        """Write ``state`` as the next version, move ``latest`` to it, apply retention.

        ``metrics`` is the gate's decision (or its report); ``offsets`` are the next
        Kafka offsets per topic and partition the state reflects. Returns the version.
        ``champion`` (optional) is a learner equal to ``state``, kept as the new
        champion instead of rebuilding one.
        """
        if isinstance(metrics, GateDecision):
            report = metrics.report()
        elif isinstance(metrics, ValidationReport):
            report = metrics
        else:
            report = ValidationReport.model_validate(dict(metrics or {}))
        parent = self.registry.latest_version()
        version = self.registry.next_version()
        meta = SnapshotMeta(
            model_name=self.config.model_name,
            version=version,
            parent_version=parent,
            model_type=state.model_type,
            task=task,  # type: ignore[arg-type]
            hyperparameters=dict(state.config),
            state_format_version=state.format_version,
            counters={k: int(v) for k, v in state.counters.items()},
            encoding=dict(encoding),
            offsets={str(t): {int(p): int(o) for p, o in parts.items()}
                     for t, parts in offsets.items()},
            counts={k: int(v) for k, v in counts.items()},
            validation=report,
        )
        manifest = self.registry.write(snapshot_arrays(state, encoding_arrays), meta)
        # The files and the manifest are complete: only now may readers see the version.
        self.registry.point_latest(version, manifest.sha256(), "publish")
        self._champion = champion
        self._champion_version = version if champion is not None else None
        try:
            self.registry.apply_retention(self.config.keep)
        except StorageError as exc:  # publication succeeded; cleanup can wait for next time
            log.warning("snapshot retention failed: %s", exc)
        log.info("published %s version %s (%s)", self.config.model_name, version, report.reason)
        return version

    def consider(
        self,
        candidate: Learner,
        gate: PromotionGate,
        *,
        events_since_last: int,
        encoding: Mapping[str, Any],
        offsets: Mapping[str, Mapping[int, int]],
        counts: Mapping[str, int],
        encoding_arrays: Mapping[str, npt.NDArray[Any]] | None = None,
    ) -> PublishOutcome:
        """Gate ``candidate`` against the champion and publish it if accepted.

        What is gated is exactly what would be published: the gate scores a learner
        rebuilt from ``candidate.published_state()`` (averaged parameters, if enabled),
        which then becomes the new champion.
        """
        champion = self.load_champion()
        state = candidate.published_state()
        # Gate exactly what would be published (published_state may average parameters).
        gated = self.factory(state)
        decision = gate.evaluate(gated, champion, events_since_last)
        self.gate_counts[decision.reason] += 1
        if not decision.accepted:
            log.info("snapshot held back (%s): %s", decision.reason, decision.message)
            return PublishOutcome(decision, None)
        version = self.publish(
            state, encoding, offsets, counts, decision,
            encoding_arrays=encoding_arrays, task=candidate.task, champion=gated,
        )
        return PublishOutcome(decision, version)
