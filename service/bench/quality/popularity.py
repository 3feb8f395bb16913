"""The popularity ranker: the baseline every implicit-feedback model has to beat.

Neither River nor Vowpal Wabbit ships a ranking model for implicit feedback, so on
implicit data freshrec's BPR is compared with this: an item's score is how many
engagements it has had so far. It is evaluated like freshrec's pipeline evaluates BPR
(:func:`service.evaluation.sampled_ranks`): each positive is ranked among 100 items drawn
uniformly from the items seen so far, ties counted against it, with the counts as they
were before the batch of ``batch`` examples it belongs to was learned (the bench passes its
``--batch``, as freshrec's model also ranks a batch before learning it). freshrec draws its
candidates from the item rows it has admitted, so the candidate sets are alike, not equal.

Example
-------
>>> import numpy as np
>>> from service.bench.quality.sequence import ExampleSequence
>>> from service.readers import Interactions
>>> t = Interactions.build("implicit", user=list("abcdef"), item=list("xyxxyx"),
...                        ts_ms=range(6), event_type=["click"] * 6)
>>> run = run_popularity(t, ExampleSequence.of_rows(t.target(), t.ts_ms), batch=2)
>>> run.rank_at.tolist(), int(run.ranks[-1])  # ranked from the 2nd batch; x leads: first
([2, 3, 4, 5], 0)
"""

from __future__ import annotations

import time

import numpy as np

from service.bench.quality.scores import ContenderRun
from service.bench.quality.sequence import ExampleSequence
from service.evaluation import sampled_ranks
from service.readers.interactions import Interactions

clock = time.process_time
CANDIDATES = 100
SEED = 42


def run_popularity(table: Interactions, seq: ExampleSequence, batch: int = 1000
                   ) -> ContenderRun:
    """Rank then count every positive of ``seq``, a batch at a time."""
    _, codes = np.unique(table.item, return_inverse=True)
    item = codes[seq.rows].astype(np.int64)
    counts = np.zeros(int(codes.max()) + 1 if len(codes) else 1, dtype=np.float64)
    rng = np.random.default_rng(SEED)
    ranks, at = [], []
    started = clock()
    for lo in range(0, len(seq), batch):
        hi = min(lo + batch, len(seq))
        seen = np.flatnonzero(counts > 0)
        chunk = item[lo:hi]
        known = np.isin(chunk, seen)
        positives = np.flatnonzero((seq.y[lo:hi] > 0) & known)
        if len(seen) >= 2 and len(positives):
            # Candidates are positions in ``seen`` (row 0 is one of them: shift by one).
            pos_in_seen = np.searchsorted(seen, chunk[positives]) + 1
            lookup = np.concatenate([[np.nan], counts[seen]])

            def score(_users: np.ndarray, cand: np.ndarray, lookup: np.ndarray = lookup
                      ) -> np.ndarray:
                return lookup[cand]

            ranks.append(sampled_ranks(score, np.zeros(len(positives), np.int64), pos_in_seen,
                                       len(seen) + 1, CANDIDATES, rng))
            at.append(lo + positives)
        np.add.at(counts, chunk, 1.0)
    cpu = clock() - started
    return ContenderRun(
        name="popularity", library="baseline", task="ranking", y=seq.y.astype(np.float64),
        pred=np.zeros(len(seq)), weight=seq.weight.astype(np.float64), cpu_seconds=cpu,
        config="engagements so far", timed="ranking and counting",
        ranks=np.concatenate(ranks) if ranks else np.zeros(0, np.int64),
        rank_at=np.concatenate(at) if at else np.zeros(0, np.int64))
