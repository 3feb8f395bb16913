"""Readers of public dataset formats into columnar arrays (for benchmarks and replays).

* :func:`read_ratings` — MovieLens-style ratings: tab-separated ``u.data`` (100k),
  ``::``-separated ``ratings.dat`` (1M/10M) or comma-separated ``ratings.csv`` with a
  header (20M/25M/latest).
* :func:`read_criteo` — Criteo display-advertising TSV: label, 13 integer and 26
  categorical (hex) columns, turned into hashed sparse features.
"""

from service.readers.criteo import ClickTable, read_criteo
from service.readers.ratings import RatingsTable, read_ratings

__all__ = ["ClickTable", "RatingsTable", "read_criteo", "read_ratings"]
