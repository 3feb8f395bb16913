"""Vowpal Wabbit's contenders in a quality run (``vowpalwabbit`` from PyPI).

Each example of the run's sequence becomes one VW text line, with the user in namespace
``u``, the item in ``i`` and the side features in ``x`` (``<map>.<key>=<value>`` for
strings, ``<map>.<key>:<number>`` for numbers), and is learned with ``Workspace.learn``,
whose prediction is made before the update (progressive validation, as VW reports its
"average loss"). Lines are built before the clock starts.

* ``vw-mf`` (ratings): VW's matrix-factorisation example for MovieLens 100k, one pass:
  ``-b 18 -q ui --rank 10 --l2 0.001 --learning_rate 0.015 --power_t 0`` (the example's
  ``--passes 20 --decay_learning_rate 0.97`` need a cache and several passes: not online);
* ``vw-linear`` (ratings): ``--loss_function squared`` with VW's defaults (adaptive,
  normalised, invariant SGD): global, user and item biases;
* ``vw-ftrl`` (clicks): ``--loss_function logistic --link logistic --ftrl`` (VW's FTRL
  defaults, alpha 0.005, beta 0.1);
* ``vw-logistic`` (clicks): ``--loss_function logistic --link logistic``, VW's default
  update (adaptive, normalised, invariant);
* ``vw-sgd`` (clicks): the same with ``--sgd``, plain SGD.

Example
-------
>>> import numpy as np
>>> from service.readers import Interactions
>>> t = Interactions.build("clicks", user=["u 1"], item=["a|b"], ts_ms=[1], label=[1],
...                        features={"context": {"dev": ["ios"], "price": [2.5]}})
>>> vw_lines(t, np.array([0]), np.array([1.0]))
['1 |u u_1 |i a_b |x context.dev=ios context.price:2.5']
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from service.bench.quality.scores import ContenderRun
from service.bench.quality.sequence import ExampleSequence
from service.readers.interactions import Interactions

clock = time.process_time
_UNSAFE = re.compile(r"[\s|:]")


@dataclass(frozen=True, slots=True)
class VWContender:
    """One VW configuration: for which data kinds, with which arguments."""

    name: str
    kinds: tuple[str, ...]
    args: str
    config: str
    default: bool = True


VW: dict[str, VWContender] = {c.name: c for c in (
    VWContender("vw-mf", ("ratings",), "-b 18 -q ui --rank 10 --l2 0.001 --learning_rate 0.015 "
                "--power_t 0", "--rank 10 -q ui, VW's MF example (one pass)"),
    VWContender("vw-linear", ("ratings",), "--loss_function squared",
                "squared loss, defaults: user + item biases"),
    VWContender("vw-ftrl", ("clicks",), "--loss_function logistic --link logistic --ftrl",
                "logistic, --ftrl defaults"),
    VWContender("vw-logistic", ("clicks",), "--loss_function logistic --link logistic",
                "logistic, default adaptive normalised SGD"),
    VWContender("vw-sgd", ("clicks",), "--loss_function logistic --link logistic --sgd",
                "logistic, plain --sgd"),
)}


def _token(value: str) -> str:
    return _UNSAFE.sub("_", value)


def vw_lines(table: Interactions, rows: npt.NDArray[np.int64],
             y: npt.NDArray[np.floating]) -> list[str]:
    """VW text lines of ``rows`` with labels ``y`` (clicks: 1 / -1)."""
    cols = [(f"{m}.{k}", col.tolist()) for m, c in table.features.items()
            for k, col in c.items()]
    users, items = table.user.tolist(), table.item.tolist()
    binary = table.kind != "ratings"
    out = []
    for r, label in zip(rows.tolist(), y.tolist(), strict=True):
        parts = []
        for name, values in cols:
            v = values[r]
            if v is None:
                continue
            if isinstance(v, float):
                if math.isfinite(v):
                    parts.append(f"{_token(name)}:{v:g}")
            else:
                parts.append(f"{_token(name)}={_token(v)}")
        target = ("1" if label > 0.5 else "-1") if binary else f"{label:g}"
        line = f"{target} |u {_token(users[r])} |i {_token(items[r])}"
        out.append(line + (" |x " + " ".join(parts) if parts else ""))
    return out


def run_vw(contender: VWContender, table: Interactions, seq: ExampleSequence) -> ContenderRun:
    """Predict then learn every example of ``seq`` in order."""
    import vowpalwabbit

    lines = vw_lines(table, seq.rows, seq.y)
    ws = vowpalwabbit.Workspace(contender.args + " --quiet")
    preds = np.empty(len(lines), dtype=np.float64)
    started = clock()
    for j, line in enumerate(lines):
        ex = ws.parse(line)
        ws.learn(ex)
        preds[j] = ex.get_prediction()
        ws.finish_example(ex)
    cpu = clock() - started
    ws.finish()
    return ContenderRun(name=contender.name, library="vw",
                        task="regression" if table.kind == "ratings" else "binary",
                        y=seq.y.astype(np.float64), pred=preds,
                        weight=seq.weight.astype(np.float64), cpu_seconds=cpu,
                        config=contender.args)
