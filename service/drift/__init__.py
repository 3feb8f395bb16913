"""Drift detectors on the progressive loss, the inputs and the predictions.

``DriftMonitor`` is what the runtime calls once per batch; the detectors are usable on
their own (``ADWIN``, ``PageHinkley``, ``RollingPSI``), each fed a numpy array at a time.
"""

from service.drift.adwin import ADWIN
from service.drift.config import (
    AdwinConfig,
    DriftConfig,
    PageHinkleyConfig,
    PsiConfig,
    Reaction,
)
from service.drift.detection import DriftDetection
from service.drift.monitor import DriftMonitor, DriftState
from service.drift.page_hinkley import PageHinkley
from service.drift.psi import RollingPSI, hash_buckets, population_stability_index

__all__ = [
    "ADWIN",
    "AdwinConfig",
    "DriftConfig",
    "DriftDetection",
    "DriftMonitor",
    "DriftState",
    "PageHinkley",
    "PageHinkleyConfig",
    "PsiConfig",
    "Reaction",
    "RollingPSI",
    "hash_buckets",
    "population_stability_index",
]
