"""Validated, published models: the promotion gate, the registry and the serving client.

Checkpoints are for recovery and hold everything; snapshots are what serving pulls, and
only candidates that pass :class:`PromotionGate` become one. See ``docs/snapshots.md``.
"""

from service.snapshots.client import LoadedSnapshot, load_snapshot
from service.snapshots.config import SnapshotConfig
from service.snapshots.encoding import IdEncoder, encoder_from_snapshot, vocabulary_arrays
from service.snapshots.gate import GATE_REASONS, GateDecision, PromotionGate
from service.snapshots.holdout import HoldoutWindow
from service.snapshots.manifest import SnapshotManifest, SnapshotMeta, ValidationReport
from service.snapshots.publisher import (
    PublishOutcome,
    SnapshotPublisher,
    snapshot_arrays,
    state_from_snapshot,
)
from service.snapshots.registry import (
    LatestPointer,
    SnapshotNotFound,
    SnapshotRegistry,
    normalize_version,
)
from service.storage.bundle import BundleIntegrityError, UnsupportedFormatError

#: A snapshot's files do not match its manifest (tampered, truncated, corrupted).
SnapshotIntegrityError = BundleIntegrityError

__all__ = [
    "GATE_REASONS",
    "GateDecision",
    "HoldoutWindow",
    "IdEncoder",
    "LatestPointer",
    "LoadedSnapshot",
    "PromotionGate",
    "PublishOutcome",
    "SnapshotConfig",
    "SnapshotIntegrityError",
    "SnapshotManifest",
    "SnapshotMeta",
    "SnapshotNotFound",
    "SnapshotPublisher",
    "SnapshotRegistry",
    "UnsupportedFormatError",
    "ValidationReport",
    "encoder_from_snapshot",
    "load_snapshot",
    "normalize_version",
    "snapshot_arrays",
    "state_from_snapshot",
    "vocabulary_arrays",
]
