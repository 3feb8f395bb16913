"""Dense slots for the rows one mini-batch touches, for the micro-batch kernels.

A micro-batch step sums each touched parameter row's gradient over the mini-batch, then
applies one step per row. Accumulating into tables as large as the parameters (one
gradient row per user, item or hashed feature) scatters the writes over hundreds of
megabytes at the default capacity (1M users x 32 factors is 128 MB of scratch) and misses
the cache on every touch. Instead each touched row gets a *slot*, numbered in order of
first touch inside the mini-batch: the gradient buffers are ``slots x k`` (a few tens of
kilobytes, resident in L1/L2), and the only table of the parameters' length is the
``int32`` map from row to slot (4 bytes a row), which is ``-1`` everywhere between
mini-batches: the kernels put back every entry they claimed.

The slots' gradient buffers are likewise zero between mini-batches (they start as
``np.zeros``, and :func:`apply_slots` clears every slot it has read), so claiming a slot
clears nothing. Clearing in :func:`claim_row` instead, a branch holding a loop over the
factors, left numba's reference counting of the four buffers and the counts in the
scoring loop (the inliner's copies of array arguments across that branch are not
pruned): ten atomic increments and decrements per example for BiasedMF, whose
micro-batch kernel ran 6.9M events/s on MovieLens 100k with them and 18.5M without.
An array-taking helper inlined into a hot loop should stay free of such branches.

numba's on-disk cache (``cache=True``) keys a kernel on its own source file only: after
changing this module, clear ``service/learners/__pycache__/*.nb[ic]`` (or touch
``biased_mf.py``, ``fm.py`` and ``bpr.py``), or their cached kernels keep the old code.

Every function here is ``inline="always"``, :func:`apply_slots` too, although it is
large: while it was a function of its own, a process that compiled a kernel ran
``apply_slots``' separately compiled code and a process that loaded the kernel from the
cache ran the copy linked into it, and the two differed in the last bits (BPR
micro-batch SGD; ``test_learner_state``), so a replay after a restart was not bitwise
the same run. Inlined, there is one copy, whichever process compiled it.

Example
-------
>>> import numpy as np
>>> slots = RowSlots(n_rows=10)
>>> slot, rows, count = slots.arrays(capacity=4)
>>> s, n = claim(slot, rows, count, 7, 0)
>>> s, n, int(rows[0]), int(count[0])
(0, 1, 7, 0)
>>> claim(slot, rows, count, 7, n)        # the same row again: the same slot
(0, 1)
>>> release(slot, rows, n); bool((slot == -1).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from service.learners.optim import ADAGRAD_EPS, FASTMATH, clip, finite, soft_threshold
from service.learners.strategies import row_rate

F32 = npt.NDArray[np.float32]
I32 = npt.NDArray[np.int32]
I64 = npt.NDArray[np.int64]
# (user slots, GU, gbu, item slots, GQ, gbi, tmp): see FactorScratch.arrays.
ScratchArrays = tuple[tuple[I32, I64, I32], F32, F32, tuple[I32, I64, I32], F32, F32, F32]


class RowSlots:
    """The row-to-slot map of one table and per-slot bookkeeping, reused across calls.

    Parameters
    ----------
    n_rows
        Rows of the parameter table (the map's length).
    """

    def __init__(self, n_rows: int) -> None:
        if n_rows < 1:
            raise ValueError(f"n_rows must be >= 1, got {n_rows}")
        self.n_rows = int(n_rows)
        self._slot = np.full(self.n_rows, -1, dtype=np.int32)
        self._rows = np.zeros(0, dtype=np.int64)
        self._count = np.zeros(0, dtype=np.int32)

    def arrays(self, capacity: int) -> tuple[I32, I64, I32]:
        """The map, and the slot rows and counts for at least ``capacity`` slots.

        ``capacity`` is capped at ``n_rows`` (a mini-batch cannot touch more rows than
        exist); the buffers grow, never shrink, so steady state allocates nothing.
        """
        capacity = max(1, min(int(capacity), self.n_rows))
        if len(self._rows) < capacity:
            self._rows = np.zeros(capacity, dtype=np.int64)
            self._count = np.zeros(capacity, dtype=np.int32)
        return self._slot, self._rows, self._count



class FactorScratch:
    """Micro-batch scratch of a model with user and item factor rows (BiasedMF, BPR):
    the slots of both tables and, per slot, the sums of gradients and of their squares
    that :func:`apply_slots` reads. Reused across calls and grown when a larger
    mini-batch comes; the kernels leave the row-to-slot maps empty and the buffers
    zero again.

    Parameters
    ----------
    n_users, n_items
        Rows of the user and item tables.
    n_factors
        Columns of the factor tables.
    """

    def __init__(self, n_users: int, n_items: int, n_factors: int) -> None:
        self.users = RowSlots(n_users)
        self.items = RowSlots(n_items)
        self.n_factors = int(n_factors)
        self._buffers: tuple[F32, F32, F32, F32, F32] | None = None

    def arrays(self, user_slots: int, item_slots: int) -> ScratchArrays:
        """``(user slots, GU, gbu, item slots, GQ, gbi, tmp)`` for at least that many
        user and item slots; ``G*``/``gb*`` hold sums of gradients at ``[0]`` and of their
        squares at ``[1]``, ``tmp`` is a vector of ``n_factors``."""
        su = self.users.arrays(user_slots)
        si = self.items.arrays(item_slots)
        b = self._buffers
        if b is None or b[0].shape[1] < len(su[1]) or b[2].shape[1] < len(si[1]):
            k = self.n_factors
            b = self._buffers = (np.zeros((2, len(su[1]), k), dtype=np.float32),
                                 np.zeros((2, len(su[1])), dtype=np.float32),
                                 np.zeros((2, len(si[1]), k), dtype=np.float32),
                                 np.zeros((2, len(si[1])), dtype=np.float32),
                                 np.zeros(k, dtype=np.float32))
        GU, gbu, GQ, gbi, tmp = b
        return su, GU, gbu, si, GQ, gbi, tmp

@njit(cache=True, inline="always")
def claim(slot: I32, rows: I64, count: I32, r: int, n: int) -> tuple[int, int]:
    """The slot of row ``r`` (a new one if ``r`` is not in a slot yet).

    ``n`` is the number of slots in use; returns ``(slot of r, slots in use)``. A new
    slot's count starts at 0 and the caller counts the examples that add a gradient to
    it (a slot may be claimed to cache a value for scoring an example that is then not
    learned from). The slot's buffers are zero already (see the module's notes).
    """
    s = slot[r]
    if s < 0:
        s = n
        slot[r] = s
        rows[s] = r
        count[s] = 0
        return s, n + 1
    return s, n


@njit(cache=True, inline="always")
def claim_row(slot: I32, rows: I64, count: I32, r: int, n: int) -> tuple[int, int]:
    """:func:`claim` for an example that adds a gradient: the slot is counted once more.
    A new slot's buffers are zero already (see the module's notes)."""
    s, m = claim(slot, rows, count, r, n)
    count[s] += 1
    return s, m


@njit(cache=True, inline="always")
def add_gradient(gb: F32, gb2: F32, s: int, g: Any) -> None:
    """Add one example's gradient ``g`` of a linear term (bias, weight) to slot ``s``'s
    sum, and its square (read by :func:`apply_slots` with AdaGrad only: summing it
    regardless keeps a branch out of the scoring loop, see the module's notes).

    The factor rows' sums stay written out in each kernel's scoring loop, the AdaGrad and
    SGD loops apart: a helper looping over the row left reference counting in that loop
    (BiasedMF micro-batch 4.7M events/s against 6.3M written out, before the buffers
    were left zero), and a call per factor a branch (5.8M)."""
    gb[s] += g
    gb2[s] += g * g


@njit(cache=True, inline="always")
def tally(updates: int, skipped: int, learned: int, rejected: int) -> tuple[int, int]:
    """The kernels' counters after a mini-batch of ``learned`` examples whose row steps
    the finite check ``rejected`` so many times: a rejected row step counts as one
    skipped example, and at most the mini-batch's examples are."""
    rejected = min(rejected, learned)
    return updates + learned - rejected, skipped + rejected


@njit(cache=True, inline="always")
def release(slot: I32, rows: I64, n: int) -> None:
    """Put back the ``n`` claimed map entries (the map is all ``-1`` again)."""
    for s in range(n):
        slot[rows[s]] = -1


@njit(cache=True, fastmath=FASTMATH, error_model="numpy", inline="always")
def apply_slots(slot: I32, rows: I64, count: I32, m: int, gb: F32, gb2: F32, G: F32,
                G2: F32, b: F32, F: F32, ab: F32, aF: F32, eta: float, adagrad: bool,
                with_bias: bool, l1_bias: float, l2_bias: float, l2: float,
                tmpa: F32, max_step: float = 0.0) -> int:
    """One step per slot from its examples' gradients; frees the slots and leaves their
    buffers zero.

    Each slot ``s`` with a count ``c`` above zero holds, for row ``rows[s]``, the sum of
    its examples' loss gradients and the sum of their squares (AdaGrad only): ``gb[s]``
    and ``gb2[s]`` for its linear term ``b`` (a bias or a linear weight; ignored unless
    ``with_bias``), ``G[s]`` and ``G2[s]`` for its factors ``F``. The L2 terms are added
    here, with the parameters frozen for the mini-batch. ``G[s]`` is overwritten with the row's new
    factors, which the guard checks (one finite check on the sum of every new value)
    before any is written; a rejected row is counted and left as it was.

    * SGD steps along the mean gradient with the rate ``c`` sequential steps have on a
      quadratic loss (:func:`~service.learners.strategies.row_rate`), so popular rows
      learn about as fast as they would per event instead of ``c`` times slower.
    * AdaGrad adds every example's squared gradient to the accumulator, as per event,
      and steps along the *summed* gradient: ``-eta sum g / sqrt(acc + sum g^2)``. That
      is the sum of the ``c`` per-event steps with the denominator frozen at its final
      value, so it is per event exactly for ``c = 1`` and never moves a coordinate by
      more than ``eta sqrt(c)``. (Stepping along the mean gradient with the accumulator
      grown by its square learned too slowly early on: RMSE 0.62 against 0.54 per event
      over 20k events of a small stream; ``row_rate`` on top of that overshot, 1.09.)

    ``max_step`` (AdaGrad; 0: none) bounds how far the step moves each coordinate; FM
    binary passes ``eta``, the most one per-event step can move it. The sum of squares
    added to the accumulator, ``sum_e (g_e + l2 p)^2`` expanded, is clamped at 0: float32
    rounding made it -1.7e-16 for a row seen once (FM, ``ratings``), and the square root
    of it was a NaN that reached the factors *past the finite check*: with FMA contraction
    (``FASTMATH``) LLVM may round the copies of one expression differently, here the
    stored accumulator and the square root's argument (without ``contract`` no NaN got
    through on the same stream). Clamped, no copy can be negative (``test_learner_guard``).

    L1 on the linear term is a proximal soft threshold after the step. Float32
    throughout, so the factor loops vectorise.
    """
    k = F.shape[1]
    l2f = np.float32(l2)
    l2b = np.float32(l2_bias)
    eps = np.float32(ADAGRAD_EPS)
    two = np.float32(2.0)  # an int literal would promote the float32 loops to float64
    zero = np.float32(0.0)
    cap = np.float32(max_step)
    capped = max_step > 0.0
    rejected = 0
    for s in range(m):
        r = rows[s]
        slot[r] = -1
        if count[s] == 0:
            continue
        c = np.float32(count[s])
        inv = np.float32(1.0) / c
        rate = np.float32(eta) if adagrad else np.float32(row_rate(eta, count[s]))
        nb = np.float32(0.0)
        nab = np.float32(0.0)
        if with_bias:
            lb = l2b * b[r]
            if adagrad:
                # sum_e (g_e + lb)^2, expanded; rounding can make it slightly negative
                # (then sqrt gives NaN), so it is clamped at its true lower bound, 0.
                nab = ab[r] + max(gb2[s] + two * lb * gb[s] + c * lb * lb, zero)
                d = rate * (gb[s] + c * lb) / (np.sqrt(nab) + eps)
                if capped:
                    d = clip(d, cap)
                nb = b[r] - d
            else:
                nb = b[r] - rate * (gb[s] * inv + lb)
            if l1_bias > 0.0:
                nb = np.float32(soft_threshold(nb, float(rate) * l1_bias))
        total = nb
        if adagrad:
            for f in range(k):
                p = F[r, f]
                lp = l2f * p
                acc = aF[r, f] + max(G2[s, f] + two * lp * G[s, f] + c * lp * lp, zero)
                tmpa[f] = acc
                d = rate * (G[s, f] + c * lp) / (np.sqrt(acc) + eps)
                if capped:
                    d = clip(d, cap)
                v = p - d
                G[s, f] = v
                total += v
        else:
            for f in range(k):
                v = F[r, f] - rate * (G[s, f] * inv + l2f * F[r, f])
                G[s, f] = v
                total += v
        if not finite(total):
            rejected += 1
            continue
        if with_bias:
            b[r] = nb
            if adagrad:
                ab[r] = nab
        for f in range(k):
            F[r, f] = G[s, f]
        if adagrad:
            for f in range(k):
                aF[r, f] = tmpa[f]
    # The slots' buffers are left zero for the next mini-batch (see the module's notes).
    for s in range(m):
        gb[s] = 0.0
        gb2[s] = 0.0
        for f in range(k):
            G[s, f] = 0.0
            G2[s, f] = 0.0
    return rejected
