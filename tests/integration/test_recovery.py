"""Exactly-once model state under faults, on real servers.

Each test runs ``freshrec run`` as a child process, injects a fault (SIGKILL of the
service, of the broker, of the object store, or of the active instance of two), lets the
stream finish, and then reads the newest checkpoint from the object store: every event
must have been applied exactly once (per-partition applied counts equal what was produced)
and, where the stream has one partition, the whole state (every array of the checkpoint:
model, vocabularies, dedup window, scalers, metrics, drift detectors, the gate's window)
must equal bit for bit that of an uninterrupted run over the same events, read in batches
of another size.

The service runs with its default settings, except that ids age out after seconds of
event time instead of 30 days (the stream spans a minute): ids are admitted at their
second sighting, evicted and their rows recycled, and the stream's opinions turn around
for a while, so the drift detectors fire and 'adapt' raises the learning rate.

Why bitwise equality holds: the state is a function of the event order, which one
partition fixes, and not of batch boundaries or the wall clock (see
``service.runtime.pipeline.Pipeline`` and ``tests/unit/test_determinism.py``); every
checkpoint copies the state together with the offsets it reflects; recovery restarts from
exactly those offsets.
"""

from __future__ import annotations

import random
import threading
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from service.demo.generator import StreamSpec, SyntheticStream
from service.storage import open_store
from service.storage.config import StorageConfig
from tests.faults import PrivateKafka, PrivateS3
from tests.service_process import ServiceProcess
from tests.services import S3Endpoint
from tests.streams import newest_checkpoint

pytestmark = [pytest.mark.integration, pytest.mark.slow]


# -- helpers ----------------------------------------------------------------------------


def make_events(n: int, seed: int = 5) -> list[bytes]:
    """``n`` ratings one millisecond apart, ending now; between 40% and 70% of the
    stream every opinion is turned around (``6 - r``), a drift the detectors see."""
    stream = SyntheticStream(StreamSpec(n_users=3000, n_items=500, seed=seed))
    events = stream.events(n, start_ms=int(time.time() * 1000) - n)
    for e in events[int(0.4 * n): int(0.7 * n)]:
        e["value"] = 6.0 - float(e["value"])
    return [orjson.dumps(e) for e in events]


class Publisher(threading.Thread):
    """Produces events at a steady rate, keyed by user, counting what each partition got.

    The producer rides out a broker outage by itself (librdkafka buffers and retries);
    ``done`` is set once every message is acknowledged. With ``hold_at``, the messages from
    that index on wait until :attr:`release` is set (at most two minutes): a test that
    injects faults while the stream flows releases the tail once its faults are done, so
    a slow machine (slow restarts) cannot make the stream end before them.
    """

    def __init__(self, bootstrap: str, topic: str, values: list[bytes], rate: float,
                 hold_at: int | None = None) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.values, self.rate = bootstrap, topic, values, rate
        self.per_partition: Counter[int] = Counter()
        self.errors: list[str] = []
        self.done = threading.Event()
        self.hold_at = hold_at
        self.release = threading.Event()

    def run(self) -> None:
        producer = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5,
                             "enable.idempotence": True, "message.timeout.ms": 120_000})

        def delivered(err: Any, msg: Any) -> None:
            if err is not None:
                self.errors.append(str(err))
            else:
                self.per_partition[msg.partition()] += 1

        started = time.monotonic()
        for i, value in enumerate(self.values):
            if i == self.hold_at:
                producer.flush(60)
                self.release.wait(120)
                started = time.monotonic() - i / self.rate  # no burst to catch up
            key = orjson.loads(value)["user_id"].encode()
            while True:
                try:
                    producer.produce(self.topic, value, key, on_delivery=delivered)
                    break
                except BufferError:
                    producer.poll(0.05)
            producer.poll(0)
            ahead = (i + 1) / self.rate - (time.monotonic() - started)
            if ahead > 0.002:
                time.sleep(ahead)
        remaining = producer.flush(180)
        if remaining:
            self.errors.append(f"{remaining} messages not delivered")
        self.done.set()


