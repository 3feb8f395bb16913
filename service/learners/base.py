"""The learner interface every online model implements.

A learner is an estimator in the scikit-learn sense (hyperparameters in ``__init__``,
validated at the boundary) with an online twist: ``learn`` scores every example *before*
the model learns from it (progressive validation) and returns those scores, so the loss a
team sees is always the loss on data the model had not seen yet.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

from service.examples import ExampleBatch

Task = Literal["regression", "binary", "ranking"]


@dataclass(slots=True)
class ModelState:
    """A learner's complete state: named arrays plus a small JSON-able config.

    This is what checkpoints and snapshots store. ``arrays`` are copies, never views of
    the live parameters, so that the caller may write them in the background while the
    learner keeps learning. From ``format_version`` 2, arrays indexed by user or item rows
    hold only the rows below the high-water marks in ``counters`` (``used_users``,
    ``used_items``); ``from_state`` regenerates the rest from the seed.
    """

    model_type: str
    config: dict[str, Any]
    arrays: dict[str, npt.NDArray[Any]]
    format_version: int = 1
    counters: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class LearnStats:
    """What one call to ``learn`` did, for metrics."""

    n_examples: int = 0
    n_updates: int = 0
    n_skipped_nonfinite: int = 0


@runtime_checkable
class Learner(Protocol):
    """Protocol of an online recommendation model."""

    model_type: ClassVar[str]
    task: Task

    def predict(self, batch: ExampleBatch) -> npt.NDArray[np.float32]:
        """Score ``batch`` without learning (rating, probability or ranking score)."""
        ...

    def learn(self, batch: ExampleBatch) -> tuple[npt.NDArray[np.float32], LearnStats]:
        """Predict each example, then learn from it; return the pre-update predictions."""
        ...

    def reset_rows(self, users: npt.NDArray[np.int64], items: npt.NDArray[np.int64]) -> None:
        """Reinitialise user and item rows that the vocabulary recycled for new ids."""
        ...

    def recommend(
        self,
        user: int,
        k: int = 10,
        exclude: npt.NDArray[np.int64] | None = None,
        exclude_seen: bool = True,
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """The ``k`` best item rows for ``user`` and their scores, best first.

        Users with no history get the most popular items; ``exclude_seen`` leaves out the
        user's recent items.
        """
        ...

    def get_state(self) -> ModelState:
        """A copy of the state (array learners: only the user/item rows in use)."""
        ...

    def published_state(self) -> ModelState:
        """The state to publish (parameters replaced by their moving average if enabled)."""
        ...

    def clone(self) -> Learner:
        """A fresh, untrained learner with the same hyperparameters."""
        ...

    @classmethod
    def from_state(cls, state: ModelState) -> Learner:
        """Rebuild a learner from ``get_state``'s output."""
        ...

    def n_parameters(self) -> int:
        """Number of learned scalars."""
        ...

    def is_finite(self) -> bool:
        """True when every parameter is finite."""
        ...
