"""The contenders of the end-to-end benchmark, each run as its own process.

What teams write instead of freshrec, written the way the libraries' own tutorials and
documentation write them:

    sklearn_loop   confluent-kafka loop → ``json.loads`` → ``FeatureHasher`` over user and
                   item → ``SGDRegressor.partial_fit`` in batches of 100
    river_loop     confluent-kafka loop → ``json.loads`` → River ``reco.BiasedMF``,
                   ``predict_one`` then ``learn_one``, one event at a time

and freshrec itself:

    freshrec_job   the real service (``service.runtime.job.Job``) with a thin probe that
                   reports when each event was learned

Every contender speaks the same small protocol (``protocol``) with the benchmark driver,
so the driver measures them all the same way. Run one by hand with
``python -m service.bench.baselines NAME SPEC_JSON``.
"""

CONTENDERS = ("freshrec-micro-batch", "freshrec-per-event", "sklearn-tutorial", "river-biasedmf")
