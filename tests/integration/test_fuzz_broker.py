"""Fuzzing through the real broker: whatever is published, the service stays up and the
counts add up.

One ``freshrec run`` reads one topic for the whole module. Each hypothesis example
publishes a mix of messages to it: random bytes, mutations of valid events (truncated,
nested, wrong types, control characters, huge strings and maps), tombstones, values just
under the broker's ``max.message.bytes``, exact replays, and valid events with fresh ids;
keys and headers are odd too. Then it waits until the service has consumed them all and
checks, on the service's counters and on the dead-letter topic:

- the service is up;
- consumed = applied + rejected + deduplicated, for this example's messages;
- every rejection has exactly one copy on the dead-letter topic (full, cut or reference),
  naming a known reason, and a full copy is the original;
- every valid event with a fresh id was applied (none of them is on the DLQ), and every
  replay of one was counted as a duplicate.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.events.reasons import RejectReason
from service.ingest.admin import max_record_bytes
from tests.service_process import ServiceProcess
from tests.streams import file_storage, fresh_topic, service_env

pytestmark = [pytest.mark.integration, pytest.mark.slow]

REASONS = {str(r).encode() for r in RejectReason}


def _event(**fields: Any) -> dict[str, Any]:
    return {"schema_version": 1, "event_id": uuid.uuid4().hex, "event_type": "click",
            "user_id": f"u{uuid.uuid4().int % 50}", "item_id": f"i{uuid.uuid4().int % 20}",
            "timestamp": int(time.time() * 1000) - 1000, "context": {"device": "ios"},
            **fields}


odd_text = st.text(st.characters(codec="utf-8"), max_size=40)
control = st.sampled_from(["\u0000", "\u001f", "\u007f", "\n", "\t"])
huge = st.integers(10_000, 300_000).map(lambda n: "x" * n)
json_scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70),
                        st.floats(allow_nan=False), odd_text)


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid event, broken in one of the ways producers break them."""
    event = _event()
    kind = draw(st.sampled_from(["truncate", "nest", "wrong_type", "control", "huge_string",
                                 "huge_map", "deep", "drop", "extra"]))
    if kind == "truncate":
        raw = orjson.dumps(event)
        return raw[: draw(st.integers(0, len(raw) - 1))]
    if kind == "nest":
        return orjson.dumps(draw(st.sampled_from([[event], {"event": event}, [[event]]])))
    if kind == "wrong_type":
        field = draw(st.sampled_from(sorted(event)))
        event[field] = draw(st.one_of(json_scalar, st.lists(json_scalar, max_size=3),
                                      st.dictionaries(odd_text, json_scalar, max_size=3)))
    elif kind == "control":
        field = draw(st.sampled_from(["event_id", "user_id", "item_id", "event_type"]))
        at = draw(st.integers(0, len(event[field])))
        event[field] = event[field][:at] + draw(control) + event[field][at:]
    elif kind == "huge_string":
        field = draw(st.sampled_from(["user_id", "item_id", "event_id"]))
        event[field] = draw(huge) if draw(st.booleans()) else event[field]
        event["context"] = {"k": draw(huge)}
    elif kind == "huge_map":
        event["context"] = {f"k{i}": i for i in range(draw(st.integers(17, 2000)))}
    elif kind == "deep":
        depth = draw(st.integers(100, 5000))
        return b'{"context":' + b"[" * depth + b"]" * depth + b"}"
    elif kind == "drop":
        del event[draw(st.sampled_from(sorted(event)))]
    else:
        event[draw(odd_text)] = draw(json_scalar)
    return orjson.dumps(event)


@st.composite
def message(draw: st.DrawFn, limit: int) -> dict[str, Any]:
    """One message to publish: value, key and headers, and whether its value is known good."""
    kind = draw(st.sampled_from(["valid", "valid", "mutated", "mutated", "bytes", "tombstone",
                                 "at_limit"]))
    good = False
    value: bytes | None
    if kind == "valid":
        value, good = orjson.dumps(_event()), True
    elif kind == "mutated":
        value = draw(mutated())
    elif kind == "bytes":
        value = draw(st.binary(max_size=3000))
    elif kind == "tombstone":
        value = None
    else:  # around the broker's limit: what is left for key and headers is small
        value = orjson.dumps(_event(user_id="u" * (limit - draw(st.integers(400, 3000)))))
    key = draw(st.one_of(st.none(), st.binary(max_size=64),
                         st.binary(min_size=1000, max_size=5000)))
    headers = draw(st.lists(st.tuples(odd_text, st.one_of(st.none(), st.binary(max_size=64),
                                                          st.binary(max_size=20_000))),
                            max_size=4))
    if kind == "at_limit":
        key, headers = None, []
    return {"value": value, "key": key, "headers": headers, "good": good}


