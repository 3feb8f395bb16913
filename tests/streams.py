"""Generated streams fed to a running ``freshrec run`` in steady chunks, for service tests.

A service-level test that wants to know *when* the service did something (detected a
drift, published or held back a snapshot) cannot time it: the machine is shared and
loaded. Instead it publishes the stream one chunk at a time and waits until the service
has applied the whole chunk (and, for snapshots, decided on its candidate) before sending
the next. The service's counters after chunk ``k`` then describe the model after exactly
``k`` chunks, whatever the load: every wait is a poll with a generous deadline, and no
assertion depends on the wall clock.

Helpers
-------
fresh_topic
    A new topic for a module-scoped fixture (``unique_topic`` is per test).
ChunkedStream
    A :class:`~service.demo.generator.SyntheticStream` published to a topic in chunks,
    optionally transformed (e.g. :func:`inverted_ratings` for a poisoned burst).
random_clicks, auc_noise
    Impressions with side features and clicks on a random subset, in which no model may
    find anything to learn, and the spread of an AUC that learned nothing.
service_env
    The ``FRESHREC_*`` environment of a service under test: small tables, quick start.
sample, samples, parse_key
    Values of one metric from ``ServiceProcess.metrics()``, selected by labels.
read_topic
    Every message of a topic from its start (a dead-letter topic, say).
checkpointed_learner
    The learner arrays of the newest checkpoint a service wrote.
prometheus_query
    The result vector of an instant query against Prometheus's HTTP API.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
import urllib.parse
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from service.checkpoint.config import CheckpointConfig
from service.checkpoint.manager import CheckpointManager
from service.demo.generator import StreamSpec, SyntheticStream
from service.demo.publish import make_producer, publish
from service.storage import open_store
from service.storage.config import StorageConfig
from tests.service_process import ServiceProcess

Event = dict[str, Any]
Transform = Callable[[Event], Event]


def inverted_ratings(event: Event) -> Event:
    """The same user and item with the opposite opinion (``6 - r``, still in 1..5)."""
    return {**event, "value": 6.0 - float(event["value"])}


class ChunkedStream:
    """A generated stream published to ``topic`` chunk by chunk, in stream order.

    Event times start ``horizon`` events before now at one event per millisecond, so every
    event of a stream of up to ``horizon`` events is in the past and well inside the
    service's allowed lateness, whenever it is sent.
    """

    def __init__(self, bootstrap: str, topic: str, spec: StreamSpec, horizon: int) -> None:
        self.topic = topic
        self.stream = SyntheticStream(spec)
        self.start_ms = int(time.time() * 1000) - horizon
        self.producer = make_producer(bootstrap)
        self.sent = 0
        self.user_counts: Counter[str] = Counter()  # of every event generated so far
        self.item_counts: Counter[str] = Counter()

    def events(self, n: int, transform: Transform | None = None) -> list[bytes]:
        """The next ``n`` events of the stream, encoded (not sent)."""
        events = self.stream.events(n, start_ms=self.start_ms)
        if transform is not None:
            events = [transform(e) for e in events]
        self.user_counts.update(e["user_id"] for e in events)
        self.item_counts.update(e["item_id"] for e in events)
        return [orjson.dumps(e) for e in events]

    def most_active(self, k: int) -> tuple[list[str], list[str]]:
        """The ``k`` users and the ``k`` items with the most events so far."""
        return ([u for u, _ in self.user_counts.most_common(k)],
                [i for i, _ in self.item_counts.most_common(k)])

    def send(self, n: int, transform: Transform | None = None) -> int:
        """Publish the next ``n`` events (acknowledged by the broker); returns the total."""
        self.sent += publish(self.producer, self.topic, self.events(n, transform))
        return self.sent


def random_clicks(n: int, n_keys: int, seed: int, start_ms: int,
                  rate: float = 0.17, late_share: float = 0.0) -> list[bytes]:
    """``n`` impressions of 300 users and 100 items, 300 ms apart from ``start_ms``, with
    ``n_keys`` context entries (and a device and a position when ``n_keys``), and a click
    1 s later on a ``rate`` of them drawn independently of everything: nothing predicts
    a label. A ``late_share`` of the clicks come 6 minutes later instead, after the
    default 5-minute attribution window. Encoded, in event-time order.

    The clicks carry ids only, as click trackers often send them: a positive made of the
    click event would differ from every impression by its features alone.
    """
    rng = np.random.default_rng(seed)
    timed: list[tuple[int, Event]] = []
    for k in range(n):
        t = start_ms + 300 * k
        ids = {"schema_version": 1, "user_id": f"u{rng.integers(300)}",
               "item_id": f"i{rng.integers(100)}"}
        context: dict[str, object] = {f"k{j}": f"v{rng.integers(5)}" for j in range(n_keys)}
        if n_keys:
            context |= {"device": ["ios", "web"][int(rng.integers(2))],
                        "position": int(rng.integers(10))}
        timed.append((t, {**ids, "event_id": f"imp{k}", "event_type": "impression",
                          "timestamp": t, **({"context": context} if context else {})}))
        if rng.random() < rate:
            at = t + (360_000 if rng.random() < late_share else 1000)
            timed.append((at, {**ids, "event_id": f"clk{k}", "event_type": "click",
                               "timestamp": at}))
    timed.sort(key=lambda e: e[0])
    return [orjson.dumps(e) for _, e in timed]


def auc_noise(n_pos: int, n_neg: int) -> float:
    """Standard deviation of the AUC of scores independent of the labels (the null of the
    Mann-Whitney test: mean 1/2, variance (n_pos + n_neg + 1) / (12 n_pos n_neg); ties
    only make it smaller).

    Progressive scores are not quite independent of the labels: each depends on earlier
    labels through learning, which widens the spread a little (24 seeded in-process runs
    on :func:`random_clicks`, FTRL and FM: z from -3.3 to +2.1). The leak tests allow 4
    of these; the leaks they guard against were 12 (timing) and 50 (features).
    """
    return math.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))


@contextlib.contextmanager
def fresh_topic(bootstrap: str, prefix: str) -> Iterator[str]:
    """A new one-partition topic for fixtures wider than one test (``unique_topic`` is
    per test); deleted on exit."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0})
    name = f"test-{prefix}-{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(name, 1, 1)], operation_timeout=30)[name].result(40)
    deadline = time.monotonic() + 30
    while True:
        meta = admin.list_topics(topic=name, timeout=5).topics.get(name)
        if meta is not None and meta.error is None and all(
            p.leader >= 0 for p in meta.partitions.values()
        ) and meta.partitions:
            break
        assert time.monotonic() < deadline, f"topic {name} has no leader after 30s"
        time.sleep(0.1)
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):  # best effort: the name is unique anyway
            admin.delete_topics([name], operation_timeout=10)[name].result(20)


