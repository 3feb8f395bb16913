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
from service.learners.optim import Optimizer
from service.learners.sklearn_adapter import SklearnSGD
from service.learners.stacking import ShadowStack
from service.learners.strategies import MicroBatch, PerEvent, Strategy, WindowRetrain

MODELS: dict[str, Any] = {
    cls.model_type: cls
    for cls in (BiasedMF, FM, FTRL, BPR, SklearnSGD, WindowRetrain, ShadowStack)
}

# The shadows each model gets, in order (``learner.shadows`` takes the first ones): their
# hyperparameters differ from the main model's where the members' errors differ most.
# Chosen by greedy forward selection with the online stack on MovieLens 100k and 1M in
# time order (docs/quality.md): a plain-SGD model with River's initialisation, a model of
# biases alone, and a small AdaGrad model with strong L2.
SHADOWS: dict[str, tuple[dict[str, Any], ...]] = {
    "biased_mf": (
        {"n_factors": 10, "init_std": 0.1,
         "optimizer": Optimizer(kind="sgd", learning_rate=0.1, l2=0.0, clip_gradient=10.0)},
        {"n_factors": 1, "init_std": 0.0,
         "optimizer": Optimizer(kind="adagrad", learning_rate=0.05, l2=0.0,
                                clip_gradient=10.0)},
        {"n_factors": 10,
         "optimizer": Optimizer(kind="adagrad", learning_rate=0.2, l2=0.05,
                                clip_gradient=10.0)},
    ),
}


def n_shadows(config: LearnerConfig) -> int:
    """How many shadow learners ``config`` asks for (its measured default when unset)."""
    if config.shadows is None:
        return len(SHADOWS.get(config.model, ())) if config.strategy != "window_retrain" else 0
    if config.shadows > 0:
        if config.strategy == "window_retrain":
            raise ValueError("learner.shadows needs strategy per_event or micro_batch; "
                             "window_retrain is the batch baseline (set shadows=0)")
        available = len(SHADOWS.get(config.model, ()))
        if config.shadows > available:
            raise ValueError(
                f"learner.model={config.model!r} has {available} measured shadow "
                f"learners, not {config.shadows}; set FRESHREC_LEARNER__SHADOWS to at "
                f"most {available}")
    return config.shadows


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
        MicroBatch(config.micro_batch_size, config.micro_batch_ms,
                   config.micro_batch_one_per_user)
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
    shadows = n_shadows(config)
    if shadows:
        # Shadows keep no seen-items rings: recommendations use the main model's.
        members: list[Any] = [learner]
        for k, shadow in enumerate(SHADOWS[config.model][:shadows]):
            spec = dict(shadow)
            model = spec.pop("model", config.model)
            # A shadow of another model type takes none of the main model's
            # hyperparameters, only what every learner shares.
            base = kwargs if model == config.model else {
                name: kwargs[name] for name in ("strategy", "ema_decay")}
            members.append(MODELS[model](
                n_users, n_items, feature_bits,
                **(base | {"seed": config.seed + k + 1, "seen_per_user": 0} | spec)))
        return ShadowStack(members)
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
