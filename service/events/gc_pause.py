"""Hold Python's cyclic garbage collector while one batch is processed.

A batch allocates a few containers per message (parsed dicts, feature lists), all acyclic
and freed by reference counting. Yet every 700 container allocations trigger a
collection, and every hundredth of those a full one over the whole heap (hundreds of
thousands of objects once numba and pydantic are loaded): about 1 µs per message, a third
of the decoding budget, spent finding nothing. Collections resume, and catch up, when the
batch is done, so cycles created elsewhere are still collected.

Example
-------
>>> import gc
>>> with gc_paused():
...     gc.isenabled()
False
>>> gc.isenabled()
True
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused() -> Iterator[None]:
    """Disable the cyclic collector inside the block (re-entrant: an outer pause wins)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()
