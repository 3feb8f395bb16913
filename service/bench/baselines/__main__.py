"""``python -m service.bench.baselines NAME SPEC_JSON``: run one contender process."""

from __future__ import annotations

import sys

from service.bench.baselines.protocol import Progress, WorkerSpec


def tutorial_consumer(spec: WorkerSpec) -> object:
    """The consumer of confluent-kafka's examples: earliest offset, auto-commit on."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": spec.bootstrap,
        "group.id": spec.group_id,
        "auto.offset.reset": "earliest",
    })
    consumer.subscribe([spec.topic])
    return consumer


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m service.bench.baselines NAME SPEC_JSON", file=sys.stderr)
        return 2
    name, spec = argv[0], WorkerSpec.from_json(argv[1])
    progress = Progress(spec)
    progress.listen()
    if name.startswith("freshrec"):
        from service.bench.baselines import freshrec_job

        freshrec_job.run(spec, progress)
        return 0
    if name == "sklearn-tutorial":
        from service.bench.baselines.sklearn_loop import run
    elif name == "river-biasedmf":
        from service.bench.baselines.river_loop import run
    else:
        print(f"unknown contender {name!r}", file=sys.stderr)
        return 2
    consumer = tutorial_consumer(spec)
    try:
        run(spec, progress, consumer)
    finally:
        consumer.close()  # type: ignore[attr-defined]
    progress.finish(applied=progress.position)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
