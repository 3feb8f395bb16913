"""fault_in makes a learner's lazily mapped zero tables resident, without changing them."""

from __future__ import annotations

import subprocess
import sys

from service.config import Settings
from service.learners.biased_mf import BiasedMF
from service.runtime.pipeline import Pipeline

_CHILD = """
import numpy as np
from service.learners.biased_mf import BiasedMF
from service.learners.optim import Optimizer

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20

# AdaGrad accumulators of 2^18 users x 32 factors: 32 MB of zeros, mapped lazily.
learner = BiasedMF(1 << 18, 1024, optimizer=Optimizer(kind="adagrad"))
before = {k: v.copy() for k, v in learner.arrays.items()}
rss = rss_mb()
learner.fault_in()
grew = rss_mb() - rss
same = all(np.array_equal(a, before[k]) for k, a in learner.arrays.items())
print(grew, same)
"""


def test_fault_in_takes_the_memory_now_and_keeps_the_values() -> None:
    # A fresh process: in a long test session freed, already resident memory may back
    # the zero tables, and faulting them in would not show in RSS.
    out = subprocess.run([sys.executable, "-c", _CHILD], capture_output=True, text=True,
                         check=True).stdout.split()
    assert float(out[0]) > 24
    assert out[1] == "True"


def test_pipeline_faults_the_learner_in_only_when_preallocating() -> None:
    calls: list[str] = []

    class Spy(BiasedMF):
        def fault_in(self) -> None:
            calls.append("fault_in")

    spy = Spy(64, 32)
    Pipeline(Settings(preprocess={"preallocate": False}), learner=spy)  # type: ignore[arg-type]
    assert calls == []
    pipeline = Pipeline(Settings(preprocess={"preallocate": True}),  # type: ignore[arg-type]
                        learner=spy)
    assert calls == ["fault_in"]
    pipeline.replace_learner(spy)
    assert calls == ["fault_in", "fault_in"]
