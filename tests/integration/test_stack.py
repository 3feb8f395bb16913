"""The test environment itself works: a real broker, S3 server and Prometheus.

If these fail, every other integration test is suspect; fix these first
(`deploy/local/stack.sh status`, `deploy/local/stack.sh logs <service>`).
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest

pytestmark = pytest.mark.integration


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.load(resp)


def test_kafka_produce_consume_round_trip(kafka_bootstrap, unique_topic):
    from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

    topic = unique_topic(partitions=3)
    sent = {f"key-{i}".encode(): f"value-{i}".encode() for i in range(30)}

    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            errors.append(err)

    producer = Producer({"bootstrap.servers": kafka_bootstrap, "enable.idempotence": True})
    for key, value in sent.items():
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
    assert producer.flush(30) == 0, "messages still undelivered after 30s"
    assert errors == []

    consumer = Consumer(
        {
            "bootstrap.servers": kafka_bootstrap,
            "group.id": f"{topic}-group",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    try:
        consumer.subscribe([topic])
        received: dict[bytes | None, bytes | None] = {}
        deadline = time.monotonic() + 30
        while len(received) < len(sent) and time.monotonic() < deadline:
            for msg in consumer.consume(num_messages=100, timeout=0.5):
                assert msg.error() is None, msg.error()
                received[msg.key()] = msg.value()
        assert received == sent

        # The group coordinator (offsets topic at replication factor 1) works too.
        consumer.commit(asynchronous=False)
        committed = consumer.committed([TopicPartition(topic, p) for p in range(3)], timeout=10)
        assert sum(tp.offset for tp in committed) == len(sent)
    finally:
        consumer.close()


def test_s3_put_get_list_delete(s3_endpoint, unique_prefix):
    s3 = s3_endpoint.client()
    key = f"{unique_prefix}hello.bin"
    body = bytes(range(256)) * 100

    s3.put_object(Bucket=s3_endpoint.bucket, Key=key, Body=body, Metadata={"model": "biased-mf"})
    got = s3.get_object(Bucket=s3_endpoint.bucket, Key=key)
    assert got["Body"].read() == body
    assert got["Metadata"] == {"model": "biased-mf"}

    listed = s3.list_objects_v2(Bucket=s3_endpoint.bucket, Prefix=unique_prefix)
    assert [o["Key"] for o in listed.get("Contents", [])] == [key]

    s3.delete_object(Bucket=s3_endpoint.bucket, Key=key)
    assert s3.list_objects_v2(Bucket=s3_endpoint.bucket, Prefix=unique_prefix).get("KeyCount") == 0


def test_prometheus_scrapes_a_registered_target(prometheus_url, prometheus_targets):
    from prometheus_client import CollectorRegistry, Counter, start_http_server

    assert urllib.request.urlopen(f"{prometheus_url}/-/ready", timeout=5).status == 200

    registry = CollectorRegistry()
    Counter(
        "freshrec_stack_probe", "Increments once; proves scraping works.", registry=registry
    ).inc()
    server, thread = start_http_server(0, addr="127.0.0.1", registry=registry)
    try:
        host_port = f"127.0.0.1:{server.server_port}"
        prometheus_targets("stack-test", host_port)

        deadline = time.monotonic() + 30
        health, last_error = None, None
        while time.monotonic() < deadline:
            targets = _get_json(f"{prometheus_url}/api/v1/targets?state=active")["data"][
                "activeTargets"
            ]
            mine = [t for t in targets if t["labels"].get("instance") == host_port]
            if mine:
                health, last_error = mine[0]["health"], mine[0].get("lastError")
                if health == "up":
                    break
            time.sleep(0.25)
        assert health == "up", f"target {host_port}: health={health!r}, lastError={last_error!r}"
        assert mine[0]["labels"]["job"] == "freshrec"
        assert mine[0]["labels"]["target"] == "stack-test"

        query = urllib.parse.quote(f'freshrec_stack_probe_total{{instance="{host_port}"}}')
        result = _get_json(f"{prometheus_url}/api/v1/query?query={query}")["data"]["result"]
        assert [float(r["value"][1]) for r in result] == [1.0]
    finally:
        server.shutdown()
        thread.join(timeout=5)