class Fuzzed:
    """The module's service, its topic, and where its dead-letter topic was read to."""

    def __init__(self, bootstrap: str, topic: str, service: ServiceProcess) -> None:
        self.bootstrap, self.topic, self.service = bootstrap, topic, service
        self.producer = Producer({"bootstrap.servers": bootstrap, "message.max.bytes": 2 << 20,
                                  "linger.ms": 5})
        self.dlq = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                             "enable.auto.commit": False, "fetch.message.max.bytes": 4 << 20})
        self.dlq.assign([TopicPartition(f"{topic}.dlq", 0, 0)])
        self.limit = max_record_bytes(bootstrap, topic) or 1_000_000

    def publish(self, messages: list[dict[str, Any]]) -> list[int]:
        offsets: list[int] = []

        def delivered(err: Any, msg: Any) -> None:
            assert err is None, err
            offsets.append(msg.offset())

        for m in messages:
            self.producer.produce(self.topic, value=m["value"], key=m["key"],
                                  headers=m["headers"], on_delivery=delivered)
        assert self.producer.flush(60) == 0
        return offsets

    def copies(self, n: int, timeout_s: float = 60) -> list[Any]:
        """The next ``n`` dead-letter copies (and nothing else within a short wait)."""
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(out) < n and time.monotonic() < deadline:
            out += [m for m in self.dlq.consume(n - len(out), timeout=0.5) if not m.error()]
        out += [m for m in self.dlq.consume(100, timeout=1.0) if not m.error()]
        return out

    def totals(self) -> dict[str, float]:
        s = self.service
        return {name: s.total(f"freshrec_events_{name}_total")
                for name in ("consumed", "applied", "rejected", "deduplicated")}


@pytest.fixture(scope="module")
def fuzzed(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    tmp = tmp_path_factory.mktemp("fuzz")
    with fresh_topic(kafka_bootstrap, "fuzz") as topic:
        env = service_env(kafka_bootstrap, topic, file_storage(str(tmp / "store")),
                          FRESHREC_CHECKPOINT__EVERY_SECONDS="2")
        service = ServiceProcess(env, tmp / "service.log").start()
        try:
            service.wait_ready()
            yield Fuzzed(kafka_bootstrap, topic, service)
            assert service.alive(), service.log()
        finally:
            service.terminate()


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_no_message_stops_the_service_and_the_counts_add_up(
    fuzzed: Fuzzed, data: st.DataObject,
) -> None:
    messages = data.draw(st.lists(message(fuzzed.limit), min_size=1, max_size=40))
    # Exact replays of some valid events (an at-least-once producer's retries).
    valid = [m for m in messages if m["good"]]
    replays = [dict(m, good=False) for m in data.draw(st.lists(st.sampled_from(valid),
                                                                max_size=3))] if valid else []
    messages += replays
    assert sum(m["value"] is not None and len(m["value"]) > fuzzed.limit for m in messages) == 0
    before = fuzzed.totals()
    offsets = fuzzed.publish(messages)
    n = len(messages)
    service = fuzzed.service
    service.wait_until(f"{n} more events consumed", lambda: service.total(
        "freshrec_events_consumed_total") >= before["consumed"] + n, timeout=120)
    after = fuzzed.totals()
    delta = {k: after[k] - before[k] for k in after}
    assert delta["consumed"] == n
    assert delta["applied"] + delta["rejected"] + delta["deduplicated"] == n, delta
    assert delta["deduplicated"] >= len(replays)
    good = {o for o, m in zip(offsets, messages, strict=True) if m["good"]}
    assert delta["applied"] >= len(good)

    copies = fuzzed.copies(int(delta["rejected"]))
    assert len(copies) == delta["rejected"], "each rejection has one dead-letter copy"
    by_offset = {int(o): m for o, m in zip(offsets, messages, strict=True)}
    for copy in copies:
        h = dict(copy.headers())
        assert h["freshrec.reason"] in REASONS
        source = int(h["freshrec.source.offset"])
        assert source in by_offset and source not in good
        original = by_offset[source]["value"] or b""
        if h["freshrec.copy"] == b"full":
            assert (copy.value() or b"") == original
        else:
            assert h["freshrec.original.sha256"] == hashlib.sha256(original).hexdigest().encode()
    assert service.alive()


def test_the_fuzzed_service_never_restarted(fuzzed: Fuzzed) -> None:
    # The module's service ran every example in one process: nothing made it exit.
    assert fuzzed.service.alive()
    assert "Traceback" not in Path(fuzzed.service.log_path).read_text(errors="replace")