def storage_for(s3: S3Endpoint | PrivateS3, prefix: str) -> tuple[dict[str, str], StorageConfig]:
    if isinstance(s3, PrivateS3):
        env = s3.env(prefix)
    else:
        env = {
            "FRESHREC_STORAGE__URL": f"s3://{s3.bucket}/{prefix}",
            "FRESHREC_STORAGE__ENDPOINT_URL": s3.url,
            "FRESHREC_STORAGE__ACCESS_KEY": s3.access_key,
            "FRESHREC_STORAGE__SECRET_KEY": s3.secret_key,
        }
    config = StorageConfig(
        url=env["FRESHREC_STORAGE__URL"],
        endpoint_url=env["FRESHREC_STORAGE__ENDPOINT_URL"],
        access_key=env["FRESHREC_STORAGE__ACCESS_KEY"],
        secret_key=env["FRESHREC_STORAGE__SECRET_KEY"],
    )
    return env, config


def service_env(bootstrap: str, topic: str, group: str, storage_env: dict[str, str],
                **extra: str) -> dict[str, str]:
    return {
        "FRESHREC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "FRESHREC_KAFKA__TOPIC": topic,
        "FRESHREC_KAFKA__GROUP_ID": group,
        "FRESHREC_KAFKA__BATCH_SIZE": "2000",
        "FRESHREC_CHECKPOINT__EVERY_SECONDS": "0.3",
        "FRESHREC_SNAPSHOT__EVERY_SECONDS": "2",
        # Default settings otherwise, but ids age out after seconds of event time (the
        # stream spans a minute, not months) and the tables are smaller than the stream's
        # ~3,000 users and ~500 items: an aged row is taken back only when a new id needs
        # it, so eviction and recycling happen.
        "FRESHREC_PREPROCESS__USER_EVICT_AFTER_MS": "4000",
        "FRESHREC_PREPROCESS__ITEM_EVICT_AFTER_MS": "8000",
        "FRESHREC_PREPROCESS__USER_CAPACITY": "1024",
        "FRESHREC_PREPROCESS__ITEM_CAPACITY": "256",
        "FRESHREC_LOG_LEVEL": "INFO",
        **storage_env,
        **extra,
    }


def run_to_completion(env: dict[str, str], log: Path, timeout: float = 180) -> None:
    """Run the service until it has been idle for a few seconds, and check it exited 0."""
    service = ServiceProcess(env, log, ("--stop-when-idle", "4")).start()
    assert service.proc is not None
    try:
        code = service.proc.wait(timeout)
    except Exception:
        service.kill()
        raise
    assert code == 0, service.log()


def assert_same_state(a: dict[str, np.ndarray], meta_a: dict[str, Any],
                      b: dict[str, np.ndarray], meta_b: dict[str, Any]) -> None:
    """Every array of two checkpoints equal byte for byte, and their metadata equal."""
    assert a.keys() == b.keys(), sorted(a.keys() ^ b.keys())
    differ = [name for name in a if a[name].dtype != b[name].dtype
              or a[name].shape != b[name].shape or a[name].tobytes() != b[name].tobytes()]
    assert not differ, f"{len(differ)} of {len(a)} arrays differ: {differ}"
    assert meta_a == meta_b


def assert_it_all_happened(meta: dict[str, Any]) -> None:
    """What used to depend on batch boundaries did happen in this stream."""
    for side in ("users", "items"):
        counters = meta["preprocess"][side]["counters"]
        assert counters["admitted"] > 0 and counters["evicted"] > 0, (side, counters)
        assert counters["recycled"] > 0, (side, counters)
    detectors = meta["drift"]["detectors"]
    assert detectors["adwin/loss"]["n_detections"] > 0, detectors


def applied_per_partition(meta: dict[str, Any]) -> dict[int, int]:
    extra = meta["pipeline"]["extra"]["applied_per_partition"]
    return {int(p): int(n) for p, n in extra.items()}


def readyz_state(service: ServiceProcess) -> str:
    try:
        with urllib.request.urlopen(f"http://{service.address}/healthz", timeout=1) as r:
            return str(orjson.loads(r.read())["state"])
    except Exception:
        return "unreachable"


# -- tests ------------------------------------------------------------------------------


