"""Baseline: a confluent-kafka loop feeding River's ``reco.BiasedMF`` one event at a time.

This is how River's documentation writes online matrix factorisation (predict, then learn,
per event), put behind the consumer loop of confluent-kafka's own examples. The model's
hyperparameters are those of River's recommender-systems guide for the 100k-rating movie
dataset, predictions clipped to the rating scale as the guide does.

Example
-------
>>> model = RiverBiasedMF()
>>> model.apply(b'{"user_id": "u1", "item_id": "i1", "value": 4.0}')  # (4 - 1)**2
9.0
>>> round(model.predict("u1", "i1"), 3) > 1.0
True

References
----------
River, "Matrix Factorization for Recommender Systems" (user guide), and
``river.reco.BiasedMF``.
"""

from __future__ import annotations

import json
from typing import Any

from service.bench.baselines.protocol import Progress, WorkerSpec


class RiverBiasedMF:
    """River's biased MF with the documented settings, fed raw JSON message values."""

    def __init__(self, y_min: float = 1.0, y_max: float = 5.0) -> None:
        from river import optim, reco

        self.y_min, self.y_max = y_min, y_max
        self.model = reco.BiasedMF(
            n_factors=10,
            bias_optimizer=optim.SGD(0.025),
            latent_optimizer=optim.SGD(0.05),
            weight_initializer=optim.initializers.Zeros(),
            latent_initializer=optim.initializers.Normal(mu=0.0, sigma=0.1, seed=73),
            l2_bias=0.0,
            l2_latent=0.0,
        )

    def predict(self, user: str, item: str) -> float:
        p = self.model.predict_one(user, item)
        return min(max(p, self.y_min), self.y_max)

    def apply(self, value: bytes) -> float:
        """Predict then learn one event; the squared error of the prediction."""
        event = json.loads(value)
        user, item, y = event["user_id"], event["item_id"], float(event["value"])
        error = y - self.predict(user, item)
        self.model.learn_one(user, item, y)
        return error * error


def run(spec: WorkerSpec, progress: Progress, consumer: Any) -> None:
    """The loop: poll one message, predict, learn, repeat (``consumer`` is subscribed)."""
    model = RiverBiasedMF()
    measured = spec.measure_events
    sq_err, n_scored = 0.0, 0
    while not progress.done():
        msg = consumer.poll(0.1)
        if msg is None or msg.error():
            continue
        progress.started()
        offset = msg.offset()
        err = model.apply(msg.value())
        if offset < measured:
            sq_err += err
            n_scored += 1
        if progress.wants_sample(offset):
            progress.sample(msg.timestamp()[1])
        progress.advance(offset + 1, sq_err=sq_err, n_scored=n_scored)
