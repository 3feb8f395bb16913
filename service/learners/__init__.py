"""Online learners: predict first, then learn, one event (or micro-batch) at a time.

Models: :class:`BiasedMF` (ratings), :class:`FM` (ratings or clicks with side features),
:class:`FTRL` (clicks over hashed features), :class:`BPR` (implicit ranking) and the
scikit-learn baseline :class:`SklearnSGD`. Update strategies: :class:`PerEvent`,
:class:`MicroBatch`, :class:`WindowRetrain`. Build them with :func:`make_learner` and
restore them with :func:`learner_from_state`.
"""

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
