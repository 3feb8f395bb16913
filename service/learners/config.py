"""Learner settings: which model, its hyperparameters and the update strategy.

Unset (``None``) hyperparameters take the chosen model's tuned default, so switching
``model`` never inherits a learning rate tuned for another model.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LearnerConfig(BaseModel):
    """Which online model to train and how."""

    # A misspelt setting (FRESHREC_LEARNER__N_FACTOR) is an error, not silently ignored.
    model_config = ConfigDict(extra="forbid")

    model: Literal["biased_mf", "fm", "ftrl", "bpr", "sklearn"] = Field(
        default="biased_mf", description="Model type."
    )
    task: Literal["auto", "regression", "binary"] = Field(
        default="auto",
        description=(
            "Task of fm and sklearn ('auto': regression). biased_mf is regression, ftrl "
            "binary, bpr ranking."
        ),
    )
    n_factors: int = Field(
        default=32, ge=1, le=1024, description="Latent factors (MF, FM, BPR)."
    )
    learning_rate: float | None = Field(
        default=None, gt=0, description="Base learning rate (None: the model's default)."
    )
    l2: float | None = Field(
        default=None, ge=0, description="L2 of factors/weights (None: the model's default)."
    )
    seed: int = Field(default=42, description="Seed for initialisation and sampling.")
    strategy: Literal["per_event", "micro_batch", "window_retrain"] = Field(
        default="per_event", description="Update strategy."
    )
    optimizer: Literal["sgd", "adagrad"] = Field(
        default="sgd",
        description=(
            "Per-coordinate update rule of MF, FM and BPR (FTRL has its own). Unset: the "
            "model's default (AdaGrad for biased_mf and fm, SGD for bpr)."
        ),
    )
    lr_schedule: Literal["constant", "invscaling"] = Field(
        default="constant", description="Learning-rate schedule; constant keeps adapting to drift."
    )
    power_t: float = Field(default=0.25, ge=0, description="Exponent of the invscaling schedule.")
    l1: float = Field(default=0.0, ge=0, description="L1 regularisation of linear weights (FM).")
    clip_gradient: float = Field(
        default=10.0, gt=0, description="Bound on the loss derivative of one example."
    )
    init_std: float | None = Field(
        default=None, ge=0, description="Std of initial factors (None: the model's default)."
    )
    ema_decay: float = Field(
        default=0.0, ge=0, lt=1,
        description="Moving average of parameters for the published copy (0: off).",
    )
    seen_per_user: int = Field(
        default=16, ge=0, le=4096, description="Recent items per user left out of recommendations."
    )
    micro_batch_size: int = Field(default=256, ge=1, description="Examples per micro-batch step.")
    micro_batch_one_per_user: bool = Field(
        default=True,
        description="End a micro-batch before an example whose user it already holds (no "
        "example is scored with parameters older than its own user's last example).",
    )
    micro_batch_ms: int = Field(
        default=0, ge=0, description="Event-time span of a micro-batch in ms (0: size only)."
    )
    window_size: int = Field(
        default=100_000, ge=1, description="Examples kept by window_retrain."
    )
    retrain_every: int = Field(
        default=20_000, ge=1, description="window_retrain retrains after this many examples."
    )
    retrain_epochs: int = Field(default=2, ge=1, description="Passes over the window per retrain.")
    # alpha 0.05 and beta 0.1 (were 0.1 and 1.0): log loss 0.4701 -> 0.4687 on the Criteo
    # sample, 0.4411 -> 0.4392 on Avazu's (freshrec bench quality, a grid of alpha 0.03-0.4,
    # beta 0.01-10, L1 0-1, L2 0.1-5; the surface is flat within 0.1% around it).
    ftrl_alpha: float = Field(default=0.05, gt=0, description="FTRL alpha (per-coordinate rate).")
    ftrl_beta: float = Field(default=0.1, ge=0, description="FTRL beta.")
    ftrl_l1: float = Field(default=0.1, ge=0, description="FTRL L1.")
    ftrl_l2: float = Field(default=1.0, ge=0, description="FTRL L2.")
    shadows: int | None = Field(
        default=None, ge=0, le=3,
        description=(
            "Shadow learners beside the main model, combined by online stacking (0: the "
            "main model alone; None: the measured default, 3 for biased_mf, 0 for the "
            "others)."
        ),
    )
    eval_window: int = Field(
        default=10_000, ge=1, description="Window of the windowed progressive metrics."
    )