def test_kill9_at_random_moments_gives_the_uninterrupted_state(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, unique_topic: Callable[..., str],
    unique_prefix: str, tmp_path: Path,
) -> None:
    seed = random.randrange(1 << 30)
    rng = random.Random(seed)
    print(f"kill schedule seed: {seed}")
    topic = unique_topic(1)
    n = 80_000
    # The last tenth is held back until the kills are done: they all happen while the
    # stream flows, however long restarts take on a loaded machine.
    publisher = Publisher(kafka_bootstrap, topic, make_events(n), rate=2_500,
                          hold_at=int(0.9 * n))

    # Interrupted run: SIGKILL five times while the stream flows, restarting each time.
    storage_env, storage = storage_for(s3_endpoint, unique_prefix + "killed")
    group = f"kill9-{uuid.uuid4().hex[:6]}"
    env = service_env(kafka_bootstrap, topic, group, storage_env,
                      FRESHREC_KAFKA__INSTANCE_ID="kill9-instance")
    log = tmp_path / "killed.log"
    service = ServiceProcess(env, log).start()
    publisher.start()
    restarts = []
    try:
        for _ in range(5):
            time.sleep(rng.uniform(0.5, 2.0))
            assert not publisher.done.is_set(), "the stream ended before the kills: slow it"
            service.kill()
            restart_at = time.monotonic()
            service = ServiceProcess(env, log).start()
            service.wait_until("applying events again",
                               lambda s=service: s.total("freshrec_events_applied_total") > 0,
                               timeout=60)
            restarts.append(time.monotonic() - restart_at)
        publisher.release.set()
        publisher.join(120)
        assert publisher.done.is_set() and not publisher.errors, publisher.errors
    finally:
        service.kill()
    print("restart to first applied event (s):", [round(r, 2) for r in restarts])
    run_to_completion(env, log)
    offsets, killed, meta = newest_checkpoint(storage, group, topic)
    assert offsets == {0: n}
    assert applied_per_partition(meta) == {0: n}
    assert_it_all_happened(meta)

    # Uninterrupted run over the same events, read in batches of another size.
    storage_env, storage = storage_for(s3_endpoint, unique_prefix + "clean")
    clean_group = f"clean-{uuid.uuid4().hex[:6]}"
    run_to_completion(service_env(kafka_bootstrap, topic, clean_group, storage_env,
                                  FRESHREC_KAFKA__BATCH_SIZE="777"),
                      tmp_path / "clean.log")
    clean_offsets, clean, clean_meta = newest_checkpoint(storage, clean_group, topic)
    assert clean_offsets == {0: n}
    assert_same_state(killed, meta, clean, clean_meta)


def test_every_partition_applied_exactly_once_across_kills(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, unique_topic: Callable[..., str],
    unique_prefix: str, tmp_path: Path,
) -> None:
    topic = unique_topic(4)
    n = 40_000
    publisher = Publisher(kafka_bootstrap, topic, make_events(n, seed=6), rate=2_500,
                          hold_at=int(0.9 * n))
    storage_env, storage = storage_for(s3_endpoint, unique_prefix)
    group = f"parts-{uuid.uuid4().hex[:6]}"
    env = service_env(kafka_bootstrap, topic, group, storage_env,
                      FRESHREC_KAFKA__INSTANCE_ID="parts-instance")
    log = tmp_path / "service.log"
    service = ServiceProcess(env, log).start()
    publisher.start()
    try:
        for delay in (1.2, 1.7):
            service.wait_until("learning", lambda s=service: s.total(
                "freshrec_events_applied_total") > 0, timeout=60)
            time.sleep(delay)
            assert not publisher.done.is_set(), "the stream ended before the kills: slow it"
            service.kill()
            service = ServiceProcess(env, log).start()
        publisher.release.set()
        publisher.join(120)
        assert publisher.done.is_set() and not publisher.errors, publisher.errors
    finally:
        service.kill()
    run_to_completion(env, log)
    offsets, _, meta = newest_checkpoint(storage, group, topic)
    produced = dict(publisher.per_partition)
    assert sum(produced.values()) == n and len(produced) == 4
    # No gap and no duplicate, partition by partition.
    assert applied_per_partition(meta) == produced
    assert offsets == produced


