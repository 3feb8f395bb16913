"""Per-coordinate optimisation rules shared by the gradient-based learners.

The learners' compiled kernels call the small inlined functions below for every
coordinate they touch; :class:`Optimizer` holds the hyperparameters on the Python side and
validates them once, at construction.

* **SGD** with an optional inverse-scaling schedule ``lr / (1 + t) ** power_t``
  (scikit-learn's ``invscaling``; ``t`` counts updates).
* **AdaGrad** per coordinate: each parameter divides its step by the root of its own sum
  of squared gradients, so rare users and items keep large steps while popular ones
  settle (Duchi et al. 2011).
* **L2** as weight decay inside the gradient, **L1** as a proximal soft-threshold after
  the step (truncated gradient), which produces exact zeros.
* **Gradient clipping** of the loss derivative, which bounds every step: together with
  the kernels' finite check (:func:`finite`) this is what keeps a model from ever
  becoming NaN.

The kernels' helpers (here, in :mod:`~service.learners.row_slots` and in each model) are
``inline="always"``, for two measured reasons. A helper compiled on its own is called,
not inlined, by LLVM once it has a loop, and a process that compiled the kernel then
ran the helper's own code while one that loaded the kernel from numba's cache ran the
copy linked into it, which differed in the last bits (``apply_slots`` did). And an
inlined helper that takes arrays is not always free: numba copies its array arguments,
and the reference counting of the copies is pruned in some shapes of code only
(``claim_row`` clearing a new slot in a loop under a branch cost ten atomic operations
per example and two thirds of BiasedMF's micro-batch time, ``row_slots`` notes; the
same clearing through a nested helper, a loop over a factor row, or ``_gather`` in
FTRL's micro-batch kernel left such calls too, :func:`store_row` does not). A new helper
in a hot loop is checked in the kernel's optimised IR (``inspect_llvm``): no
``NRT_incref``/``NRT_decref`` call outside the kernel's entry and exits. So
:func:`step_at` and :func:`store` serve coordinates inside the kernels' own loops, and
the micro-batch kernels' factor loops are written out.

References
----------
Duchi, Hazan and Singer (2011). Adaptive subgradient methods for online learning and
stochastic optimization. JMLR 12.

Example
-------
>>> opt = Optimizer(kind="adagrad", learning_rate=0.1)
>>> opt.to_dict()["kind"]
'adagrad'
>>> Optimizer.from_dict(opt.to_dict()) == opt
True
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

FASTMATH = {"contract", "arcp", "nsz", "reassoc"}
"""Fast-math flags for the kernels: reassociation lets LLVM vectorise the dot products.
``nnan``/``ninf`` are left out on purpose, but that is not enough to keep a floating-point
finite test: with ``reassoc`` and ``nsz`` together LLVM removed ``math.isfinite(raw)``
from FM's micro-batch kernel, where ``raw`` was ``inf - inf``. The kernels test with
:func:`finite`, which LLVM cannot fold."""

ADAGRAD_EPS = 1e-7


@dataclass(frozen=True, slots=True)
class Optimizer:
    """Hyperparameters of the per-coordinate update.

    Parameters
    ----------
    kind
        ``"sgd"`` or ``"adagrad"``.
    learning_rate
        Base step size.
    schedule
        ``"constant"`` or ``"invscaling"`` (``learning_rate / (1 + t) ** power_t``).
        Constant suits drifting streams: a decaying rate stops adapting.
    power_t
        Exponent of the inverse-scaling schedule.
    l1, l2
        Regularisation strengths.
    clip_gradient
        Bound on the absolute derivative of the loss for one example.
    """

    kind: Literal["sgd", "adagrad"] = "sgd"
    learning_rate: float = 0.02
    schedule: Literal["constant", "invscaling"] = "constant"
    power_t: float = 0.25
    l1: float = 0.0
    l2: float = 0.0
    clip_gradient: float = 10.0

    def __post_init__(self) -> None:
        if self.kind not in ("sgd", "adagrad"):
            raise ValueError(f"kind must be 'sgd' or 'adagrad', got {self.kind!r}")
        if self.schedule not in ("constant", "invscaling"):
            raise ValueError(
                f"schedule must be 'constant' or 'invscaling', got {self.schedule!r}"
            )
        for name in ("learning_rate", "clip_gradient"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{name} must be a positive finite number, got {value}")
        for name in ("l1", "l2", "power_t"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a non-negative finite number, got {value}")

    @property
    def adagrad(self) -> bool:
        return self.kind == "adagrad"

    @property
    def effective_power_t(self) -> float:
        """The schedule's exponent, 0 for a constant rate (what the kernels take)."""
        return self.power_t if self.schedule == "invscaling" else 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Optimizer:
        return cls(**data)


