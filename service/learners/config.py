"""Learner settings: which model, its hyperparameters and the update strategy."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LearnerConfig(BaseModel):
    """Which online model to train and how."""

    model: Literal["biased_mf", "fm", "ftrl", "bpr", "sklearn"] = Field(
        "biased_mf", description="Model type."
    )
    n_factors: int = Field(32, ge=1, le=1024, description="Latent factors (MF, FM, BPR).")
    learning_rate: float = Field(0.02, gt=0, description="Base learning rate.")
    l2: float = Field(0.02, ge=0, description="L2 regularisation.")
    seed: int = Field(42, description="Seed for initialisation and sampling.")
    strategy: Literal["per_event", "micro_batch", "window_retrain"] = Field(
        "per_event", description="Update strategy."
    )