def test_sigterm_writes_a_final_checkpoint_and_exits(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, unique_topic: Callable[..., str],
    unique_prefix: str, tmp_path: Path,
) -> None:
    topic = unique_topic(2)
    n = 20_000
    publisher = Publisher(kafka_bootstrap, topic, make_events(n, seed=7), rate=50_000)
    publisher.start()
    publisher.join(60)
    storage_env, storage = storage_for(s3_endpoint, unique_prefix)
    group = f"term-{uuid.uuid4().hex[:6]}"
    # Checkpoints only on request: the final one must cover everything.
    env = service_env(kafka_bootstrap, topic, group, storage_env,
                      FRESHREC_CHECKPOINT__EVERY_SECONDS="3600",
                      FRESHREC_CHECKPOINT__EVERY_EVENTS="100000000")
    service = ServiceProcess(env, tmp_path / "service.log").start()
    service.wait_until("every event applied",
                       lambda: service.total("freshrec_events_applied_total") >= n)
    started = time.monotonic()
    assert service.terminate(timeout=60) == 0
    print(f"SIGTERM to exit: {time.monotonic() - started:.2f}s")
    offsets, _, meta = newest_checkpoint(storage, group, topic)
    assert offsets == dict(publisher.per_partition)
    assert applied_per_partition(meta) == dict(publisher.per_partition)


def test_broker_killed_and_restarted_mid_stream(
    s3_endpoint: S3Endpoint, unique_prefix: str, tmp_path: Path,
) -> None:
    kafka = PrivateKafka(tmp_path / "kafka").start()
    try:
        from confluent_kafka.admin import AdminClient, NewTopic

        topic = "faults.broker"
        admin = AdminClient({"bootstrap.servers": kafka.bootstrap})
        admin.create_topics([NewTopic(topic, 2, 1)])[topic].result(30)
        n = 40_000
        publisher = Publisher(kafka.bootstrap, topic, make_events(n, seed=8), rate=4_000)
        storage_env, storage = storage_for(s3_endpoint, unique_prefix)
        group = f"broker-{uuid.uuid4().hex[:6]}"
        env = service_env(kafka.bootstrap, topic, group, storage_env)
        service = ServiceProcess(env, tmp_path / "service.log").start()
        publisher.start()
        service.wait_until("learning", lambda: service.total(
            "freshrec_events_applied_total") > 2000, timeout=60)
        kafka.kill()
        seen_states = set()
        outage_end = time.monotonic() + 6
        while time.monotonic() < outage_end:
            seen_states.add(readyz_state(service))
            time.sleep(0.2)
        assert service.alive(), service.log()
        kafka.start()
        publisher.join(180)
        assert publisher.done.is_set() and not publisher.errors, publisher.errors
        code = service.terminate(timeout=90)
        assert code == 0, service.log()
        # The service told the outage (it lost the broker and its lease); and it came back.
        assert seen_states & {"waiting_for_broker", "standby", "recovering"}, seen_states
        run_to_completion(env, tmp_path / "service.log")
        offsets, _, meta = newest_checkpoint(storage, group, topic)
        assert applied_per_partition(meta) == dict(publisher.per_partition)
        assert offsets == dict(publisher.per_partition)
        assert sum(publisher.per_partition.values()) == n
    finally:
        kafka.kill()


def test_object_store_killed_and_restarted_mid_stream(
    kafka_bootstrap: str, unique_topic: Callable[..., str], tmp_path: Path,
) -> None:
    s3 = PrivateS3(tmp_path / "s3").start()
    try:
        topic = unique_topic(1)
        n = 40_000
        publisher = Publisher(kafka_bootstrap, topic, make_events(n, seed=9), rate=8_000)
        storage_env, storage = storage_for(s3, "store-fault")
        group = f"store-{uuid.uuid4().hex[:6]}"
        env = service_env(kafka_bootstrap, topic, group, storage_env,
                          FRESHREC_STORAGE__RETRIES="1",
                          FRESHREC_STORAGE__CONNECT_TIMEOUT_S="1")
        service = ServiceProcess(env, tmp_path / "service.log").start()
        publisher.start()
        service.wait_until("a checkpoint written",
                           lambda: service.total("freshrec_checkpoints_written_total") > 0)
        s3.kill()
        service.wait_until("a checkpoint failure counted",
                           lambda: service.total("freshrec_checkpoint_failures_total") > 0,
                           timeout=60)
        assert service.alive(), service.log()
        time.sleep(2)
        s3.start()
        publisher.join(120)
        assert publisher.done.is_set() and not publisher.errors, publisher.errors
        written = service.total("freshrec_checkpoints_written_total")
        service.wait_until("checkpoints resume after the outage",
                           lambda: service.total("freshrec_checkpoints_written_total") > written,
                           timeout=60)
        assert service.terminate(timeout=90) == 0, service.log()
        offsets, _, meta = newest_checkpoint(storage, group, topic)
        assert offsets == {0: n}
        assert applied_per_partition(meta) == {0: n}
    finally:
        s3.kill()