@intrinsic
def _exponent_all_ones(typingctx: Any, x: Any) -> Any:
    """Whether the exponent bits of float ``x`` are all ones (``x`` is an inf or a NaN),
    tested on the integer bits: no floating-point flag lets LLVM assume the answer."""
    if not isinstance(x, types.Float):
        return None
    width = x.bitwidth
    mask = 0x7F800000 if width == 32 else 0x7FF0000000000000

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        bits = builder.bitcast(args[0], ir.IntType(width))
        exponent = builder.and_(bits, ir.Constant(ir.IntType(width), mask))
        return builder.icmp_unsigned("==", exponent, ir.Constant(ir.IntType(width), mask))

    return types.boolean(x), codegen


@njit(cache=True, inline="always")
def finite(x: float | np.floating[Any]) -> bool:
    """``math.isfinite(x)`` for the kernels' guards, kept under :data:`FASTMATH`.

    ``math.isfinite`` is a floating-point comparison, and LLVM proved it true and deleted
    it in a loop whose value came from ``reassoc nsz`` arithmetic (FM's micro-batch score
    ``0.5 * (tot - sq)`` with both sums infinite: the NaN reached the global bias, see
    ``test_learner_guard``). This tests the exponent bits instead, at the same cost.

    >>> finite(1.0), finite(math.inf), finite(math.nan), finite(-math.inf)
    (True, False, False, False)
    """
    return not _exponent_all_ones(x)  # type: ignore[call-arg]  # numba passes typingctx


@njit(cache=True, inline="always")
def scheduled_lr(lr: float, power_t: float, t: int) -> float:
    """The learning rate at update ``t``."""
    if power_t == 0.0:
        return lr
    return lr / (1.0 + t) ** power_t


@njit(cache=True, inline="always")
def clip(g: Any, bound: Any) -> Any:
    """``g`` clipped to ``[-bound, bound]``, in their type (float32 stays float32); a NaN
    stays a NaN (``min``/``max`` may drop it), so a finite check after it still fails."""
    if g > bound:
        return bound
    if g < -bound:
        return -bound
    return g


@njit(cache=True, inline="always")
def all_finite(y: float, w: float, score: float) -> bool:
    """The input guard of every kernel: an example is learned from only if its target,
    its weight and its score are finite (else it is counted as skipped)."""
    return finite(y) and finite(w) and finite(score)


@njit(cache=True, inline="always")
def step(param: Any, grad: Any, acc: Any, lr: Any, adagrad: bool,
         eps: Any = ADAGRAD_EPS) -> tuple[Any, Any]:
    """One update of one coordinate: returns (new parameter, new AdaGrad accumulator).

    The arithmetic is in the type of the arguments: float64 in the per-event kernels,
    float32 (``eps=np.float32(ADAGRAD_EPS)``) where a float32 loop is to vectorise.
    """
    if adagrad:
        acc = acc + grad * grad
        return param - lr * grad / (math.sqrt(acc) + eps), acc
    return param - lr * grad, acc


@njit(cache=True, inline="always")
def step_at(param: Any, grad: Any, l2: Any, acc: Any, idx: Any, lr: Any, adagrad: bool,
            eps: Any = ADAGRAD_EPS) -> tuple[Any, Any]:
    """:func:`step` of coordinate ``idx`` of a table, with the L2 decay ``l2 * param``
    added to the loss gradient ``grad``.

    ``acc`` is the table's AdaGrad accumulator, read at ``idx`` only with ``adagrad``:
    without it the learners keep a 1-element placeholder. The accumulator returned
    without AdaGrad is 0 (the kernels store accumulators only with AdaGrad).
    """
    decayed = grad + l2 * param
    if adagrad:
        return step(param, decayed, acc[idx], lr, True, eps)
    return param - lr * decayed, type(decayed)(0)


@njit(cache=True, inline="always")
def store(table: Any, acc: Any, idx: Any, value: Any, acc_value: Any, adagrad: bool) -> None:
    """Write a coordinate's new value, and its new accumulator with AdaGrad: the second
    half of :func:`step_at`, once the kernel's finite check has passed."""
    table[idx] = value
    if adagrad:
        acc[idx] = acc_value


@njit(cache=True, inline="always")
def store_row(table: Any, acc: Any, r: int, values: Any, acc_values: Any,
              adagrad: bool) -> None:
    """:func:`store` of row ``r`` from vectors of new values and accumulators."""
    for f in range(table.shape[1]):
        table[r, f] = values[f]
    if adagrad:
        for f in range(table.shape[1]):
            acc[r, f] = acc_values[f]


@njit(cache=True, inline="always")
def soft_threshold(param: float, amount: float) -> float:
    """Proximal step of L1: shrink towards zero by ``amount``, stopping at zero."""
    if amount <= 0.0:
        return param
    if param > amount:
        return param - amount
    if param < -amount:
        return param + amount
    return 0.0
