"""River's contenders in a quality run: predict, then learn, one example at a time.

Each learns the run's :class:`~service.bench.quality.sequence.ExampleSequence` in order,
from the rows' raw values (River encodes nothing for us):

* ratings, through River's recommender API (``predict_one(user, item)``,
  ``learn_one(user, item, y)``): ``river-biasedmf`` is ``reco.BiasedMF`` as River's
  recommender-systems guide configures it for MovieLens 100k (10 factors, SGD 0.025 on
  biases and 0.05 on factors, normal(0, 0.1) factors, no L2, predictions clipped to the
  rating scale as the guide does: here from the smallest to the largest rating of the
  data); ``river-biasedmf-defaults`` is ``reco.BiasedMF()`` as constructed;
  ``river-baseline`` the guide's biases-only ``reco.Baseline`` (SGD 0.025, no L2,
  clipped);
* clicks, through the classifier API with one-hot features (``user=<id>``, ``item=<id>``,
  ``<map>.<key>=<value>`` for strings, ``<map>.<key>`` with the number for numbers):
  ``river-logreg`` is ``linear_model.LogisticRegression()`` with its defaults,
  ``river-ftrl`` the same with ``optim.FTRLProximal()`` (its defaults), and ``river-fm``
  ``facto.FMClassifier()`` (defaults; slow, so only when named in ``--contenders``).

River has no guide configuration for click data, so the click contenders are River's
defaults. The inputs are prepared before the clock starts: the timing is River's.

Example
-------
>>> import numpy as np
>>> from service.readers import Interactions
>>> from service.bench.quality.sequence import ExampleSequence
>>> t = Interactions.build("ratings", user=["u1", "u2"], item=["a", "a"], ts_ms=[1, 2],
...                        value=[4.0, 2.0])
>>> run = run_river(RIVER["river-baseline"], t, ExampleSequence.of_rows(t.value, t.ts_ms))
>>> run.pred.tolist(), run.library  # clipped to the data's rating range, [2, 4]
([2.0, 4.0], 'river')
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from service.bench.quality.scores import ContenderRun
from service.bench.quality.sequence import ExampleSequence
from service.readers.interactions import Interactions

clock = time.process_time
SEED = 42


@dataclass(frozen=True, slots=True)
class RiverContender:
    """One River model: for which data kinds, how it is made and called."""

    name: str
    kinds: tuple[str, ...]
    config: str
    make: Callable[[], Any]
    api: Literal["reco", "classifier"]
    clip: bool = False
    default: bool = True


def _guide_mf() -> Any:
    from river import optim, reco

    return reco.BiasedMF(
        n_factors=10, bias_optimizer=optim.SGD(0.025), latent_optimizer=optim.SGD(0.05),
        weight_initializer=optim.initializers.Zeros(),
        latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
        l2_bias=0.0, l2_latent=0.0)


def _default_mf() -> Any:
    from river import reco

    return reco.BiasedMF(seed=SEED)


def _guide_baseline() -> Any:
    from river import optim, reco

    return reco.Baseline(optimizer=optim.SGD(0.025), l2=0.0,
                         initializer=optim.initializers.Zeros())


def _logreg() -> Any:
    from river import linear_model

    return linear_model.LogisticRegression()


def _ftrl() -> Any:
    from river import linear_model, optim

    return linear_model.LogisticRegression(optimizer=optim.FTRLProximal())


def _fm() -> Any:
    from river import facto

    return facto.FMClassifier(seed=SEED)


RIVER: dict[str, RiverContender] = {c.name: c for c in (
    RiverContender("river-biasedmf", ("ratings",), "reco.BiasedMF, River's guide config",
                   _guide_mf, "reco", clip=True),
    RiverContender("river-biasedmf-defaults", ("ratings",), "reco.BiasedMF(), defaults",
                   _default_mf, "reco"),
    RiverContender("river-baseline", ("ratings",), "reco.Baseline, River's guide config",
                   _guide_baseline, "reco", clip=True),
    RiverContender("river-logreg", ("clicks",), "LogisticRegression(), defaults", _logreg,
                   "classifier"),
    RiverContender("river-ftrl", ("clicks",), "LogisticRegression(FTRLProximal()), defaults",
                   _ftrl, "classifier"),
    RiverContender("river-fm", ("clicks",), "facto.FMClassifier(), defaults", _fm,
                   "classifier", default=False),
)}


def one_hot(table: Interactions, rows: npt.NDArray[np.int64]) -> list[dict[str, float]]:
    """River feature dicts of ``rows``: ids and strings one-hot, numbers as they are."""
    cols = [(f"{m}.{k}", col.tolist()) for m, c in table.features.items()
            for k, col in c.items()]
    users, items = table.user.tolist(), table.item.tolist()
    out = []
    for r in rows.tolist():
        x = {f"user={users[r]}": 1.0, f"item={items[r]}": 1.0}
        for name, values in cols:
            v = values[r]
            if v is None:
                continue
            if isinstance(v, float):
                if math.isfinite(v):
                    x[name] = v
            else:
                x[f"{name}={v}"] = 1.0
        out.append(x)
    return out


def run_river(contender: RiverContender, table: Interactions, seq: ExampleSequence
              ) -> ContenderRun:
    """Predict then learn every example of ``seq`` in order."""
    model = contender.make()
    n = len(seq)
    preds = np.empty(n, dtype=np.float64)
    ys = seq.y.tolist()
    if contender.api == "reco":
        users = table.user[seq.rows].tolist()
        items = table.item[seq.rows].tolist()
        lo, hi = -math.inf, math.inf
        if contender.clip and table.value is not None:
            lo, hi = float(table.value.min()), float(table.value.max())
        started = clock()
        for j in range(n):
            p = model.predict_one(users[j], items[j])
            preds[j] = min(max(p, lo), hi)
            model.learn_one(users[j], items[j], ys[j])
        cpu = clock() - started
        task = "regression"
    else:
        xs = one_hot(table, seq.rows)
        targets = [v > 0.5 for v in ys]
        started = clock()
        for j in range(n):
            preds[j] = model.predict_proba_one(xs[j]).get(True, 0.5)
            model.learn_one(xs[j], targets[j])
        cpu = clock() - started
        task = "binary"
    return ContenderRun(name=contender.name, library="river", task=task,
                        y=seq.y.astype(np.float64), pred=preds,
                        weight=seq.weight.astype(np.float64), cpu_seconds=cpu,
                        config=contender.config)