def test_standby_takes_over_when_the_active_instance_is_killed(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, unique_topic: Callable[..., str],
    unique_prefix: str, tmp_path: Path,
) -> None:
    topic = unique_topic(1)
    n = 50_000
    events = make_events(n, seed=10)
    publisher = Publisher(kafka_bootstrap, topic, events, rate=10_000)
    storage_env, storage = storage_for(s3_endpoint, unique_prefix + "ha")
    group = f"ha-{uuid.uuid4().hex[:6]}"
    env = service_env(kafka_bootstrap, topic, group, storage_env)
    first = ServiceProcess(env, tmp_path / "first.log").start()
    first.wait_ready()
    second = ServiceProcess(env, tmp_path / "second.log", ("--stop-when-idle", "5")).start()
    second.wait_until("the second instance to be a standby",
                      lambda: readyz_state(second) == "standby")
    # A standby that joins never takes the lease from the active instance.
    time.sleep(2)
    assert readyz_state(first) == "running" and readyz_state(second) == "standby"
    publisher.start()
    try:
        first.wait_until("learning", lambda: first.total("freshrec_events_applied_total") > 5000)
        first.kill()
        killed_at = time.monotonic()
        second.wait_until("the standby to take over",
                          lambda: second.total("freshrec_events_applied_total") > 0, timeout=60)
        takeover = time.monotonic() - killed_at
        print(f"standby takeover: {takeover:.2f}s after kill -9 of the active instance")
        publisher.join(120)
        assert publisher.done.is_set() and not publisher.errors
        assert second.proc is not None
        assert second.proc.wait(120) == 0, second.log()
    finally:
        first.kill()
        second.kill()
    offsets, taken_over, meta = newest_checkpoint(storage, group, topic)
    assert offsets == {0: n}
    assert applied_per_partition(meta) == {0: n}

    storage_env, clean_storage = storage_for(s3_endpoint, unique_prefix + "clean")
    clean_group = f"clean-{uuid.uuid4().hex[:6]}"
    run_to_completion(service_env(kafka_bootstrap, topic, clean_group, storage_env),
                      tmp_path / "clean.log")
    _, clean, clean_meta = newest_checkpoint(clean_storage, clean_group, topic)
    assert_same_state(taken_over, meta, clean, clean_meta)


