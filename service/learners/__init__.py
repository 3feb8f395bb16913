"""Online learners: predict first, then learn, one event (or micro-batch) at a time.

Models: :class:`BiasedMF` (ratings), :class:`FM` (ratings or clicks with side features),
:class:`FTRL` (clicks over hashed features), :class:`BPR` (implicit ranking) and the
scikit-learn baseline :class:`SklearnSGD`. Update strategies: :class:`PerEvent`,
:class:`MicroBatch`, :class:`WindowRetrain`. Build them with :func:`make_learner` and
restore them with :func:`learner_from_state`.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from service.learners.base import Learner, LearnStats, ModelState
    from service.learners.biased_mf import BiasedMF
    from service.learners.bpr import BPR
    from service.learners.config import LearnerConfig
    from service.learners.fm import FM
    from service.learners.ftrl import FTRL
    from service.learners.optim import Optimizer
    from service.learners.registry import MODELS, learner_from_state, make_learner
    from service.learners.sklearn_adapter import SklearnSGD
    from service.learners.strategies import MicroBatch, PerEvent, WindowRetrain

# Imported on first use: the models pull in numba and scikit-learn, which settings, the
# CLI's --help and the serving client's import path should not pay for.
_WHERE = {
    "Learner": "base", "LearnStats": "base", "ModelState": "base",
    "BiasedMF": "biased_mf", "BPR": "bpr", "LearnerConfig": "config", "FM": "fm",
    "FTRL": "ftrl", "Optimizer": "optim", "MODELS": "registry",
    "learner_from_state": "registry", "make_learner": "registry",
    "SklearnSGD": "sklearn_adapter", "MicroBatch": "strategies", "PerEvent": "strategies",
    "WindowRetrain": "strategies",
}


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"service.learners.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'service.learners' has no attribute {name!r}")


__all__ = [
    "BPR",
    "FM",
    "FTRL",
    "MODELS",
    "BiasedMF",
    "LearnStats",
    "Learner",
    "LearnerConfig",
    "MicroBatch",
    "ModelState",
    "Optimizer",
    "PerEvent",
    "SklearnSGD",
    "WindowRetrain",
    "learner_from_state",
    "make_learner",
]
