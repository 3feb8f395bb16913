"""Finding the one message an unexpected exception follows, so it cannot stop the stream.

The decoder turns every fault of one message into a rejection, but a bug further on (in
preprocessing or a learner) raises out of a whole batch, with the model half updated.
The job then does what a crash and a restart would do, without the crash: it reloads the
newest checkpoint and reads the events after it again (``Job._rewind``). This class
decides how those events are processed the second time:

1. A batch of several messages that raised makes all of them *suspects*.
2. Suspects are processed one message per pipeline call. Most pass: the exception came
   from their combination, or from a state that the replay does not reach again.
3. A single message that raises alone is *poisoned*. After the next rewind it never
   reaches the pipeline again: it is rejected as ``internal_error`` with the exception's
   type and message, and dead-lettered like any other rejection.

Each failure therefore either narrows a batch to single messages or poisons exactly one
message, and a poisoned message is never processed again by this process; suspects stay
suspects until a durable checkpoint has moved past them, so a later rewind cannot put
them together again. The number of rewinds is bounded by twice the number of messages
that raise alone (plus one per batch that raises only as a whole), so a crash loop on one
offset cannot happen.

Example
-------
>>> iso = FailureIsolation()
>>> iso.failed([(0, 10), (0, 11), (0, 12)], "KeyError: 'x'")
>>> iso.plan([(0, 9), (0, 10), (0, 11), (0, 12), (0, 13)])
[Run(indices=[0], poisoned=False), Run(indices=[1], poisoned=False), \
Run(indices=[2], poisoned=False), Run(indices=[3], poisoned=False), \
Run(indices=[4], poisoned=False)]
>>> iso.failed([(0, 11)], "KeyError: 'x'")
>>> [(r.indices, r.poisoned) for r in iso.plan([(0, 11), (0, 12), (0, 13)])]
[([0], True), ([1], False), ([2], False)]
>>> iso.reason((0, 11))
"KeyError: 'x'"
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

Position = tuple[int, int]  # (partition, offset)


@dataclass(slots=True)
class Run:
    """Consecutive messages of a batch processed in one pipeline call (or rejected)."""

    indices: list[int]
    poisoned: bool = False


@dataclass(slots=True)
class FailureIsolation:
    """Suspect ranges and poisoned offsets, per partition (see the module docstring)."""

    suspects: dict[int, tuple[int, int]] = field(default_factory=dict)
    """partition -> (first, last) offset of messages to process one at a time."""
    poisoned: dict[Position, str] = field(default_factory=dict)
    """(partition, offset) -> what it raised."""

    @property
    def active(self) -> bool:
        return bool(self.suspects or self.poisoned)

    def failed(self, positions: Sequence[Position], error: str) -> None:
        """The messages at ``positions``, processed in one call, raised ``error``."""
        if not positions:
            raise ValueError("a failure needs the positions of the messages that raised")
        if len(positions) == 1:
            self.poisoned[positions[0]] = error
            return
        for partition, offset in positions:
            lo, hi = self.suspects.get(partition, (offset, offset))
            self.suspects[partition] = (min(lo, offset), max(hi, offset))

    def reason(self, position: Position) -> str:
        return self.poisoned[position]

    def plan(self, positions: Sequence[Position]) -> list[Run]:
        """How to process a batch: runs in stream order that together cover it once."""
        runs: list[Run] = []
        together: list[int] = []
        for i, position in enumerate(positions):
            if position in self.poisoned:
                kind: bool | None = True
            else:
                span = self.suspects.get(position[0])
                kind = False if span is not None and span[0] <= position[1] <= span[1] else None
            if kind is None:
                together.append(i)
                continue
            if together:
                runs.append(Run(together))
                together = []
            runs.append(Run([i], poisoned=kind))
        if together:
            runs.append(Run(together))
        return runs

    def durable(self, offsets: Mapping[int, int]) -> None:
        """A checkpoint with these next offsets is durable: nothing before them is read
        again in this process, so suspects and poison before them are forgotten.

        (Suspects are kept until then, not only until they pass: a later rewind to an
        older checkpoint would otherwise put them together in one call again.)
        """
        for partition, (_, hi) in list(self.suspects.items()):
            if offsets.get(partition, -1) > hi:
                del self.suspects[partition]
        for position in [p for p in self.poisoned if offsets.get(p[0], -1) > p[1]]:
            del self.poisoned[position]
