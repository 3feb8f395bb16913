"""FailureIsolation as the job uses it: a stream with messages that make the pipeline
raise, rewinds to the last checkpoint, and in the end every message handled once."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from service.runtime.isolation import FailureIsolation


class Boom(Exception):
    pass


@settings(max_examples=300, deadline=None)
@given(
    n=st.integers(1, 120),
    poison=st.sets(st.integers(0, 119), max_size=6),
    pairs=st.sets(st.tuples(st.integers(0, 119), st.integers(0, 119)), max_size=3),
    batch_sizes=st.lists(st.integers(1, 40), min_size=1, max_size=20),
    checkpoint_every=st.integers(1, 50),
)
def test_every_message_is_applied_once_or_rejected_and_rewinds_are_bounded(
    n: int, poison: set[int], pairs: set[tuple[int, int]], batch_sizes: list[int],
    checkpoint_every: int,
) -> None:
    poison = {o for o in poison if o < n}
    # Messages that raise only when processed in one call together (a state both build).
    combos = {(a, b) for a, b in pairs if a < n and b < n and a != b}

    def process(offsets: list[int]) -> None:
        if any(o in poison for o in offsets):
            raise Boom
        present = set(offsets)
        if any(a in present and b in present for a, b in combos):
            raise Boom

    iso = FailureIsolation()
    checkpoint: tuple[int, list[int]] = (0, [])  # (next offset, applied) made durable
    position, applied = checkpoint[0], list(checkpoint[1])
    rejected: list[int] = []
    rewinds, step = 0, 0
    while position < n:
        size = batch_sizes[step % len(batch_sizes)]
        step += 1
        batch = list(range(position, min(n, position + size)))
        failed = False
        batch_rejected: list[int] = []
        for run in iso.plan([(0, o) for o in batch]):
            offsets = [batch[i] for i in run.indices]
            if run.poisoned:
                batch_rejected.extend(offsets)
                continue
            try:
                process(offsets)
            except Boom:
                iso.failed([(0, o) for o in offsets], "Boom")
                failed = True
                break
            applied.extend(offsets)
        if failed:  # the job's rewind: back to the durable checkpoint
            rewinds += 1
            assert rewinds <= 2 * n + 2, "rewinds must be bounded"
            position, applied = checkpoint[0], list(checkpoint[1])
            rejected = [o for o in rejected if o < position]
            continue
        rejected.extend(batch_rejected)
        position = batch[-1] + 1
        if position % checkpoint_every == 0 or position >= n:
            checkpoint = (position, list(applied))
            iso.durable({0: position})
    assert sorted(applied + rejected) == list(range(n))  # each message once
    assert set(rejected) == poison  # only the messages that fail alone are rejected
    assert not iso.active  # all of it behind the last checkpoint: forgotten


def test_a_failed_batch_becomes_single_message_runs_around_the_others() -> None:
    iso = FailureIsolation()
    iso.failed([(0, 5), (0, 6), (1, 9)], "KeyError")
    runs = iso.plan([(0, 4), (1, 9), (0, 5), (0, 6), (0, 7), (1, 10)])
    assert [(r.indices, r.poisoned) for r in runs] == [
        ([0], False), ([1], False), ([2], False), ([3], False), ([4, 5], False)]
    iso.durable({0: 7, 1: 10})
    assert not iso.active
