"""``freshrec run`` with a planted bug: the pipeline raises, half-way, on a marked event.

Run as ``python -m tests.faulty_pipeline run`` (what ``ServiceProcess(module=...)``
does). The patched ``Pipeline.process`` first processes the batch for real, so the model
and the preprocessing state are changed, and only then raises if any message of the batch
contains ``FRESHREC_TEST_POISON`` (bytes): the worst case for recovery, a half-updated
state that must never reach a checkpoint or the model of the stream.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

from service.cli import main
from service.runtime.pipeline import Pipeline


class PlantedBug(RuntimeError):
    pass


def _install(marker: bytes) -> None:
    original = Pipeline.process

    def process(self: Pipeline, values: Sequence[bytes | None], *args: Any, **kw: Any) -> Any:
        outcome = original(self, values, *args, **kw)
        if any(v is not None and marker in v for v in values):
            raise PlantedBug(f"planted bug: a batch of {len(values)} holds the marker")
        return outcome

    Pipeline.process = process  # type: ignore[method-assign]


if __name__ == "__main__":
    _install(os.environ["FRESHREC_TEST_POISON"].encode())
    sys.exit(main())
