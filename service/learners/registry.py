"""Build learners from settings or from a saved state, by model type.

Example
-------
>>> from service.learners.config import LearnerConfig
>>> model = make_learner(LearnerConfig(model="ftrl"), n_users=10, n_items=10, feature_bits=8)
>>> type(model).__name__, model.task
('FTRL', 'binary')
>>> learner_from_state(model.get_state()).get_config() == model.get_config()
True
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from service.learners.base import Learner, ModelState
from service.learners.biased_mf import BiasedMF
from service.learners.bpr import BPR
from service.learners.config import LearnerConfig
from service.learners.fm import FM
from service.learners.ftrl import FTRL
from service.learners.sklearn_adapter import SklearnSGD
from service.learners.strategies import MicroBatch, PerEvent, Strategy, WindowRetrain

MODELS: dict[str, Any] = {
    cls.model_type: cls for cls in (BiasedMF, FM, FTRL, BPR, SklearnSGD, WindowRetrain)
}


def _optimizer(config: LearnerConfig, cls: Any, task: str | None) -> Any:
    base = cls.default_optimizer(task)
    changes: dict[str, Any] = {
        "schedule": config.lr_schedule,
        "power_t": config.power_t,
        "l1": config.l1,
        "clip_gradient": config.clip_gradient,
    }
    if cls is SklearnSGD and config.lr_schedule == "constant":
        # The baseline keeps scikit-learn's own schedule unless asked otherwise.
        changes.pop("schedule")
    if "optimizer" in config.model_fields_set:
        changes["kind"] = config.optimizer
    if config.learning_rate is not None:
        changes["learning_rate"] = config.learning_rate
    if config.l2 is not None:
        changes["l2"] = config.l2
    return replace(base, **changes)


def make_learner(
    config: LearnerConfig, n_users: int, n_items: int, feature_bits: int
) -> Learner:
    """The learner ``config`` describes, with ``n_users``/``n_items`` table rows."""
    cls = MODELS[config.model]
    strategy: Strategy = (
        MicroBatch(config.micro_batch_size, config.micro_batch_ms)
        if config.strategy == "micro_batch" else PerEvent()
    )
    kwargs: dict[str, Any] = {
        "seed": config.seed,
        "strategy": strategy,
        "seen_per_user": config.seen_per_user,
        "ema_decay": config.ema_decay,
    }
    task = None
    if config.model in ("biased_mf", "fm", "bpr"):
        kwargs["n_factors"] = config.n_factors
        if config.init_std is not None:
            kwargs["init_std"] = config.init_std
    if config.model in ("fm", "sklearn"):
        kwargs["task"] = task = "regression" if config.task == "auto" else config.task
    elif config.task not in ("auto", cls.task):
        raise ValueError(
            f"model {config.model!r} only does {cls.task!r}, not task={config.task!r}; "
            "use model='fm' or 'sklearn' for a choice of task"
        )
    if config.model == "ftrl":
        kwargs.update(alpha=config.ftrl_alpha, beta=config.ftrl_beta, l1=config.ftrl_l1,
                      l2=config.ftrl_l2)
    kwargs["optimizer"] = _optimizer(config, cls, task)
    learner: Learner = cls(n_users, n_items, feature_bits, **kwargs)
    if config.strategy == "window_retrain":
        return WindowRetrain(learner, window=config.window_size, every=config.retrain_every,
                             epochs=config.retrain_epochs)
    return learner


def learner_from_state(state: ModelState) -> Learner:
    """Rebuild whichever learner saved ``state`` (the registry is keyed by model type)."""
    cls = MODELS.get(state.model_type)
    if cls is None:
        raise ValueError(
            f"unknown model type {state.model_type!r} in state; known: {sorted(MODELS)}"
        )
    learner: Learner = cls.from_state(state)
    return learner
