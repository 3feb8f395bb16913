"""The demo: a generated stream through the real service, with live progress.

Steps:

1. Start the local stack (``deploy/local/stack.sh up``) unless told not to.
2. Create a fresh topic so that every demo starts from an empty model.
3. Start ``freshrec run`` as a child process, exactly as a user would, with its
   snapshots going to the stack's S3 server, and register it with Prometheus.
4. Publish a generated stream of ratings with known structure.
5. Read the service's own ``/metrics`` every second and print events/s, progressive RMSE
   and snapshots published, until every event is applied.
6. Stop the service (SIGTERM: it writes a final checkpoint) and say where things are.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

from prometheus_client.parser import text_string_to_metric_families

from service.demo.generator import StreamSpec, SyntheticStream
from service.demo.publish import make_producer, publish, user_key

REPO_ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = REPO_ROOT / "deploy" / "local" / "stack.sh"
KAFKA = "127.0.0.1:19092"
S3_ENDPOINT = "http://127.0.0.1:19000"
PROMETHEUS = "http://127.0.0.1:19090"


def _stack_dir() -> Path:
    return Path(os.environ.get("FRESHREC_STACK_DIR", REPO_ROOT / ".stack"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def scrape(url: str) -> dict[str, float]:
    """Sum every sample of every metric by name (labels folded), from ``/metrics``."""
    with urllib.request.urlopen(url, timeout=2) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            key = sample.name
            # Losses are kept apart by metric and window; everything else is summed.
            for label in ("metric", "window"):
                if label in sample.labels:
                    key += ":" + sample.labels[label]
            totals[key] = totals.get(key, 0.0) + float(sample.value)
    return totals


def run_demo(
    *, n_events: int, n_users: int, n_items: int, rate: float, start_stack: bool
) -> int:
    say = print
    if start_stack:
        say("==> starting the local stack (Kafka, S3 server, Prometheus) if needed…")
        subprocess.run(["bash", str(STACK_SCRIPT), "up"], check=True)

    stamp = time.strftime("%Y%m%d-%H%M%S")
    topic = f"freshrec.demo.{stamp}"
    port = _free_port()
    env = dict(os.environ)
    env.update(
        {
            "FRESHREC_KAFKA__BOOTSTRAP_SERVERS": env.get("FRESHREC_KAFKA__BOOTSTRAP_SERVERS",
                                                         KAFKA),
            "FRESHREC_KAFKA__TOPIC": topic,
            "FRESHREC_KAFKA__GROUP_ID": f"freshrec-demo-{stamp}",
            "FRESHREC_HTTP__PORT": str(port),
            "FRESHREC_SNAPSHOT__EVERY_EVENTS": str(max(10_000, n_events // 10)),
            "FRESHREC_SNAPSHOT__EVERY_SECONDS": "5",
            "FRESHREC_SNAPSHOT__MODEL_NAME": "demo",
        }
    )
    if start_stack:
        env.update(
            {
                "FRESHREC_STORAGE__URL": f"s3://freshrec/demo/{stamp}",
                "FRESHREC_STORAGE__ENDPOINT_URL": S3_ENDPOINT,
                "FRESHREC_STORAGE__ACCESS_KEY": "freshrec",
                "FRESHREC_STORAGE__SECRET_KEY": "freshrec-secret",
            }
        )
    bootstrap = env["FRESHREC_KAFKA__BOOTSTRAP_SERVERS"]
    storage_url = env.get("FRESHREC_STORAGE__URL", "file://./freshrec-data")

    say(f"==> starting the service on topic {topic} (metrics on http://127.0.0.1:{port}/metrics)")
    log_path = _stack_dir() / "logs" / f"demo-service-{stamp}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "w") as log_file:
        service = subprocess.Popen(
            [sys.executable, "-m", "service", "run"], env=env, stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    target = _stack_dir() / "prometheus" / "targets" / "freshrec-demo.json"
    if target.parent.is_dir():
        target.write_text(json.dumps([{"targets": [f"127.0.0.1:{port}"],
                                       "labels": {"instance": "demo"}}]))
    metrics_url = f"http://127.0.0.1:{port}/metrics"
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", service, log_path)
        stream = SyntheticStream(StreamSpec(n_users=n_users, n_items=n_items, seed=7))
        say(f"==> publishing {n_events:,} generated ratings ({n_users:,} users, "
            f"{n_items:,} items, popularity skew, planted taste)")
        start_ms = int(time.time() * 1000) - n_events  # ~1 event per ms of event time
        produced = {"n": 0}

        def produce() -> None:
            producer = make_producer(bootstrap)
            chunk = 50_000
            for lo in range(0, n_events, chunk):
                values = stream.encoded_events(min(chunk, n_events - lo), start_ms=start_ms)
                produced["n"] += publish(producer, topic, values, key=user_key, rate=rate)

        publisher = threading.Thread(target=produce, daemon=True)
        publisher.start()
        _watch(metrics_url, n_events, produced, service, log_path)
        publisher.join()
    finally:
        service.send_signal(signal.SIGTERM)
        try:
            service.wait(30)
        except subprocess.TimeoutExpired:
            service.kill()
    say("")
    _show_recommendations(storage_url, start_stack)
    if start_stack:
        creds = ("FRESHREC_STORAGE__ACCESS_KEY=freshrec "
                 "FRESHREC_STORAGE__SECRET_KEY=freshrec-secret ")
        list_cmd = (f"{creds}freshrec snapshots --url {storage_url} "
                    f"--endpoint-url {S3_ENDPOINT} --model demo list")
    else:
        list_cmd = f"freshrec snapshots --url {storage_url} --model demo list"
    say(f"Snapshots:   {storage_url}/models/demo/")
    say(f"  list them: {list_cmd}")
    query = quote("freshrec_progressive_loss")
    say(f"Prometheus:  {PROMETHEUS}/graph?g0.expr={query}&g0.tab=0")
    say(f"Service log: {log_path}")
    return 0


def _show_recommendations(storage_url: str, on_stack: bool) -> None:
    """Pull the latest snapshot the way serving code would, and use it."""
    from service.snapshots.client import load_snapshot

    options = (
        {"endpoint_url": S3_ENDPOINT, "access_key": "freshrec", "secret_key": "freshrec-secret"}
        if on_stack else {}
    )
    try:
        snap = load_snapshot(storage_url, model="demo", **options)  # type: ignore[arg-type]
    except Exception as exc:  # the demo explains, it does not crash
        print(f"(no snapshot to show: {exc})")
        return
    top = ", ".join(f"{item} ({score:.2f})" for item, score in snap.recommend("u1", k=5))
    print(f"Snapshot {snap.version} pulled and verified; top 5 for user u1: {top}")


def _wait_ready(url: str, service: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if service.poll() is not None:
            raise SystemExit(f"the service exited early; see {log_path}")
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except OSError:
            time.sleep(0.3)
    raise SystemExit(f"the service was not ready within 60s; see {log_path}")


def _watch(
    metrics_url: str,
    n_events: int,
    produced: dict[str, int],
    service: subprocess.Popen[bytes],
    log_path: Path,
) -> None:
    print(f"{'time':>6} {'published':>10} {'applied':>10} {'events/s':>10} "
          f"{'RMSE recent':>12} {'RMSE all':>9} {'snapshots':>9}")
    started = time.monotonic()
    last_applied, last_t = 0.0, started
    while True:
        time.sleep(1.0)
        if service.poll() is not None:
            raise SystemExit(f"the service stopped unexpectedly; see {log_path}")
        m = scrape(metrics_url)
        applied = m.get("freshrec_events_consumed_total", 0.0)
        now = time.monotonic()
        speed = (applied - last_applied) / max(now - last_t, 1e-9)
        last_applied, last_t = applied, now
        print(
            f"{now - started:5.0f}s {produced['n']:>10,} {int(applied):>10,} {speed:>10,.0f} "
            f"{m.get('freshrec_progressive_loss:rmse:recent', float('nan')):>12.3f} "
            f"{m.get('freshrec_progressive_loss:rmse:cumulative', float('nan')):>9.3f} "
            f"{int(m.get('freshrec_snapshots_published_total', 0)):>9}",
            flush=True,
        )
        if applied >= n_events:
            return
        if now - started > 600:
            raise SystemExit(f"not every event was applied within 10 minutes; see {log_path}")
