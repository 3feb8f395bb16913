"""Shadow learners: several models learn the same events, an online stacker combines them.

One set of hyperparameters is never best everywhere: on real ratings an AdaGrad model with
32 factors, a plain-SGD model with 10, and a model of biases alone each win in different
places (new users, popular items, the long tail), and which one wins moves as the stream
goes on. The kernels run an order of magnitude faster than the rest of the pipeline, so a
few *shadow* learners can learn from every batch beside the main model at a modest cost,
and a small online stacker learns how much to trust each, per example, from the same
progressive validation that measures the result.

The stacker predicts ``m + (w_0 + w_b) . (x - m)``: ``x`` are the members' predictions
(their logits for a binary task), ``m`` their mean, ``w_b`` the weights of the example's
*context* ``b`` (how often its user and its item have been seen so far, in four bands
each: the members' relative skill depends most on that), and ``w_0`` weights shared by
every context. Both are learned by normalised least mean squares (NLMS), in stream
order, one example at a time, after the example was scored: predict first, then learn,
like every learner here. Starting from zero weights, the stack begins as the members'
mean.

Measured on real ratings in time order (``freshrec bench quality``, docs/quality.md):
the main model alone against the main model and three shadows, with River's guide
BiasedMF for reference.

Example
-------
>>> import numpy as np
>>> from service.examples import ExampleBatch
>>> from service.learners.biased_mf import BiasedMF
>>> from service.learners.optim import Optimizer
>>> members = [BiasedMF(20, 20, n_factors=4, seed=1),
...            BiasedMF(20, 20, n_factors=1, init_std=0.0, seed=2,
...                     optimizer=Optimizer(kind="sgd", learning_rate=0.05))]
>>> stack = ShadowStack(members)
>>> rng = np.random.default_rng(0)
>>> users, items = rng.integers(1, 20, 500), rng.integers(1, 20, 500)
>>> batch = ExampleBatch.from_arrays(users, items, (users % 5 + 1).astype(float))
>>> scores, stats = stack.learn(batch)
>>> stats.n_examples, bool(np.isfinite(scores).all())
(500, True)
>>> clone = ShadowStack.from_state(stack.get_state())
>>> bool(np.array_equal(clone.predict(batch), stack.predict(batch)))
True

References
----------
Wolpert, D. H. (1992). Stacked generalization. *Neural Networks* 5(2), 241-259.
Sill, J., Takacs, G., Mackey, L., Lin, D. (2009). Feature-weighted linear stacking.
arXiv:0911.0460.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
from numba import njit

from service.examples import ExampleBatch
from service.learners.array_learner import ArrayLearner
from service.learners.base import LearnStats, ModelState, Task
from service.learners.interactions import Interactions
from service.learners.layout import compact, expand_into
from service.learners.optim import Optimizer, finite
from service.learners.strategies import Strategy

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

STATE_FORMAT_VERSION = 1

# Bands of "seen so far" for the user and for the item: below 4, below 16, below 64,
# more. Four by four contexts; counts saturate at 255 (one byte per row).
COUNT_EDGES = (4, 16, 64)
N_CONTEXTS = (len(COUNT_EDGES) + 1) ** 2

# Each member's own progressive loss is followed over roughly the last 10,000 examples
# (the default evaluation window), for the metrics: which shadow is pulling its weight.
MEMBER_LOSS_DECAY = 1.0 - 1.0 / 10_000

# How far a binary member's probability may go from 0 and 1 before its logit is taken.
_PROBABILITY_FLOOR = 1e-6


@njit(cache=True)
def _band(count: int) -> int:
    if count < COUNT_EDGES[0]:
        return 0
    if count < COUNT_EDGES[1]:
        return 1
    if count < COUNT_EDGES[2]:
        return 2
    return 3


@njit(cache=True)
def _to_inputs(x: npt.NDArray[np.float64], binary: bool) -> bool:
    """Members' predictions as the stacker's inputs, in place (logits for a binary
    task); False when one is not finite (the stacker then passes the main model's)."""
    for k in range(len(x)):
        v = x[k]
        if not finite(v):
            return False
        if binary:
            v = min(max(v, _PROBABILITY_FLOOR), 1.0 - _PROBABILITY_FLOOR)
            x[k] = np.log(v / (1.0 - v))
    return True


@njit(cache=True)
def _stack(
    predictions: npt.NDArray[np.float64],  # (members, n)
    y: npt.NDArray[np.float64],
    weight: npt.NDArray[np.float64],
    users: IntArray,
    items: IntArray,
    w: npt.NDArray[np.float64],  # (1 + N_CONTEXTS, members): shared row first
    user_seen: npt.NDArray[np.uint8],
    item_seen: npt.NDArray[np.uint8],
    bounds: npt.NDArray[np.float64],  # [lowest, highest] target seen (regression)
    learning_rate: float,
    shared: float,
    binary: bool,
    learn: bool,
    member_loss: npt.NDArray[np.float64],  # (2, members): decayed loss sums, weights
    out: npt.NDArray[np.float32],
) -> None:
    """Score each example with the stack as it is, then (``learn``) take its NLMS step.

    Scoring only (``predict``, ``recommend``) reads the weights, counts and bounds and
    changes nothing, so served scores are the ones learning computes."""
    n_members, n = predictions.shape
    x = np.empty(n_members)
    d = np.empty(n_members)
    for t in range(n):
        for k in range(n_members):
            x[k] = predictions[k, t]
        u = users[t]
        i = items[t]
        if not _to_inputs(x, binary):
            out[t] = predictions[0, t]
            continue
        mean = 0.0
        for k in range(n_members):
            mean += x[k]
        mean /= n_members
        b = 1 + 4 * _band(user_seen[u]) + _band(item_seen[i])
        z = mean
        dd = 1e-3  # NLMS's regulariser: members that agree barely move the weights
        for k in range(n_members):
            d[k] = x[k] - mean
            z += (w[0, k] + w[b, k]) * d[k]
            dd += d[k] * d[k]
        if binary:
            p = 1.0 / (1.0 + np.exp(-z))
            out[t] = p
            error = p - y[t]
        else:
            p = z
            if bounds[1] >= bounds[0]:
                p = min(max(p, bounds[0]), bounds[1])
            out[t] = p
            error = z - y[t]
        yt = y[t]
        if not learn or not (weight[t] > 0.0) or not finite(yt):
            continue  # scored, not learned (the members skip it too)
        for k in range(n_members):
            pk = predictions[k, t]
            if binary:
                pk = min(max(pk, _PROBABILITY_FLOOR), 1.0 - _PROBABILITY_FLOOR)
                loss = -np.log(pk) if yt > 0.5 else -np.log(1.0 - pk)
            else:
                loss = (pk - yt) * (pk - yt)
            member_loss[0, k] = MEMBER_LOSS_DECAY * member_loss[0, k] + loss
            member_loss[1, k] = MEMBER_LOSS_DECAY * member_loss[1, k] + 1.0
        step = learning_rate * weight[t] * error / dd
        for k in range(n_members):
            w[b, k] -= step * d[k]
            w[0, k] -= shared * step * d[k]
        if not binary:
            bounds[0] = min(bounds[0], yt)
            bounds[1] = max(bounds[1], yt)
        if user_seen[u] < 255:
            user_seen[u] += 1
        if item_seen[i] < 255:
            item_seen[i] += 1


class ShadowStack:
    """A main model and its shadow learners, combined by online linear stacking.

    Every member learns every example (each predicts it first, then learns from it,
    with its own strategy); the stack scores the example from the members' scores and
    then takes its own step. Checkpoints and snapshots hold every member and the
    stacker; serving scores with all of them.

    Parameters
    ----------
    members
        Array learners of one task (``regression`` or ``binary``) over the same user and
        item tables. The first is the main model: its interactions (seen items,
        popularity) serve recommendations, and its score stands in for the stack's when
        a member's score is not finite.
    learning_rate
        NLMS step of the stacker's weights. Measured on real ratings: 0.001-0.003 are
        within 0.05% of each other; 0.03 undoes most of the gain.
    shared
        Share of each step that also goes to the weights shared by all contexts, which
        carry what the contexts have in common while a rare context has little data.
    """

    model_type: ClassVar[str] = "shadow_stack"

    def __init__(self, members: Sequence[ArrayLearner], learning_rate: float = 0.002,
                 shared: float = 0.3) -> None:
        members = list(members)
        if len(members) < 2:
            raise ValueError("a shadow stack needs the main model and at least one shadow")
        lead = members[0]
        for m in members:
            if not isinstance(m, ArrayLearner):
                raise TypeError(f"shadow stack members must be array learners, not "
                                f"{type(m).__name__}")
            if m.task != lead.task:
                raise ValueError(f"members disagree on the task: {lead.task!r} and "
                                 f"{m.task!r}")
            if (m.n_users, m.n_items) != (lead.n_users, lead.n_items):
                raise ValueError("members must share the user and item tables' sizes")
            if m.strategy.to_dict() != lead.strategy.to_dict():
                # The runtime cuts mini-batches for one strategy: all must learn alike.
                raise ValueError("members must share the update strategy")
        if lead.task not in ("regression", "binary"):
            raise ValueError(f"a shadow stack combines scores of regression or binary "
                             f"models, not of task {lead.task!r} (use shadows=0)")
        if not (0 < learning_rate < 1):
            raise ValueError(f"learning_rate must be in (0, 1), got {learning_rate}")
        if not (0 <= shared <= 1):
            raise ValueError(f"shared must be in [0, 1], got {shared}")
        self.members = members
        self.task: Task = lead.task
        self.learning_rate = float(learning_rate)
        self.shared = float(shared)
        self.weights = np.zeros((1 + N_CONTEXTS, len(members)), dtype=np.float64)
        self.user_seen = np.zeros(lead.n_users, dtype=np.uint8)
        self.item_seen = np.zeros(lead.n_items, dtype=np.uint8)
        self.bounds = np.array([np.inf, -np.inf], dtype=np.float64)
        self.member_loss = np.zeros((2, len(members)), dtype=np.float64)
        # The drift reaction 'adapt' scales the main model's rate; the shadows follow by
        # the same factor, always from the rates they were built with.
        self._base_optimizers = [m.optimizer for m in members]

    # -- what the runtime reads from the main model ---------------------------------

    @property
    def lead(self) -> ArrayLearner:
        return self.members[0]

    @property
    def n_users(self) -> int:
        return self.lead.n_users

    @property
    def n_items(self) -> int:
        return self.lead.n_items

    @property
    def used_users(self) -> int:
        return max(m.used_users for m in self.members)

    @property
    def used_items(self) -> int:
        return max(m.used_items for m in self.members)

    @property
    def interactions(self) -> Interactions:
        """The main model's seen items and counts (what recommendations leave out)."""
        return self.lead.interactions

    @property
    def strategy(self) -> Strategy:
        return self.lead.strategy

    @property
    def optimizer(self) -> Optimizer:
        return self.lead.optimizer

    @optimizer.setter
    def optimizer(self, value: Optimizer) -> None:
        factor = value.learning_rate / self._base_optimizers[0].learning_rate
        self.lead.optimizer = value
        for m, base in zip(self.members[1:], self._base_optimizers[1:], strict=True):
            m.optimizer = replace(base, learning_rate=base.learning_rate * factor)

    # -- the protocol -----------------------------------------------------------------

    def learn(self, batch: ExampleBatch) -> tuple[FloatArray, LearnStats]:
        n = len(batch)
        stats = LearnStats(n_examples=n)
        if n == 0:
            return np.zeros(0, dtype=np.float32), stats
        scores = np.empty((len(self.members), n), dtype=np.float64)
        # The members share one strategy: cut the mini-batches once for all of them.
        bounds = self.strategy.bounds(batch.ts_ms, batch.user)
        for k, m in enumerate(self.members):
            p, s = m.learn(batch, bounds=bounds)
            scores[k] = p
            stats.n_updates += s.n_updates
            stats.n_skipped_nonfinite += s.n_skipped_nonfinite
        return self._score(scores, batch, learn=True), stats

    def predict(self, batch: ExampleBatch) -> FloatArray:
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32)
        scores = np.stack([m.predict(batch).astype(np.float64) for m in self.members])
        return self._score(scores, batch, learn=False)

    def recommend(self, user: int, k: int = 10, exclude: IntArray | None = None,
                  exclude_seen: bool = True) -> tuple[IntArray, FloatArray]:
        return self.lead.rank_items(self._item_scores, user, k, exclude, exclude_seen)

    def reset_rows(self, users: IntArray, items: IntArray) -> None:
        for m in self.members:
            m.reset_rows(users, items)
        users = np.asarray(users, dtype=np.int64)
        items = np.asarray(items, dtype=np.int64)
        # A recycled row's counts belonged to the evicted id (row 0 is never recycled).
        self.user_seen[users[users != 0]] = 0
        self.item_seen[items[items != 0]] = 0

    def n_parameters(self) -> int:
        return sum(m.n_parameters() for m in self.members) + int(self.weights.size)

    def is_finite(self) -> bool:
        return bool(np.isfinite(self.weights).all()) and all(
            m.is_finite() for m in self.members)

    def fault_in(self) -> None:
        for m in self.members:
            m.fault_in()

    def clone(self) -> ShadowStack:
        return ShadowStack([m.clone() for m in self.members], self.learning_rate,
                           self.shared)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "shared": self.shared,
                "members": [{"model_type": m.model_type, "config": m.get_config()}
                            for m in self.members]}

    def get_state(self) -> ModelState:
        return self._export([m.get_state() for m in self.members])

    def published_state(self) -> ModelState:
        return self._export([m.published_state() for m in self.members])

    @classmethod
    def from_state(cls, state: ModelState) -> ShadowStack:
        from service.learners.registry import learner_from_state

        if state.model_type != cls.model_type:
            raise ValueError(f"state is for model {state.model_type!r}, not "
                             f"{cls.model_type!r}")
        if state.format_version != STATE_FORMAT_VERSION:
            raise ValueError(f"shadow stack state format {state.format_version} is not "
                             f"supported (this build reads {STATE_FORMAT_VERSION}); "
                             "upgrade freshrec")
        cfg = state.config
        members = []
        for k, spec in enumerate(cfg["members"]):
            prefix = f"m{k}."
            member = learner_from_state(ModelState(
                model_type=spec["model_type"], config=spec["config"],
                arrays={name.removeprefix(prefix): a for name, a in state.arrays.items()
                        if name.startswith(prefix)},
                format_version=int(spec["format_version"]),
                counters={name.removeprefix(prefix): v for name, v in state.counters.items()
                          if name.startswith(prefix)}))
            if not isinstance(member, ArrayLearner):
                raise ValueError(f"shadow stack member {k} is not an array learner")
            members.append(member)
        out = cls(members, learning_rate=cfg["learning_rate"], shared=cfg["shared"])
        a = state.arrays
        for name in ("stack.weights", "stack.user_seen", "stack.item_seen", "stack.bounds",
                     "stack.member_loss"):
            if name not in a:
                raise ValueError(f"shadow stack state lacks the array {name!r}")
        if a["stack.weights"].shape != out.weights.shape:
            raise ValueError(f"stack.weights has shape {a['stack.weights'].shape}, "
                             f"expected {out.weights.shape}")
        out.weights[:] = a["stack.weights"]
        out.bounds[:] = a["stack.bounds"]
        out.member_loss[:] = a["stack.member_loss"]
        expand_into(out.user_seen, a["stack.user_seen"],
                    [(0, int(state.counters["used_users"]))], "stack.user_seen")
        expand_into(out.item_seen, a["stack.item_seen"],
                    [(0, int(state.counters["used_items"]))], "stack.item_seen")
        return out

    def member_losses(self) -> list[float]:
        """Each member's recent progressive loss (squared error, or log loss for clicks),
        over roughly the last 10,000 learned examples; NaN before the first."""
        sums, weights = self.member_loss
        return [float(s / w) if w > 0 else math.nan for s, w in zip(sums, weights, strict=True)]

    # -- internals ----------------------------------------------------------------------

    def _export(self, states: list[ModelState]) -> ModelState:
        arrays: dict[str, npt.NDArray[Any]] = {}
        counters: dict[str, int] = {}
        members = []
        for k, s in enumerate(states):
            arrays.update({f"m{k}.{name}": a for name, a in s.arrays.items()})
            counters.update({f"m{k}.{name}": v for name, v in s.counters.items()})
            members.append({"model_type": s.model_type, "config": s.config,
                            "format_version": s.format_version})
        # Rows beyond every member's high-water mark were never seen: their counts are 0.
        used_users, used_items = self.used_users, self.used_items
        arrays["stack.weights"] = self.weights.copy()
        arrays["stack.bounds"] = self.bounds.copy()
        arrays["stack.member_loss"] = self.member_loss.copy()
        arrays["stack.user_seen"] = compact(self.user_seen, [(0, used_users)])
        arrays["stack.item_seen"] = compact(self.item_seen, [(0, used_items)])
        counters.update(used_users=used_users, used_items=used_items,
                        n_seen=max(int(s.counters.get("n_seen", 0)) for s in states))
        return ModelState(
            model_type=self.model_type,
            config={"learning_rate": self.learning_rate, "shared": self.shared,
                    "members": members},
            arrays=arrays, format_version=STATE_FORMAT_VERSION, counters=counters)

    def _score(self, scores: npt.NDArray[np.float64], batch: ExampleBatch, *,
               learn: bool) -> FloatArray:
        """The stack's scores from the members' ``scores`` (members x n) of ``batch``."""
        out = np.empty(len(batch), dtype=np.float32)
        _stack(scores, batch.y.astype(np.float64), batch.weight.astype(np.float64),
               batch.user, batch.item, self.weights, self.user_seen, self.item_seen,
               self.bounds, self.learning_rate, self.shared, self.task == "binary", learn,
               self.member_loss, out)
        return out

    def _item_scores(self, user: int) -> FloatArray:
        # The members' full predictions, not their item-ranking scores: those leave out
        # terms that are constant for a user (global mean, user bias) but differ from
        # member to member, which the stack's weights would not cancel. Rows beyond the
        # high-water mark hold no item.
        used = max(self.used_items, 1)
        rows = np.arange(used, dtype=np.int64)
        batch = ExampleBatch.from_arrays(np.full(used, user, dtype=np.int64), rows,
                                         np.zeros(used))
        out = np.full(self.n_items, -np.inf, dtype=np.float32)
        out[:used] = self.predict(batch)
        return out