def service_env(
    bootstrap: str, topic: str, storage: dict[str, str], **extra: str
) -> dict[str, str]:
    """Environment of a service under test: its own consumer group, small tables.

    ``storage`` holds the ``FRESHREC_STORAGE__*`` variables (a ``file://`` folder under the
    test's tmp_path when the test does not need S3: the default would write into the repo).
    """
    return {
        "FRESHREC_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "FRESHREC_KAFKA__TOPIC": topic,
        "FRESHREC_KAFKA__GROUP_ID": f"svc-{uuid.uuid4().hex[:8]}",
        # Small tables: quick start, small checkpoints and snapshots.
        "FRESHREC_PREPROCESS__USER_CAPACITY": "8192",
        "FRESHREC_PREPROCESS__ITEM_CAPACITY": "2048",
        "FRESHREC_LOG_LEVEL": "INFO",
        **storage,
        **extra,
    }


def file_storage(folder: str) -> dict[str, str]:
    return {"FRESHREC_STORAGE__URL": f"file://{folder}"}


def wait_applied(service: ServiceProcess, n: int, timeout: float = 120) -> None:
    """Wait until the service has applied ``n`` events in total (never more: it is checked)."""
    service.wait_until(
        f"{n} events applied",
        lambda: service.total("freshrec_events_applied_total") >= n,
        timeout,
    )
    applied = service.total("freshrec_events_applied_total")
    rejected = service.total("freshrec_events_rejected_total")
    assert applied == n, f"{applied} events applied, {n} were sent ({rejected} rejected)"


def parse_key(key: str) -> tuple[str, dict[str, str]]:
    """``'name{a=1,b=2}'`` (a ``ServiceProcess.metrics()`` key) -> ``('name', {...})``."""
    name, _, rest = key.partition("{")
    labels = dict(kv.split("=", 1) for kv in rest.rstrip("}").split(",") if kv)
    return name, labels


