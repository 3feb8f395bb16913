"""Publish a generated stream to the configured topic: ``python -m service.demo.produce``.

Used by docker-compose.yml's demo producer; reads the same ``FRESHREC_KAFKA__*`` settings
as the service, so both sides agree on the broker and topic.
"""

from __future__ import annotations

import argparse
import time

from service.config import Settings
from service.demo.generator import StreamSpec, SyntheticStream
from service.demo.publish import make_producer, publish, user_key
from service.ingest.admin import ensure_topics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m service.demo.produce",
        description="Publish generated rating events to FRESHREC_KAFKA__TOPIC.",
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="how many events")
    parser.add_argument("--rate", type=float, default=5_000.0, help="events/s (0 = max)")
    parser.add_argument("--mode", choices=["ratings", "behaviour"], default="ratings")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    kafka = Settings().kafka
    ensure_topics(kafka.bootstrap_servers, {kafka.topic: kafka.topic_partitions})
    stream = SyntheticStream(StreamSpec(mode=args.mode, seed=args.seed))
    producer = make_producer(kafka.bootstrap_servers)
    sent = 0
    chunk = 10_000
    while sent < args.events:
        # Event times follow the wall clock so the service's lateness checks accept them.
        values = stream.encoded_events(
            min(chunk, args.events - sent), start_ms=int(time.time() * 1000) - stream.position,
        )
        sent += publish(producer, kafka.topic, values, key=user_key, rate=args.rate)
        print(f"published {sent:,} events to {kafka.topic}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
