"""Preprocessing: dedup, id encoding, side features, labels and the holdout flag.

The runtime only needs :class:`Preprocessor` and :class:`PreprocessResult`; the pieces are
importable on their own for tests and benchmarks.
"""

from service.preprocess.config import PreprocessConfig
from service.preprocess.preprocessor import Preprocessor, PreprocessResult

__all__ = ["PreprocessConfig", "PreprocessResult", "Preprocessor"]