def samples(metrics: dict[str, float], name: str, **labels: str) -> dict[str, float]:
    """Samples of ``name`` whose labels include ``labels``, keyed as in ``metrics``."""
    out = {}
    for key, value in metrics.items():
        n, have = parse_key(key)
        if n == name and all(have.get(k) == v for k, v in labels.items()):
            out[key] = value
    return out


def sample(metrics: dict[str, float], name: str, **labels: str) -> float:
    """Sum of the samples of ``name`` whose labels include ``labels`` (0 when none)."""
    return sum(samples(metrics, name, **labels).values())


def prometheus_query(prometheus_url: str, promql: str) -> list[dict[str, Any]]:
    """The result vector of an instant query; fails the test if Prometheus refuses it."""
    url = f"{prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
    with urllib.request.urlopen(url, timeout=5) as resp:
        body = json.load(resp)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


class _Capture:
    """Receives a checkpoint's state instead of a pipeline."""

    arrays: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any]

    def set_state(self, arrays: dict[str, npt.NDArray[Any]], meta: dict[str, Any]) -> None:
        self.arrays, self.meta = arrays, meta

    def get_state(self) -> tuple[dict[str, npt.NDArray[Any]], dict[str, Any]]:
        raise NotImplementedError


def newest_checkpoint(storage: StorageConfig, group: str, topic: str, folder: str = "",
                      ) -> tuple[dict[int, int], dict[str, npt.NDArray[Any]], dict[str, Any]]:
    """Offsets, arrays and (pipeline) metadata of the newest complete checkpoint (of the
    scale-out shard whose checkpoint ``folder`` is given, e.g. ``shard-1``)."""
    manager = CheckpointManager(open_store(storage), CheckpointConfig(), group_id=group,
                                topic=topic, folder=folder)
    capture = _Capture()
    restored = manager.restore_latest(capture)  # type: ignore[arg-type]
    assert restored is not None, f"no checkpoint in {folder or 'the service folder'}"
    return restored.offsets, capture.arrays, capture.meta


def env_storage(env: dict[str, str]) -> StorageConfig:
    """The storage settings of a service environment (``FRESHREC_STORAGE__*``)."""
    return StorageConfig(
        url=env["FRESHREC_STORAGE__URL"],
        endpoint_url=env.get("FRESHREC_STORAGE__ENDPOINT_URL"),
        access_key=env.get("FRESHREC_STORAGE__ACCESS_KEY"),
        secret_key=env.get("FRESHREC_STORAGE__SECRET_KEY"),
    )


def checkpointed_learner(
    env: dict[str, str],
) -> tuple[dict[int, int], dict[str, npt.NDArray[Any]]]:
    """Offsets and learner arrays (``learner.*``) of the newest checkpoint written by the
    service that ran with ``env`` (its storage, group and topic)."""
    offsets, arrays, _ = newest_checkpoint(
        env_storage(env), env["FRESHREC_KAFKA__GROUP_ID"], env["FRESHREC_KAFKA__TOPIC"]
    )
    learner = {k: np.asarray(v) for k, v in arrays.items() if k.startswith("learner.")}
    return offsets, learner


def read_topic(bootstrap: str, topic: str, n: int | None = None, timeout_s: float = 30.0,
               idle_s: float = 3.0) -> list[Any]:
    """Messages of ``topic`` from the start: ``n`` of them (waiting up to ``timeout_s``),
    or with ``n=None`` all there are (until nothing has come for ``idle_s``)."""
    from confluent_kafka import Consumer

    consumer = Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"test-{uuid.uuid4().hex}",
        "auto.offset.reset": "earliest", "enable.auto.commit": False,
        "fetch.message.max.bytes": 4 << 20,
    })
    consumer.subscribe([topic])
    out: list[Any] = []
    deadline = time.monotonic() + timeout_s
    last = time.monotonic()
    try:
        while time.monotonic() < deadline and (n is None or len(out) < n):
            batch = consumer.consume(1000 if n is None else n - len(out), timeout=0.5)
            for m in batch:
                if m.error() is not None:
                    continue  # e.g. the topic not created yet: keep waiting
                out.append(m)
            if batch:
                last = time.monotonic()
            elif n is None and out and time.monotonic() - last > idle_s:
                break
    finally:
        consumer.close()
    return out
