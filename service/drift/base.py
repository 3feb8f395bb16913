"""What every drift detector offers the monitor: batch updates, a statistic, exact state."""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt


@runtime_checkable
class DriftDetector(Protocol):
    """A detector fed a batch of values at a time.

    ``update`` returns the positions (indices into the batch) at which a drift was
    detected, so the caller can report the exact event; ``statistic`` is the number a
    dashboard plots; ``get_state``/``set_state`` round-trip the state exactly as numpy
    arrays plus JSON-able parameters (never pickle).
    """

    n_detections: int
    #: The statistic at each detection returned by the last ``update``.
    last_statistics: npt.NDArray[np.float64]

    def update(self, values: npt.ArrayLike) -> npt.NDArray[np.int64]:
        """Feed ``values`` in stream order; return the positions of detections."""
        ...

    @property
    def statistic(self) -> float:
        """The detector's current test statistic."""
        ...

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        """Arrays and JSON-able parameters that ``set_state`` restores exactly."""
        ...

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        """Restore what ``get_state`` returned."""
        ...


def check_params(saved: dict[str, Any], current: dict[str, Any], what: str) -> None:
    """Refuse a state saved with other parameters: its arrays would mean something else.

    ``n_detections`` is state, not a parameter, and is not compared.
    """
    for key, value in current.items():
        if key == "n_detections":
            continue
        if saved.get(key) != value:
            raise ValueError(
                f"{what} state was saved with {key}={saved.get(key)!r} but this detector has "
                f"{key}={value!r}; restore the previous drift settings or start without the "
                "saved drift state."
            )
