"""The reference baseline: scikit-learn's ``SGDRegressor``/``SGDClassifier`` with
``partial_fit`` over ``FeatureHasher`` features.

This is the loop teams usually start from: hash ``u=<user>``, ``i=<item>`` and the side
features with :class:`~sklearn.feature_extraction.FeatureHasher`, score the batch, then
``partial_fit`` on it. It is kept behind the same :class:`Learner` protocol so the
benchmarks and the service can run it side by side with the compiled learners.

Differences from the compiled learners, on purpose (this is the baseline as people write
it): progressive validation is per batch (the whole batch is scored before
``partial_fit``), features are built per event in Python, and the model is linear (user
and item effects, no interaction between them). State export is the estimator's arrays
(``coef_``, ``intercept_``, ``t_``), never a pickle.

Example
-------
>>> import numpy as np
>>> from service.examples import ExampleBatch
>>> rng = np.random.default_rng(0)
>>> users, items = rng.integers(1, 20, 5000), rng.integers(1, 10, 5000)
>>> model = SklearnSGD(n_users=20, n_items=10, feature_bits=10)
>>> for chunk in np.array_split(np.arange(5000), 10):
...     _ = model.learn(ExampleBatch.from_arrays(users[chunk], items[chunk],
...                                              3.0 + (items[chunk] % 2)))
>>> p = model.predict(ExampleBatch.from_arrays([1, 1], [2, 3], [0, 0]))
>>> bool(p[1] - p[0] > 0.5)   # odd items rate one star higher
True
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, ClassVar, Literal

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher
from sklearn.linear_model import SGDClassifier, SGDRegressor

from service.examples import ExampleBatch
from service.learners.array_learner import ArrayLearner, FloatArray, IntArray
from service.learners.base import Task
from service.learners.optim import Optimizer
from service.learners.strategies import Strategy


class SklearnSGD(ArrayLearner):
    """``SGDRegressor`` (squared loss) or ``SGDClassifier`` (log loss) over hashed ids.

    Parameters
    ----------
    n_users, n_items, feature_bits
        Features are hashed into ``2 ** feature_bits`` columns.
    task
        ``"regression"`` or ``"binary"``.
    optimizer
        ``learning_rate`` is scikit-learn's ``eta0``, ``schedule``/``power_t`` its
        ``learning_rate``/``power_t``, ``l2`` its ``alpha``.
    seed, seen_per_user
        See :class:`~service.learners.array_learner.ArrayLearner`. ``strategy`` and
        ``ema_decay`` are accepted for interface compatibility: the baseline always
        learns per batch and publishes its live parameters.
    """

    model_type: ClassVar[str] = "sklearn"
    PARAMETERS: ClassVar[tuple[str, ...]] = ("coef", "intercept")

    def __init__(
        self,
        n_users: int,
        n_items: int,
        feature_bits: int = 18,
        *,
        task: Literal["regression", "binary"] = "regression",
        optimizer: Optimizer | None = None,
        seed: int = 42,
        strategy: Strategy | None = None,
        seen_per_user: int = 16,
        ema_decay: float = 0.0,
    ) -> None:
        if task not in ("regression", "binary"):
            raise ValueError(f"task must be 'regression' or 'binary', got {task!r}")
        self.task: Task = task
        super().__init__(n_users, n_items, feature_bits, optimizer=optimizer, seed=seed,
                         strategy=strategy, seen_per_user=seen_per_user, ema_decay=0.0)
        o = self.optimizer
        common: dict[str, Any] = {
            "alpha": o.l2,
            "eta0": o.learning_rate,
            "learning_rate": o.schedule,
            "power_t": o.power_t,
            "shuffle": False,  # partial_fit must keep stream order (and be deterministic)
            "random_state": self.seed,
        }
        self.estimator: SGDRegressor | SGDClassifier = (
            SGDRegressor(**common) if task == "regression"
            else SGDClassifier(loss="log_loss", **common)
        )
        self.hasher = FeatureHasher(n_features=1 << self.feature_bits, input_type="pair",
                                    alternate_sign=False)

    @classmethod
    def default_optimizer(cls, task: str | None = None) -> Optimizer:
        # scikit-learn's own defaults: what a team that changes nothing gets.
        return Optimizer(kind="sgd", learning_rate=0.01, schedule="invscaling", power_t=0.25,
                         l2=1e-4)

    def _hyperparameters(self) -> dict[str, Any]:
        return {"task": self.task}

    def _allocate(self, rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
        return {
            "coef": np.zeros(1 << self.feature_bits, dtype=np.float64),
            "intercept": np.zeros(1, dtype=np.float64),
            "t": np.ones(1, dtype=np.float64),
        }

    def features(self, batch: ExampleBatch) -> sp.csr_matrix:
        """The hashed design matrix of ``batch`` (one Python token list per event)."""

        def rows() -> Iterator[list[tuple[str, float]]]:
            indptr, fidx, fval = batch.feat_indptr, batch.feat_idx, batch.feat_val
            for n, (u, i) in enumerate(zip(batch.user.tolist(), batch.item.tolist(),
                                           strict=True)):
                tokens = [(f"u={u}", 1.0), (f"i={i}", 1.0)]
                for j in range(indptr[n], indptr[n + 1]):
                    tokens.append((f"f={fidx[j]}", float(fval[j])))
                yield tokens

        X: sp.csr_matrix = self.hasher.transform(rows())
        return X

    def _load_estimator(self) -> None:
        a = self.arrays
        est = self.estimator
        # The optimiser may have been swapped since construction (the drift reaction
        # 'adapt' raises the learning rate for a while): the estimator follows it.
        o = self.optimizer
        est.set_params(alpha=o.l2, eta0=o.learning_rate, learning_rate=o.schedule,
                       power_t=o.power_t)
        if self.task == "binary":
            est.coef_ = a["coef"].reshape(1, -1).copy()
            est.classes_ = np.array([0, 1])
        else:
            est.coef_ = a["coef"].copy()
        est.intercept_ = a["intercept"].copy()
        est.t_ = float(a["t"][0])
        est.n_features_in_ = 1 << self.feature_bits

    def _scores(self, X: sp.csr_matrix) -> FloatArray:
        raw = X @ self.arrays["coef"] + self.arrays["intercept"][0]
        # float64 scores beyond float32's range would overflow the cast.
        raw = np.clip(raw, -3e38, 3e38)
        if self.task == "binary":
            raw = 1.0 / (1.0 + np.exp(-np.clip(raw, -50, 50)))
        return np.asarray(raw, dtype=np.float32)

    def _predict(self, batch: ExampleBatch) -> FloatArray:
        return self._scores(self.features(batch))

    def _learn(self, batch: ExampleBatch, bounds: IntArray | None) -> tuple[FloatArray, int, int]:
        X = self.features(batch)
        preds = self._scores(X)
        ok = np.isfinite(batch.y) & np.isfinite(batch.weight)
        skipped = int((~ok).sum())
        ok &= batch.weight > 0
        if not ok.any():
            return preds, 0, skipped
        self._load_estimator()
        y = batch.y[ok].astype(np.float64)
        if self.task == "binary":
            self.estimator.partial_fit(X[ok], (y > 0.5).astype(np.int64), classes=[0, 1],
                                       sample_weight=batch.weight[ok])
        else:
            self.estimator.partial_fit(X[ok], y, sample_weight=batch.weight[ok])
        coef = np.ravel(self.estimator.coef_)
        intercept = np.ravel(self.estimator.intercept_)
        if not (np.isfinite(coef).all() and np.isfinite(intercept).all()
                and math.isfinite(self.estimator.t_)):
            # The guard: keep the previous parameters and count the batch as skipped.
            return preds, 0, skipped + int(ok.sum())
        self.arrays["coef"] = np.ascontiguousarray(coef, dtype=np.float64)
        self.arrays["intercept"] = np.ascontiguousarray(intercept, dtype=np.float64)
        self.arrays["t"][0] = self.estimator.t_
        return preds, int(ok.sum()), skipped

    def _item_scores(self, user: int) -> FloatArray:
        items = np.arange(self.n_items, dtype=np.int64)
        batch = ExampleBatch.from_arrays(np.full(self.n_items, user), items,
                                         np.zeros(self.n_items))
        return self._predict(batch)

    def _reset(self, users: IntArray, items: IntArray) -> None:
        names = [f"u={u}" for u in users.tolist()] + [f"i={i}" for i in items.tolist()]
        cols = self.hasher.transform([[(name, 1.0)] for name in names]).indices
        self.arrays["coef"][cols] = 0.0
