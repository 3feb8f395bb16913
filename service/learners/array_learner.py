"""Shared machinery of the numpy-backed learners: state, validation, recommendations.

Each model keeps everything it learns in named, contiguous numpy arrays
(``self.arrays``); this class turns that into the :class:`~service.learners.base.Learner`
protocol: input validation at the boundary, the predict-then-learn contract with its
counters, the high-water marks of the user and item rows in use, state export of those
rows only (as copies), the published (optionally averaged) copy, recycled-row resets, and
vectorised top-k recommendations with a popularity fallback.

Subclasses implement the model: ``_allocate``, ``_initialise``, ``row_spans``,
``_predict``, ``_learn``, ``_item_scores``, ``_reset`` and ``_hyperparameters``.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any, ClassVar, Self

import numpy as np
import numpy.typing as npt

from service.examples import ExampleBatch
from service.learners.averaging import ParameterAverage
from service.learners.base import LearnStats, ModelState, Task
from service.learners.interactions import Interactions, top_k
from service.learners.layout import Ranges, RowSpan, compact, expand_into, kept_ranges
from service.learners.optim import Optimizer
from service.learners.strategies import PerEvent, Strategy, strategy_from_dict
from service.residency import prefault

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
STATE_FORMAT_VERSION = 2
"""Version 2 keeps only the rows below the high-water marks of user/item-indexed arrays
(counters ``used_users``, ``used_items``). Version 1 states (every array at full capacity)
are still read."""
READABLE_FORMAT_VERSIONS = (1, 2)

# Set while from_state builds a learner: the constructor then leaves the randomly
# initialised tables unfilled, and from_state fills only the rows the state does not carry.
_RESTORING: ContextVar[bool] = ContextVar("freshrec_learner_restoring", default=False)




class ArrayLearner:
    """Base class of the learners whose parameters are numpy arrays.

    Parameters
    ----------
    n_users, n_items
        Rows of the user and item tables; row 0 is the reserved "unknown" row and is
        never learned, so unknown users and items score with the shared terms only.
    feature_bits
        Side features are hashed into ``2 ** feature_bits`` rows.
    optimizer
        Per-coordinate update rule and its hyperparameters.
    seed
        Seeds initialisation, recycled-row resets and sampling.
    strategy
        :class:`PerEvent` (default) or :class:`MicroBatch`.
    seen_per_user
        Recent items remembered per user for ``recommend(exclude_seen=True)``.
    ema_decay
        When > 0, keep an exponential moving average of the parameters (updated once per
        ``learn`` call) and publish it from :meth:`published_state`.

    Attributes
    ----------
    used_users, used_items
        High-water marks: one past the highest user and item row ever learned from or
        reset. Rows at or beyond them still hold their deterministic initial values, so
        :meth:`get_state` leaves them out and :meth:`from_state` regenerates them.
    """

    model_type: ClassVar[str]
    task: Task
    PARAMETERS: ClassVar[tuple[str, ...]] = ()
    """Names in ``self.arrays`` that are learned parameters (counted, averaged, checked)."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        feature_bits: int = 18,
        *,
        optimizer: Optimizer | None = None,
        seed: int = 42,
        strategy: Strategy | None = None,
        seen_per_user: int = 16,
        ema_decay: float = 0.0,
    ) -> None:
        if n_users < 1 or n_items < 2:
            raise ValueError(
                f"need n_users >= 1 and n_items >= 2 (row 0 is reserved), got "
                f"n_users={n_users}, n_items={n_items}"
            )
        if not 1 <= feature_bits <= 30:
            raise ValueError(f"feature_bits must be in [1, 30], got {feature_bits}")
        self.n_users = int(n_users)
        self.n_items = int(n_items)
        self.feature_bits = int(feature_bits)
        self.optimizer = (optimizer if optimizer is not None
                          else self.default_optimizer(getattr(self, "task", None)))
        self.seed = int(seed)
        self.strategy: Strategy = strategy if strategy is not None else PerEvent()
        self.seen_per_user = int(seen_per_user)
        self.ema_decay = float(ema_decay)
        self.interactions = Interactions(self.n_users, self.n_items, self.seen_per_user)
        self.average = ParameterAverage(self.ema_decay) if self.ema_decay > 0 else None
        self.n_seen = 0
        self.n_updates = 0
        self.n_skipped_nonfinite = 0
        self.used_users = 0
        self.used_items = 0
        rng = np.random.default_rng(self.seed)
        self.arrays: dict[str, npt.NDArray[Any]] = self._allocate(rng)
        # Part of the state format; recycled rows no longer draw from it (see _reset).
        self.arrays["rng"] = np.array([rng.integers(0, 2**63 - 1)], dtype=np.uint64)
        if not _RESTORING.get():
            self._initialise(0, 0, rest=True)

    # -- to implement ------------------------------------------------------------------

    @classmethod
    def default_optimizer(cls, task: str | None = None) -> Optimizer:
        """The tuned default update rule (``freshrec bench learners`` checks it)."""
        return Optimizer()

    def _allocate(self, rng: np.random.Generator) -> dict[str, npt.NDArray[Any]]:
        """The model's arrays at full capacity. Randomly initialised tables may be left
        ``np.empty``: :meth:`_initialise` fills them."""
        raise NotImplementedError

    def _initialise(self, users_from: int, items_from: int, rest: bool) -> None:
        """Write the initial values of user rows ``>= users_from``, item rows
        ``>= items_from`` and, when ``rest``, of the rows outside every span.

        Must depend only on the config and the seed, row by row (see
        :func:`~service.learners.rng.fill_init`): ``from_state`` calls it for the rows
        beyond the state's high-water marks. Zero-initialised arrays need nothing.
        """

    def row_spans(self) -> dict[str, tuple[RowSpan, ...]]:
        """Which spans of each array's first axis are user rows and item rows.

        Declared explicitly by each model, for every array indexed by user or item row
        (parameters, accumulators); arrays left out are saved whole. The moving average
        of a parameter uses the parameter's spans.
        """
        return {}

    def _hyperparameters(self) -> dict[str, Any]:
        raise NotImplementedError

    def _predict(self, batch: ExampleBatch) -> FloatArray:
        raise NotImplementedError

    def _learn(self, batch: ExampleBatch, bounds: IntArray | None) -> tuple[FloatArray, int, int]:
        """Predict-then-learn; returns (pre-update predictions, updates, skipped)."""
        raise NotImplementedError

    def _item_scores(self, user: int) -> npt.NDArray[np.float32]:
        raise NotImplementedError

    def _reset(self, users: IntArray, items: IntArray) -> None:
        """Put recycled rows back to their initial values (a function of the row alone:
        see :func:`~service.learners.rng.init_rows`)."""
        raise NotImplementedError

    # -- the protocol -------------------------------------------------------------------

    def predict(self, batch: ExampleBatch) -> FloatArray:
        """Score ``batch`` without learning."""
        self._check(batch)
        if len(batch) == 0:
            return np.zeros(0, dtype=np.float32)
        return self._predict(batch)

    def learn(
        self, batch: ExampleBatch, strategy: Strategy | None = None,
        bounds: IntArray | None = None,
    ) -> tuple[FloatArray, LearnStats]:
        """Predict each example, then learn from it; return the pre-update predictions.

        ``strategy`` overrides the learner's own for this call; ``bounds`` are its
        mini-batch bounds of ``batch`` when the caller has them already (the shadow stack
        cuts once for all its members).
        """
        self._check(batch)
        n = len(batch)
        if n == 0:
            return np.zeros(0, dtype=np.float32), LearnStats()
        strategy = strategy if strategy is not None else self.strategy
        if bounds is None:
            bounds = strategy.bounds(batch.ts_ms, batch.user)
        self._advance_marks(int(batch.user.max()) + 1, int(batch.item.max()) + 1)
        preds, updates, skipped = self._learn(batch, bounds)
        mask = np.isfinite(batch.y) & (batch.weight > 0)
        if self.task != "regression":
            mask &= batch.y > 0
        self.interactions.record(batch.user, batch.item, mask)
        if self.average is not None:
            # Rows beyond the marks are left out: their average stays their initial value.
            self.average.update(self._parameters(),
                                {name: self._ranges(name) for name in self.PARAMETERS})
        self.n_seen += n
        self.n_updates += updates
        self.n_skipped_nonfinite += skipped
        return preds, LearnStats(n_examples=n, n_updates=updates, n_skipped_nonfinite=skipped)

    def reset_rows(self, users: IntArray, items: IntArray) -> None:
        """Reinitialise recycled user and item rows (row 0 stays the unknown row).

        A reset row holds exactly what a fresh learner holds in it: its seeded initial
        values, zero biases and accumulators, no history.
        """
        users = np.unique(np.asarray(users, dtype=np.int64))
        items = np.unique(np.asarray(items, dtype=np.int64))
        users = users[users != 0]
        items = items[items != 0]
        if (len(users) and (users.min() < 0 or users.max() >= self.n_users)) or (
            len(items) and (items.min() < 0 or items.max() >= self.n_items)
        ):
            raise ValueError("reset_rows got rows outside the model's user/item tables")
        if not len(users) and not len(items):
            return
        self._advance_marks(int(users.max()) + 1 if len(users) else 0,
                            int(items.max()) + 1 if len(items) else 0)
        # Each row gets its own initial values back, whatever it is reset with: the same
        # recycles give the same rows however they are grouped into calls.
        self._reset(users, items)
        self.interactions.reset(users, items, self.used_users)
        if self.average is not None and self.average.arrays:
            for name in self.PARAMETERS:
                rows = self._rows_of(name, users, items)
                if rows is not None:
                    self.average.reset_rows(name, rows, self.arrays[name][rows])

    def recommend(
        self,
        user: int,
        k: int = 10,
        exclude: IntArray | None = None,
        exclude_seen: bool = True,
    ) -> tuple[IntArray, FloatArray]:
        """The ``k`` best item rows for ``user`` and their scores, best first.

        Users with no interaction yet (including row 0, unknown) get the most popular
        items, scored by their interaction count. ``exclude_seen`` leaves out the user's
        recent items; ``exclude`` adds more rows to leave out.
        """
        return self.rank_items(self._item_scores, user, k, exclude, exclude_seen)

    def rank_items(
        self,
        item_scores: Callable[[int], FloatArray],
        user: int,
        k: int = 10,
        exclude: IntArray | None = None,
        exclude_seen: bool = True,
    ) -> tuple[IntArray, FloatArray]:
        """:meth:`recommend` with the item scores of ``item_scores(user)``.

        Shared by models that score items their own way on this learner's interactions
        (the shadow stack combines its members' scores), so that the rules for what is
        left out and for users with no history live in one place.
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        user = int(user)
        drop = [np.zeros(1, dtype=np.int64)]  # row 0 is never a real item
        if exclude_seen:
            drop.append(self.interactions.seen_items(user))
        if exclude is not None:
            drop.append(np.asarray(exclude, dtype=np.int64))
        dropped = np.concatenate(drop)
        dropped = dropped[(dropped >= 0) & (dropped < self.n_items)]
        if not self.interactions.is_known(user):
            rows = self.interactions.popular(k, dropped)
            return rows, self.interactions.item_count[rows].astype(np.float32)
        scores = item_scores(user).astype(np.float32, copy=True)
        scores[dropped] = -np.inf
        scores[~np.isfinite(scores)] = -np.inf
        rows = top_k(scores, k)
        return rows, scores[rows]

    def get_state(self) -> ModelState:
        """A copy of the state: parameters, optimiser state, interactions and average.

        Arrays indexed by user or item row keep only the rows below the high-water marks
        (the rest is the seed's initialisation), so the size and the cost of the copy are
        proportional to the users and items in use, not to the capacity.
        """
        return self._export(published=False)

    def published_state(self) -> ModelState:
        """The state to publish: parameters replaced by their moving average if enabled."""
        return self._export(published=True)

    def _export(self, published: bool) -> ModelState:
        average = self.average.arrays if self.average is not None else {}
        arrays: dict[str, npt.NDArray[Any]] = {}
        for name, array in self.arrays.items():
            source = average.get(name, array) if published else array
            arrays[name] = compact(source, self._ranges(name))
        for name, array in self.interactions.arrays().items():
            arrays[f"interactions.{name}"] = compact(array, self._ranges(name, interactions=True))
        if not published:
            for name, array in average.items():
                arrays[f"ema.{name}"] = compact(array, self._ranges(name))
        return ModelState(
            model_type=self.model_type,
            config=self.get_config(),
            arrays=arrays,
            format_version=STATE_FORMAT_VERSION,
            counters={
                "n_seen": self.n_seen,
                "n_updates": self.n_updates,
                "n_skipped_nonfinite": self.n_skipped_nonfinite,
                "used_users": self.used_users,
                "used_items": self.used_items,
            },
        )

    @classmethod
    def from_state(cls, state: ModelState) -> Self:
        """Rebuild a learner from :meth:`get_state` (or :meth:`published_state`).

        The full-capacity tables are rebuilt: rows below the state's high-water marks from
        the state, rows beyond them from the seed (bitwise what a fresh learner has), so
        learning continues exactly as if it had never stopped. Version 1 states (full
        arrays) are read too.
        """
        if state.model_type != cls.model_type:
            raise ValueError(
                f"state is for model {state.model_type!r}, not {cls.model_type!r}; "
                "use learner_from_state() to pick the class from the state"
            )
        if state.format_version not in READABLE_FORMAT_VERSIONS:
            raise ValueError(
                f"state format version {state.format_version} is not supported (this "
                f"build reads versions {READABLE_FORMAT_VERSIONS}); upgrade freshrec"
            )
        token = _RESTORING.set(True)
        try:
            learner = cls.from_config(state.config)
        finally:
            _RESTORING.reset(token)
        learner.used_users, learner.used_items = cls._marks(state, learner)
        # Only the rows the state does not carry are generated.
        learner._initialise(learner.used_users, learner.used_items, rest=False)
        inter: dict[str, npt.NDArray[Any]] = {}
        ema: dict[str, npt.NDArray[Any]] = {}
        for name, array in state.arrays.items():
            if name.startswith("interactions."):
                inter[name.removeprefix("interactions.")] = array
            elif name.startswith("ema."):
                ema[name.removeprefix("ema.")] = array
            elif name in learner.arrays:
                expand_into(learner.arrays[name], array, learner._ranges(name), name)
            else:
                raise ValueError(f"unexpected array {name!r} in {cls.model_type} state")
        missing = set(learner.arrays) - {n for n in state.arrays if "." not in n}
        if inter:
            missing |= {f"interactions.{n}" for n in Interactions.ARRAY_NAMES} - {
                f"interactions.{n}" for n in inter}
        if missing:
            raise ValueError(f"state lacks arrays {sorted(missing)}")
        for name, array in inter.items():
            if name not in Interactions.ARRAY_NAMES:
                raise ValueError(f"unexpected array 'interactions.{name}' in state")
            expand_into(getattr(learner.interactions, name), array,
                        learner._ranges(name, interactions=True), f"interactions.{name}")
        if learner.average is not None and ema:
            unknown = set(ema) - set(learner.PARAMETERS)
            if unknown:
                raise ValueError(f"state averages unknown parameters {sorted(unknown)}")
            averaged = {}
            for name, array in ema.items():
                # Rows beyond the marks were never averaged: they equal the parameter's.
                full = learner.arrays[name].copy()
                expand_into(full, array, learner._ranges(name), f"ema.{name}")
                averaged[name] = full
            learner.average.arrays = averaged
        learner.n_seen = state.counters.get("n_seen", 0)
        learner.n_updates = state.counters.get("n_updates", 0)
        learner.n_skipped_nonfinite = state.counters.get("n_skipped_nonfinite", 0)
        learner._after_load()
        return learner

    @staticmethod
    def _marks(state: ModelState, learner: ArrayLearner) -> tuple[int, int]:
        if state.format_version == 1:
            return learner.n_users, learner.n_items  # every row was saved
        marks = []
        for name, size in (("used_users", learner.n_users), ("used_items", learner.n_items)):
            if name not in state.counters:
                raise ValueError(
                    f"version {state.format_version} state lacks the counter {name!r}; "
                    "it was not written by ArrayLearner.get_state"
                )
            mark = int(state.counters[name])
            if not 0 <= mark <= size:
                raise ValueError(f"state counter {name}={mark} is outside [0, {size}]")
            marks.append(mark)
        return marks[0], marks[1]

    def get_config(self) -> dict[str, Any]:
        """JSON-able constructor arguments (what ``from_config`` takes)."""
        return {
            "n_users": self.n_users,
            "n_items": self.n_items,
            "feature_bits": self.feature_bits,
            "optimizer": self.optimizer.to_dict(),
            "seed": self.seed,
            "strategy": self.strategy.to_dict(),
            "seen_per_user": self.seen_per_user,
            "ema_decay": self.ema_decay,
            **self._hyperparameters(),
        }

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Self:
        kwargs = dict(config)
        kwargs["optimizer"] = Optimizer.from_dict(kwargs["optimizer"])
        kwargs["strategy"] = strategy_from_dict(kwargs["strategy"])
        return cls(**kwargs)

    def clone(self) -> Self:
        """A fresh, untrained learner with the same hyperparameters (and seed)."""
        return type(self).from_config(self.get_config())

    def fault_in(self) -> None:
        """Make every page of the capacity-sized tables resident now.

        Tables allocated with zeros are mapped lazily by the OS: each page takes memory
        the first time a row on it is written, i.e. as ids are admitted. With
        ``preprocess.preallocate`` the runtime calls this so that memory is taken at
        startup, not over the first hours of a large population. Values are unchanged.
        """
        tables = [*self.arrays.values(), *vars(self.interactions).values()]
        if self.average is not None:
            tables += list(self.average.arrays.values())
        for table in tables:
            if isinstance(table, np.ndarray):
                prefault(table)

    def n_parameters(self) -> int:
        """Number of learned scalars."""
        return int(sum(self.arrays[name].size for name in self.PARAMETERS))

    def is_finite(self) -> bool:
        """True when every parameter is finite."""
        return all(bool(np.isfinite(self.arrays[name]).all()) for name in self.PARAMETERS)

    # -- helpers ------------------------------------------------------------------------

    def _parameters(self) -> dict[str, npt.NDArray[Any]]:
        return {name: self.arrays[name] for name in self.PARAMETERS}

    def _advance_marks(self, users_stop: int, items_stop: int) -> None:
        """Raise the high-water marks to cover rows below ``users_stop``/``items_stop``."""
        self.used_users = max(self.used_users, min(users_stop, self.n_users))
        self.used_items = max(self.used_items, min(items_stop, self.n_items))

    def _ranges(self, name: str, interactions: bool = False) -> Ranges:
        """Row ranges of array ``name`` that hold state (see :func:`kept_ranges`)."""
        if interactions:
            array = getattr(self.interactions, name)
            spans = Interactions.ROW_SPANS[name]
        else:
            array = self.arrays[name]
            spans = self.row_spans().get(name, ())
        if array.ndim == 0:
            raise ValueError(f"array {name!r} must have at least one dimension")
        return kept_ranges(len(array), spans, (self.n_users, self.n_items),
                           (self.used_users, self.used_items))

    def _rows_of(self, name: str, users: IntArray, items: IntArray) -> IntArray | None:
        """Rows of parameter ``name`` belonging to recycled users/items (for the average)."""
        return None

    def _after_load(self) -> None:
        """Hook for subclasses that cache derived arrays."""

    def _check(self, batch: ExampleBatch) -> None:
        n = len(batch)
        if n == 0:
            return
        for name, size in (("user", self.n_users), ("item", self.n_items)):
            col = getattr(batch, name)
            if col.dtype != np.int64:
                raise TypeError(f"ExampleBatch.{name} must be int64, got {col.dtype}")
            lo, hi = int(col.min()), int(col.max())
            if lo < 0 or hi >= size:
                raise ValueError(
                    f"{name} rows must be in [0, {size}) but the batch has [{lo}, {hi}]; "
                    f"build the learner with n_{name}s >= the {name} vocabulary capacity"
                )
        for name in ("y", "weight", "feat_val"):
            col = getattr(batch, name)
            if col.dtype != np.float32:
                raise TypeError(f"ExampleBatch.{name} must be float32, got {col.dtype}")
        if len(batch.feat_idx):
            lo, hi = int(batch.feat_idx.min()), int(batch.feat_idx.max())
            if lo < 0 or hi >= 1 << self.feature_bits:
                raise ValueError(
                    f"feature indices must be in [0, 2**{self.feature_bits}) but the batch "
                    f"has [{lo}, {hi}]; hash side features with the same feature_bits"
                )

