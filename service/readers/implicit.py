"""Implicit-feedback event logs: user, item, timestamp and an event type, no negatives.

The default mapping reads Retailrocket's ``events.csv``
(``timestamp,visitorid,event,itemid,transactionid``, epoch milliseconds, events
``view``/``addtocart``/``transaction``); any other log reads the same way with a
:class:`~service.readers.columns.ColumnMapping` that has an ``event`` column. Views become
``click`` events, add-to-carts ``add_to_cart`` and transactions ``purchase``: freshrec's
positive types, learned by BPR (which samples its own negatives).

Example
-------
>>> import tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), "events.csv")
>>> _ = open(path, "w").write("timestamp,visitorid,event,itemid,transactionid\\n"
...     "1433221332117,257597,view,355908,\\n1433224214164,992329,addtocart,248676,\\n"
...     "1433221000000,257597,transaction,355908,4000\\n")
>>> t = read_implicit(path)
>>> t.kind, t.event_type.tolist()
('implicit', ['click', 'add_to_cart', 'purchase'])
"""

from __future__ import annotations

from pathlib import Path

from service.readers.columns import ColumnMapping, Format, read_table
from service.readers.interactions import Interactions

RETAILROCKET = ColumnMapping(user="visitorid", item="itemid", timestamp="timestamp",
                             event="event", time_unit="ms")


def read_implicit(path: str | Path, mapping: ColumnMapping | None = None,
                  fmt: Format | None = None, limit: int | None = None) -> Interactions:
    """Read an implicit event log (Retailrocket's layout unless ``mapping`` says otherwise)."""
    mapping = mapping or RETAILROCKET
    if mapping.event is None:
        raise ValueError("an implicit log needs an event column: add event=COLUMN to --columns")
    return read_table(path, mapping, fmt=fmt, limit=limit)
