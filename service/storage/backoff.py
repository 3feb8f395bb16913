"""Retries with exponential backoff and full jitter.

Parameters
----------
retries
    Retries after the first attempt (0: try once).
base_s
    Upper bound of the first sleep; doubles on every retry.
max_s
    Largest sleep between two attempts.
sleep, rng
    Injected so that tests run instantly and deterministically.

Example
-------
>>> calls = []
>>> def flaky() -> str:
...     calls.append(1)
...     if len(calls) < 3:
...         raise ConnectionError("try again")
...     return "ok"
>>> policy = RetryPolicy(retries=5, base_s=0.01, sleep=lambda s: None)
>>> policy.run(flaky, is_transient=lambda e: isinstance(e, ConnectionError))
'ok'
>>> len(calls)
3

References
----------
Marc Brooker, "Exponential Backoff And Jitter", AWS Architecture Blog, 2015 (full jitter).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


class RetriesExhausted(Exception):
    """Every attempt failed with a transient error; ``__cause__`` is the last one."""

    def __init__(self, attempts: int, last: BaseException) -> None:
        super().__init__(f"{attempts} attempts failed; last error: {last}")
        self.attempts = attempts
        self.last = last


@dataclass(slots=True)
class RetryPolicy:
    """Run a callable, retrying transient failures with full-jitter exponential backoff."""

    retries: int = 5
    base_s: float = 0.2
    max_s: float = 5.0
    sleep: Callable[[float], None] = time.sleep
    rng: random.Random = field(default_factory=random.Random)

    def __post_init__(self) -> None:
        if self.retries < 0:
            raise ValueError(f"retries must be >= 0, got {self.retries}")
        if self.base_s < 0 or self.max_s < 0:
            raise ValueError("base_s and max_s must be >= 0")

    def delay(self, attempt: int) -> float:
        """Sleep before retry number ``attempt`` (0-based): uniform in [0, min(max, base*2^n)].

        Full jitter spreads out clients that failed together, so they do not hammer a
        recovering server in lock step.
        """
        cap = min(self.max_s, self.base_s * (2.0**attempt))
        return self.rng.uniform(0.0, cap)

    def run(self, fn: Callable[[], T], is_transient: Callable[[BaseException], bool]) -> T:
        """``fn()``; transient errors are retried, others propagate at once.

        Raises
        ------
        RetriesExhausted
            When the last attempt also failed transiently.
        """
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:
                if not is_transient(exc):
                    raise
                if attempt >= self.retries:
                    raise RetriesExhausted(attempt + 1, exc) from exc
                self.sleep(self.delay(attempt))
                attempt += 1
