"""A tiny, fast, numpy-only learner for the snapshot tests (no numba compile time).

``FakeLearner`` is a global mean plus user and item biases, trained by vectorised
full-batch gradient steps. It implements the Learner protocol, so the gate, the
publisher and the client are exercised exactly as with the real models.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from service.examples import ExampleBatch
from service.learners.base import Learner, LearnStats, ModelState, Task


class FakeLearner:
    model_type: ClassVar[str] = "fake_bias"

    def __init__(self, n_users: int = 60, n_items: int = 40, task: Task = "regression",
                 lr: float = 0.5) -> None:
        self.task = task
        self.lr = lr
        self.arrays: dict[str, npt.NDArray[Any]] = {
            "mean": np.zeros(1, np.float32),
            "user_bias": np.zeros(n_users, np.float32),
            "item_bias": np.zeros(n_items, np.float32),
        }

    def _raw(self, batch: ExampleBatch) -> npt.NDArray[np.float32]:
        a = self.arrays
        return (a["mean"][0] + a["user_bias"][batch.user] + a["item_bias"][batch.item]).astype(
            np.float32
        )

    def predict(self, batch: ExampleBatch) -> npt.NDArray[np.float32]:
        raw = self._raw(batch)
        if self.task == "binary":
            return (1.0 / (1.0 + np.exp(-raw))).astype(np.float32)
        return raw

    def learn(self, batch: ExampleBatch) -> tuple[npt.NDArray[np.float32], LearnStats]:
        before = self.predict(batch)
        for _ in range(30):
            g = (self.predict(batch) - batch.y).astype(np.float32)
            a = self.arrays
            a["mean"][0] -= self.lr * g.mean()
            for name, rows in (("user_bias", batch.user), ("item_bias", batch.item)):
                sums = np.bincount(rows, weights=g, minlength=len(a[name]))
                cnt = np.maximum(np.bincount(rows, minlength=len(a[name])), 1)
                a[name] -= (self.lr * sums / cnt).astype(np.float32)
        return before, LearnStats(n_examples=len(batch), n_updates=len(batch))

    def reset_rows(self, users: npt.NDArray[np.int64], items: npt.NDArray[np.int64]) -> None:
        self.arrays["user_bias"][users] = 0
        self.arrays["item_bias"][items] = 0

    def recommend(self, user: int, k: int = 10, exclude: npt.NDArray[np.int64] | None = None,
                  exclude_seen: bool = True
                  ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        scores = self.arrays["item_bias"].astype(np.float32).copy()
        scores[0] = -np.inf
        if exclude is not None:
            scores[exclude] = -np.inf
        order = np.argsort(-scores, kind="stable")[:k]
        return order.astype(np.int64), scores[order] + self.arrays["user_bias"][user]

    def get_state(self) -> ModelState:
        return ModelState(
            model_type=self.model_type,
            config={"n_users": len(self.arrays["user_bias"]),
                    "n_items": len(self.arrays["item_bias"]), "task": self.task, "lr": self.lr},
            arrays={k: v.copy() for k, v in self.arrays.items()},
            counters={"events": 1},
        )

    def published_state(self) -> ModelState:
        return self.get_state()

    def clone(self) -> FakeLearner:
        return FakeLearner(len(self.arrays["user_bias"]), len(self.arrays["item_bias"]),
                           self.task, self.lr)

    @classmethod
    def from_state(cls, state: ModelState) -> FakeLearner:
        if state.model_type != cls.model_type:
            raise ValueError(f"not a {cls.model_type} state: {state.model_type}")
        c = state.config
        learner = cls(c["n_users"], c["n_items"], c["task"], c["lr"])
        learner.arrays = {k: np.array(v) for k, v in state.arrays.items()}
        return learner

    def n_parameters(self) -> int:
        return sum(a.size for a in self.arrays.values())

    def is_finite(self) -> bool:
        return all(bool(np.isfinite(a).all()) for a in self.arrays.values())


def planted_batch(n: int, seed: int, n_users: int = 60, n_items: int = 40,
                  holdout_every: int = 5) -> ExampleBatch:
    """Ratings with planted user and item effects; every ``holdout_every``-th is held out."""
    rng = np.random.default_rng(seed)
    users = rng.integers(1, n_users, n)
    items = rng.integers(1, n_items, n)
    y = 3.0 + 0.8 * np.sin(users) + 1.2 * np.cos(items) + rng.normal(0, 0.1, n)
    batch = ExampleBatch.from_arrays(users, items, y)
    batch.holdout[::holdout_every] = True
    return batch


def test_fake_learner_is_a_learner_and_learns() -> None:
    learner = FakeLearner()
    assert isinstance(learner, Learner)
    batch = planted_batch(3000, seed=1)
    train = batch.select(~batch.holdout)
    test = batch.select(batch.holdout)
    before = float(np.sqrt(np.mean((learner.predict(test) - test.y) ** 2)))
    learner.learn(train)
    after = float(np.sqrt(np.mean((learner.predict(test) - test.y) ** 2)))
    assert after < before / 3
    clone = FakeLearner.from_state(learner.get_state())
    np.testing.assert_array_equal(clone.predict(test), learner.predict(test))
