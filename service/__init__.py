"""freshrec: keeps recommendation models fresh from a Kafka stream of behaviour events.

The package is laid out by stage of the data flow::

    ingest/        Kafka I/O: batch consumer, dead-letter producer, topic admin
    events/        the event contract: pydantic models, batch decoding and validation
    preprocess/    dedup, cleaning, id encoding, scaling, labels
    learners/      online models (predict first, then learn) and update strategies
    evaluation/    progressive validation metrics
    drift/         drift detectors on loss, inputs and predictions
    storage/       object stores (S3, local folder) and the checksummed bundle format
    checkpoint/    model + state + offsets, for exactly-once recovery
    snapshots/     validated, published models: gate, registry, client
    observability/ Prometheus metrics catalogue and the HTTP endpoints
    runtime/       the main job that wires the stages together
    demo/          generated streams with known structure and the demo command
    bench/         benchmarks that print figures
    cli/           the ``freshrec`` command

Processing stages never talk to Kafka or Prometheus themselves: they take and return plain
arrays and counts, and the runtime does the I/O and updates metrics once per batch.
"""

__version__ = "0.1.0"