def commit_offsets(bootstrap: str, group: str, topic: str, offsets: dict[int, int]) -> None:
    """Commit ``offsets`` for ``group``, as an earlier run of the service would have."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                         "enable.auto.commit": False})
    try:
        consumer.commit(offsets=[TopicPartition(topic, p, o) for p, o in offsets.items()],
                        asynchronous=False)
    finally:
        consumer.close()


def test_no_checkpoint_but_committed_offsets_is_no_silent_fresh_start(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, unique_topic: Callable[..., str],
    unique_prefix: str, tmp_path: Path,
) -> None:
    """A group that consumed before, pointed at storage without its checkpoints (a new or
    mistyped FRESHREC_STORAGE__URL), refuses to start; on request it starts afresh from
    the committed offsets, or from the oldest ones, saying so."""
    topic = unique_topic(1)
    n, consumed = 6_000, 2_500
    publisher = Publisher(kafka_bootstrap, topic, make_events(n, seed=11), rate=50_000)
    publisher.start()
    publisher.join(60)
    assert publisher.done.is_set() and not publisher.errors, publisher.errors
    group = f"fresh-{uuid.uuid4().hex[:6]}"
    commit_offsets(kafka_bootstrap, group, topic, {0: consumed})

    storage_env, storage = storage_for(s3_endpoint, unique_prefix + "empty")
    env = service_env(kafka_bootstrap, topic, group, storage_env)
    log = tmp_path / "refused.log"
    refused = ServiceProcess(env, log, ("--stop-when-idle", "4")).start()
    assert refused.proc is not None
    assert refused.proc.wait(120) == 2, refused.log()
    text = log.read_text()
    assert "refusing to start: no checkpoint in" in text, text[-3000:]
    assert f"{{0: {consumed}}}" in text and "FRESHREC_CHECKPOINT__ON_MISSING" in text
    assert "Traceback" not in text
    assert not any(True for _ in open_store(storage).list("checkpoints/")), "it wrote state"

    # On request: a fresh model from the committed offsets, with a WARNING.
    log = tmp_path / "committed.log"
    run_to_completion({**env, "FRESHREC_CHECKPOINT__ON_MISSING": "committed"}, log)
    assert "WARNING" in log.read_text() and "starting a FRESH model from the committed" in (
        log.read_text())
    offsets, _, meta = newest_checkpoint(storage, group, topic)
    assert offsets == {0: n}
    assert applied_per_partition(meta) == {0: n - consumed}

    # Or from the oldest offsets the topic holds (storage still empty for this group).
    storage_env, storage = storage_for(s3_endpoint, unique_prefix + "earliest")
    log = tmp_path / "earliest.log"
    run_to_completion({**service_env(kafka_bootstrap, topic, group, storage_env),
                       "FRESHREC_CHECKPOINT__ON_MISSING": "earliest"}, log)
    assert "starting a FRESH model from the oldest offsets" in log.read_text()
    offsets, _, meta = newest_checkpoint(storage, group, topic)
    assert offsets == {0: n}
    assert applied_per_partition(meta) == {0: n}


def test_a_restart_with_edited_settings_goes_on_or_says_which_setting_to_put_back(
    kafka_bootstrap: str, s3_endpoint: S3Endpoint, unique_topic: Callable[..., str],
    unique_prefix: str, tmp_path: Path,
) -> None:
    """Tuned drift, metric window and learning rate: the checkpoint is restored and every
    event is applied once, with WARNINGs for what was not applied. Other table capacities:
    the service exits 2 naming the setting, without a traceback and without writing."""
    topic = unique_topic(1)
    events = make_events(8_000, seed=12)
    first = Publisher(kafka_bootstrap, topic, events[:5_000], rate=50_000)
    first.start()
    first.join(60)
    assert first.done.is_set() and not first.errors, first.errors
    storage_env, storage = storage_for(s3_endpoint, unique_prefix + "edited")
    group = f"edited-{uuid.uuid4().hex[:6]}"
    env = service_env(kafka_bootstrap, topic, group, storage_env)
    run_to_completion(env, tmp_path / "first.log")

    second = Publisher(kafka_bootstrap, topic, events[5_000:], rate=50_000)
    second.start()
    second.join(60)
    assert second.done.is_set() and not second.errors, second.errors
    log = tmp_path / "tuned.log"
    run_to_completion({**env, "FRESHREC_DRIFT__ADWIN__DELTA": "0.01",
                       "FRESHREC_DRIFT__PSI__BLOCK_EVENTS": "1000",
                       "FRESHREC_LEARNER__EVAL_WINDOW": "3000",
                       "FRESHREC_LEARNER__LEARNING_RATE": "0.01"}, log)
    text = log.read_text()
    assert "drift detectors start afresh" in text, text[-3000:]
    assert "keeps the learner settings it was built with" in text
    assert "learning_rate: 0.1 -> 0.01" in text
    offsets, _, meta = newest_checkpoint(storage, group, topic)
    assert offsets == {0: 8_000}
    assert applied_per_partition(meta) == {0: 8_000}
    assert meta["drift"]["detectors"]["psi/prediction"]["block_size"] == 1000

    log = tmp_path / "capacity.log"
    refused = ServiceProcess({**env, "FRESHREC_PREPROCESS__USER_CAPACITY": "2048"}, log,
                             ("--stop-when-idle", "4")).start()
    assert refused.proc is not None
    assert refused.proc.wait(120) == 2, refused.log()
    text = log.read_text()
    assert "FRESHREC_PREPROCESS__USER_CAPACITY=1024 (now 2048)" in text, text[-3000:]
    assert "Traceback" not in text
    assert newest_checkpoint(storage, group, topic)[0] == {0: 8_000}
