"""Progressive validation: metrics of predictions made before the model learned.

:class:`ProgressiveEvaluator` picks the metric family for a learner's task:
:class:`RegressionMetrics` (RMSE, MAE), :class:`BinaryMetrics` (log loss, AUC) and
:class:`RankingMetrics` (recall@k, NDCG@k over sampled candidates, see
:func:`sampled_ranks`), each cumulative and over a rolling window, updated per batch from
arrays and checkpointable as arrays.
"""

from service.evaluation.binary import BinaryMetrics, auc_from_histograms, auc_from_scores
from service.evaluation.progressive import ProgressiveEvaluator
from service.evaluation.ranking import RankingMetrics, sampled_ranks
from service.evaluation.regression import RegressionMetrics
from service.evaluation.window import Window

__all__ = [
    "BinaryMetrics",
    "ProgressiveEvaluator",
    "RankingMetrics",
    "RegressionMetrics",
    "Window",
    "auc_from_histograms",
    "auc_from_scores",
    "sampled_ranks",
]
