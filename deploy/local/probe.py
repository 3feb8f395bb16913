#!/usr/bin/env python3
"""Readiness probes for the local stack (called by deploy/local/stack.sh).

An open port is not readiness: Kafka accepts connections before its broker has
registered with the controller, and an S3 server may listen before it can serve.
So each probe makes a real request, in a loop, until a shared deadline:

  kafka       a metadata request (AdminClient.list_topics) that lists a broker
  s3          ListBuckets with the root credentials, then creates the default
              bucket if it is missing (idempotent)
  prometheus  GET /-/ready answers 200

If the process that is supposed to serve dies meanwhile (its pid is given), the
probe fails at once instead of waiting out the deadline, and prints the end of
the service's log.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path


class NotReady(Exception):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie still answers kill(0); it is dead for our purposes.
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state != "Z"


def _tail(path: str | None, lines: int = 25) -> str:
    if not path:
        return ""
    try:
        text = Path(path).read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


def check_kafka(bootstrap: str) -> Callable[[], str]:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient(
        {
            "bootstrap.servers": bootstrap,
            # librdkafka logs every refused connection to stderr; while the broker
            # boots that is expected noise.
            "log_level": 0,
            # Default backoff grows to 10 s, which would hide a broker that came up.
            "reconnect.backoff.ms": 100,
            "reconnect.backoff.max.ms": 500,
        }
    )

    def check() -> str:
        try:
            md = admin.list_topics(timeout=2)
        except Exception as exc:  # KafkaException: transport / timeout
            raise NotReady(f"metadata request failed: {exc}") from exc
        if not md.brokers:
            raise NotReady("metadata lists no broker yet")
        return f"{len(md.brokers)} broker(s), cluster {md.cluster_id}"

    return check


def check_s3(url: str, access_key: str, secret_key: str, region: str, bucket: str | None):
    import boto3
    from botocore.config import Config

    s3 = boto3.client(
        "s3",
        endpoint_url=url,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=2,
            read_timeout=5,
        ),
    )

    def check() -> str:
        try:
            names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
        except Exception as exc:
            raise NotReady(f"ListBuckets failed: {exc}") from exc
        if bucket and bucket not in names:
            # Already owned: another `up` created it concurrently; fine.
            with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
                s3.create_bucket(Bucket=bucket)
            return f"created bucket {bucket!r}"
        return f"{len(names)} bucket(s)"

    return check


def check_prometheus(url: str) -> Callable[[], str]:
    def check() -> str:
        try:
            with urllib.request.urlopen(url.rstrip("/") + "/-/ready", timeout=2) as resp:
                if resp.status != 200:
                    raise NotReady(f"/-/ready answered {resp.status}")
        except (urllib.error.URLError, OSError) as exc:
            raise NotReady(f"/-/ready failed: {exc}") from exc
        return "ready"

    return check


def wait_for(
    name: str, check, deadline: float, pid: int | None, log: str | None, quiet: bool = False
) -> None:
    started = time.monotonic()
    last = "no attempt made"
    while True:
        if pid is not None and not _alive(pid):
            sys.exit(
                f"{name}: the process (pid {pid}) exited before becoming ready.\n"
                f"  Log: {log}\n{_tail(log)}"
            )
        try:
            detail = check()
        except NotReady as exc:
            last = str(exc)
        else:
            if not quiet:
                print(
                    f"  {name} ready in {time.monotonic() - started:.1f}s ({detail})",
                    file=sys.stderr,
                )
            return
        if time.monotonic() >= deadline:
            sys.exit(
                f"{name}: not ready before the deadline. Last error: {last}\n"
                f"  Log: {log}\n{_tail(log)}"
            )
        time.sleep(0.2)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--timeout", type=float, default=120.0, help="seconds, shared by all probes")
    p.add_argument("--quiet", action="store_true", help="print nothing on success")
    p.add_argument("--kafka", metavar="HOST:PORT")
    p.add_argument("--kafka-pid", type=int)
    p.add_argument("--kafka-log")
    p.add_argument("--s3", metavar="URL")
    p.add_argument("--s3-access-key")
    p.add_argument("--s3-secret-key")
    p.add_argument("--s3-region", default="us-east-1")
    p.add_argument("--s3-bucket", help="create this bucket if missing")
    p.add_argument("--s3-pid", type=int)
    p.add_argument("--s3-log")
    p.add_argument("--prometheus", metavar="URL")
    p.add_argument("--prometheus-pid", type=int)
    p.add_argument("--prometheus-log")
    a = p.parse_args()

    try:
        probes = []
        if a.kafka:
            probes.append(("kafka", check_kafka(a.kafka), a.kafka_pid, a.kafka_log))
        if a.s3:
            probes.append(
                (
                    "s3",
                    check_s3(a.s3, a.s3_access_key, a.s3_secret_key, a.s3_region, a.s3_bucket),
                    a.s3_pid,
                    a.s3_log,
                )
            )
        if a.prometheus:
            probes.append(
                ("prometheus", check_prometheus(a.prometheus), a.prometheus_pid, a.prometheus_log)
            )
    except ImportError as exc:
        sys.exit(
            f"probe needs Python packages that are missing ({exc}).\n"
            "  Run: bash deploy/local/bootstrap.sh   (or: pip install confluent-kafka boto3)"
        )

    deadline = time.monotonic() + a.timeout
    for name, check, pid, log in probes:
        wait_for(name, check, deadline, pid, log, a.quiet)


if __name__ == "__main__":
    main()
