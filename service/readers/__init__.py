"""Readers of public dataset formats into columnar arrays (for benchmarks and replays).

* :func:`read_ratings` — MovieLens-style ratings: tab-separated ``u.data`` (100k),
  ``::``-separated ``ratings.dat`` (1M/10M) or comma-separated ``ratings.csv`` with a
  header (20M/25M/latest).
* :func:`read_criteo` — Criteo display-advertising TSV: label, 13 integer and 26
  categorical (hex) columns, turned into hashed sparse features.

For replaying a data set through the whole pipeline, each format also reads into
:class:`Interactions` (ids, times, target, side features), which :func:`replay` turns
into freshrec events in time order:

* :func:`read_movielens` — the MovieLens formats above;
* :func:`read_criteo_rows` — Criteo TSV (no timestamps: file order, synthetic times);
* :func:`read_avazu` — Avazu CSV (``id, click, hour, C1, ...``);
* :func:`read_table` — any CSV or JSON Lines file through a :class:`ColumnMapping`;
* :func:`read_implicit` — implicit event logs (Retailrocket's ``events.csv`` layout).
"""

from service.readers.avazu import read_avazu
from service.readers.columns import ColumnMapping, read_table
from service.readers.criteo import ClickTable, read_criteo, read_criteo_rows
from service.readers.implicit import read_implicit
from service.readers.interactions import Interactions
from service.readers.ratings import RatingsTable, read_movielens, read_ratings
from service.readers.replay import Replay, replay

__all__ = ["ClickTable", "ColumnMapping", "Interactions", "RatingsTable", "Replay",
           "read_avazu", "read_criteo", "read_criteo_rows", "read_implicit", "read_movielens",
           "read_ratings", "read_table", "replay"]
