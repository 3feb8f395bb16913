"""pytest plugin: the real Kafka broker, S3 server and Prometheus, for integration tests.

Loaded from tests/conftest.py (``pytest_plugins = ["tests.services"]``).

Fixtures (all resolve lazily: a test that asks for none of them starts nothing)

  kafka_bootstrap     session  str, "host:port"
  s3_endpoint         session  S3Endpoint(url, access_key, secret_key, region, bucket);
                               ``.client()`` gives a path-style boto3 S3 client
  prometheus_url      session  str, "http://host:port"
  prometheus_targets  function register(name: str, host_port: str) -> Path: adds a scrape
                               target (job "freshrec", label target=<name>) through
                               file_sd; removed again when the test ends
  unique_topic        function make(partitions=1, config=None) -> str: creates a fresh
                               topic and waits until it has leaders; deleted at teardown
  unique_prefix       function str such as "test/test_foo-1a2b3c4d/": an S3 key prefix
                               no other test (or concurrent session) uses

Where each service comes from, first match wins, per service:

  1. Environment: FRESHREC_TEST_KAFKA=host:port;
     FRESHREC_TEST_S3=http://host:port with FRESHREC_TEST_S3_ACCESS_KEY,
     FRESHREC_TEST_S3_SECRET_KEY (optional FRESHREC_TEST_S3_REGION, FRESHREC_TEST_S3_BUCKET);
     FRESHREC_TEST_PROMETHEUS=http://host:port with FRESHREC_TEST_PROMETHEUS_TARGETS_DIR
     (the file_sd folder that Prometheus reads; needed by prometheus_targets only).
  2. testcontainers, when a Docker engine answers a ping (FRESHREC_TEST_DOCKER=0 turns
     this off; =1 makes a missing engine an error).
  3. The local stack: ``deploy/local/stack.sh up`` (idempotent, ~1 s when already up),
     endpoints read from its stack.env.

A service that cannot be had FAILS the test with the command that would start it. It is
never skipped: a skipped integration test is a test nobody ran.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import socket
import subprocess
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
STACK_SH = REPO_ROOT / "deploy" / "local" / "stack.sh"
STACK_UP = "deploy/local/stack.sh up"
STACK_LOGS = "deploy/local/stack.sh logs"

# Images for the Docker path. Same families as docker-compose.yml; override to test others.
KAFKA_IMAGE = os.environ.get("FRESHREC_TEST_KAFKA_IMAGE", "apache/kafka:4.1.1")
S3_IMAGE = os.environ.get("FRESHREC_TEST_S3_IMAGE", "versity/versitygw:v1.8.0")
PROMETHEUS_IMAGE = os.environ.get("FRESHREC_TEST_PROMETHEUS_IMAGE", "prom/prometheus:v2.53.4")

DEFAULT_S3_ACCESS_KEY = "freshrec"
DEFAULT_S3_SECRET_KEY = "freshrec-secret"
DEFAULT_S3_REGION = "us-east-1"
DEFAULT_S3_BUCKET = "freshrec"

# How long a service found through an env var or Docker may take to answer.
READY_TIMEOUT_S = float(os.environ.get("FRESHREC_TEST_READY_TIMEOUT", "60"))


@dataclasses.dataclass(frozen=True)
class S3Endpoint:
    """Where the S3-compatible server is and how to sign requests for it."""

    url: str
    access_key: str
    secret_key: str
    region: str = DEFAULT_S3_REGION
    bucket: str = DEFAULT_S3_BUCKET

    def client(self, **config: Any):
        """A boto3 S3 client for this endpoint (path-style addressing, which
        S3-compatible servers on 127.0.0.1 need)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(s3={"addressing_style": "path"}, **config),
        )


@dataclasses.dataclass(frozen=True)
class _Prometheus:
    url: str
    targets_dir: Path | None  # file_sd folder this Prometheus reads, if we know it
    source: str  # for error messages


# --------------------------------------------------------------------------- readiness


def _deadline_loop(what: str, check: Callable[[], None], timeout: float, hint: str) -> None:
    """Call check() until it stops raising, or fail the test with the last error."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            check()
            return
        except Exception as exc:
            last = f"{type(exc).__name__}: {exc}"
        if time.monotonic() >= deadline:
            # Outside the except block: the message is the point, not a chained traceback.
            pytest.fail(
                f"{what} did not answer within {timeout:.0f}s: {last}\n{hint}", pytrace=False
            )
        time.sleep(0.25)


def _check_kafka(bootstrap: str) -> None:
    from confluent_kafka.admin import AdminClient

    md = AdminClient({"bootstrap.servers": bootstrap, "log_level": 0}).list_topics(timeout=3)
    if not md.brokers:
        raise RuntimeError("metadata lists no broker")


def _check_s3(ep: S3Endpoint, create_bucket: bool) -> None:
    s3 = ep.client(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5)
    names = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if ep.bucket not in names:
        if not create_bucket:
            raise RuntimeError(f"bucket {ep.bucket!r} does not exist (buckets: {sorted(names)})")
        with contextlib.suppress(s3.exceptions.BucketAlreadyOwnedByYou):
            s3.create_bucket(Bucket=ep.bucket)


def _check_prometheus(url: str) -> None:
    with urllib.request.urlopen(url.rstrip("/") + "/-/ready", timeout=3) as resp:
        if resp.status != 200:
            raise RuntimeError(f"/-/ready answered {resp.status}")


# --------------------------------------------------------------------------- sources


def _docker_wanted() -> bool:
    """True when testcontainers should be used: a Docker engine answers a ping."""
    mode = os.environ.get("FRESHREC_TEST_DOCKER", "auto").lower()
    if mode in ("0", "no", "false", "off"):
        return False
    try:
        import docker  # lazily: the Docker SDK may not be installed at all

        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
        return True
    except Exception as exc:
        problem = f"{type(exc).__name__}: {exc}"
    if mode in ("1", "yes", "true", "on"):
        pytest.fail(
            f"FRESHREC_TEST_DOCKER={mode} but no Docker engine answers ({problem}). "
            f"Start Docker, or unset FRESHREC_TEST_DOCKER to use the local stack ({STACK_UP}).",
            pytrace=False,
        )
    return False


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _read_env_file(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


class _Services:
    """Resolves each service once per session and remembers what to clean up."""

    def __init__(self, tmp_root: Path) -> None:
        self._tmp_root = tmp_root
        self._cache: dict[str, Any] = {}
        self._docker: bool | None = None
        self._local_env: dict[str, str] | None = None
        self._local_error: str | None = None
        self._containers: list[Any] = []

    # -- plumbing

    def _use_docker(self) -> bool:
        if self._docker is None:
            self._docker = _docker_wanted()
        return self._docker

    def _local_stack(self) -> dict[str, str]:
        """Start (or find) the local stack once; return its recorded endpoints."""
        if self._local_error is not None:
            # Failed once this session: do not retry (and wait) for every test.
            pytest.fail(self._local_error, pytrace=False)
        if self._local_env is None:
            try:
                self._local_env = self._start_local_stack()
            except pytest.fail.Exception as exc:
                self._local_error = str(exc.msg)
                raise
        return self._local_env

    def _start_local_stack(self) -> dict[str, str]:
        """Run `stack.sh up` (idempotent) and read the endpoints it recorded."""
        if not STACK_SH.exists():
            pytest.fail(f"{STACK_SH} is missing; cannot start the local stack.", pytrace=False)
        try:
            proc = subprocess.run(
                ["bash", str(STACK_SH), "up"],
                cwd=REPO_ROOT,
                capture_output=True,
                text=True,
                timeout=900,  # a cold first run downloads and compiles
            )
        except subprocess.TimeoutExpired:
            pytest.fail(
                f"`{STACK_UP}` took more than 15 minutes; run it by hand to see why.",
                pytrace=False,
            )
        if proc.returncode != 0:
            pytest.fail(
                f"`{STACK_UP}` failed (exit {proc.returncode}). Run it by hand; "
                f"`{STACK_LOGS} <service>` shows the service logs.\n{proc.stdout}{proc.stderr}",
                pytrace=False,
            )
        stack_dir = Path(os.environ.get("FRESHREC_STACK_DIR", REPO_ROOT / ".stack"))
        env_file = stack_dir / "stack.env"
        if not env_file.exists():
            pytest.fail(f"`{STACK_UP}` succeeded but wrote no {env_file}", pytrace=False)
        return _read_env_file(env_file)

    def _start(self, container: Any) -> Any:
        container.start()
        self._containers.append(container)
        return container

    def close(self) -> None:
        # The local stack is left running on purpose: it is shared, and the next
        # session then starts in about a second. Containers are ours alone.
        for container in reversed(self._containers):
            with contextlib.suppress(Exception):
                container.stop()
        self._containers.clear()

    # -- kafka

    def kafka(self) -> str:
        if "kafka" not in self._cache:
            self._cache["kafka"] = self._resolve_kafka()
        return self._cache["kafka"]

    def _resolve_kafka(self) -> str:
        env = os.environ.get("FRESHREC_TEST_KAFKA")
        if env:
            _deadline_loop(
                f"Kafka at FRESHREC_TEST_KAFKA={env}",
                lambda: _check_kafka(env),
                READY_TIMEOUT_S,
                "Start that broker, or unset FRESHREC_TEST_KAFKA to use the local stack "
                f"({STACK_UP}).",
            )
            return env
        if self._use_docker():
            return self._kafka_container()
        bootstrap = self._local_stack()["FRESHREC_TEST_KAFKA"]
        _deadline_loop(
            f"Kafka of the local stack at {bootstrap}",
            lambda: _check_kafka(bootstrap),
            15,
            f"Run `{STACK_UP}`; `{STACK_LOGS} kafka` shows the broker log.",
        )
        return bootstrap

    def _kafka_container(self) -> str:
        from testcontainers.core.container import DockerContainer

        # The broker advertises the address clients must use, so the host port is chosen
        # up front and mapped 1:1 (a random mapped port is only known after start).
        port = _free_port()
        container = DockerContainer(KAFKA_IMAGE).with_bind_ports(port, port)
        # The Docker host's address; known before start (get_container_host_ip is not,
        # in every connection mode).
        host = container.get_docker_client().host()
        host = "127.0.0.1" if host in ("localhost", "::1") else host
        for key, value in {
            "KAFKA_NODE_ID": "1",
            "KAFKA_PROCESS_ROLES": "broker,controller",
            "KAFKA_LISTENERS": f"PLAINTEXT://:{port},CONTROLLER://:9093",
            "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{host}:{port}",
            "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
            "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
            "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
            "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR": "1",
            "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR": "1",
            "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        }.items():
            container.with_env(key, value)
        self._start(container)
        bootstrap = f"{host}:{port}"
        _deadline_loop(
            f"Kafka container {KAFKA_IMAGE} at {bootstrap}",
            lambda: _check_kafka(bootstrap),
            READY_TIMEOUT_S,
            "Set FRESHREC_TEST_DOCKER=0 to use the local stack instead.",
        )
        return bootstrap

    # -- s3

    def s3(self) -> S3Endpoint:
        if "s3" not in self._cache:
            self._cache["s3"] = self._resolve_s3()
        return self._cache["s3"]

    def _resolve_s3(self) -> S3Endpoint:
        env = os.environ.get("FRESHREC_TEST_S3")
        if env:
            ep = S3Endpoint(
                url=env,
                access_key=os.environ.get("FRESHREC_TEST_S3_ACCESS_KEY", DEFAULT_S3_ACCESS_KEY),
                secret_key=os.environ.get("FRESHREC_TEST_S3_SECRET_KEY", DEFAULT_S3_SECRET_KEY),
                region=os.environ.get("FRESHREC_TEST_S3_REGION", DEFAULT_S3_REGION),
                bucket=os.environ.get("FRESHREC_TEST_S3_BUCKET", DEFAULT_S3_BUCKET),
            )
            _deadline_loop(
                f"S3 at FRESHREC_TEST_S3={env}",
                lambda: _check_s3(ep, create_bucket=True),
                READY_TIMEOUT_S,
                "Check the server and FRESHREC_TEST_S3_ACCESS_KEY/_SECRET_KEY, "
                f"or unset FRESHREC_TEST_S3 to use the local stack ({STACK_UP}).",
            )
            return ep
        if self._use_docker():
            return self._s3_container()
        env_file = self._local_stack()
        ep = S3Endpoint(
            url=env_file["FRESHREC_TEST_S3"],
            access_key=env_file["FRESHREC_TEST_S3_ACCESS_KEY"],
            secret_key=env_file["FRESHREC_TEST_S3_SECRET_KEY"],
            region=env_file.get("FRESHREC_TEST_S3_REGION", DEFAULT_S3_REGION),
            bucket=env_file.get("FRESHREC_TEST_S3_BUCKET", DEFAULT_S3_BUCKET),
        )
        _deadline_loop(
            f"S3 server of the local stack at {ep.url}",
            lambda: _check_s3(ep, create_bucket=True),
            15,
            f"Run `{STACK_UP}`; `{STACK_LOGS} s3` shows the server log.",
        )
        return ep

    def _s3_container(self) -> S3Endpoint:
        from testcontainers.core.container import DockerContainer

        container = (
            DockerContainer(S3_IMAGE)
            .with_env("ROOT_ACCESS_KEY", DEFAULT_S3_ACCESS_KEY)
            .with_env("ROOT_SECRET_KEY", DEFAULT_S3_SECRET_KEY)
            .with_command(["--port", ":7070", "posix", "/tmp/vgw"])  # /tmp/vgw exists in the image
            .with_exposed_ports(7070)
        )
        self._start(container)
        url = f"http://{container.get_container_host_ip()}:{container.get_exposed_port(7070)}"
        ep = S3Endpoint(url, DEFAULT_S3_ACCESS_KEY, DEFAULT_S3_SECRET_KEY)
        _deadline_loop(
            f"S3 container {S3_IMAGE} at {url}",
            lambda: _check_s3(ep, create_bucket=True),
            READY_TIMEOUT_S,
            "Set FRESHREC_TEST_DOCKER=0 to use the local stack instead.",
        )
        return ep

    # -- prometheus

    def prometheus(self) -> _Prometheus:
        if "prometheus" not in self._cache:
            self._cache["prometheus"] = self._resolve_prometheus()
        return self._cache["prometheus"]

    def _resolve_prometheus(self) -> _Prometheus:
        env = os.environ.get("FRESHREC_TEST_PROMETHEUS")
        if env:
            _deadline_loop(
                f"Prometheus at FRESHREC_TEST_PROMETHEUS={env}",
                lambda: _check_prometheus(env),
                READY_TIMEOUT_S,
                f"Start it, or unset FRESHREC_TEST_PROMETHEUS to use the local stack ({STACK_UP}).",
            )
            targets = os.environ.get("FRESHREC_TEST_PROMETHEUS_TARGETS_DIR")
            return _Prometheus(
                env.rstrip("/"), Path(targets) if targets else None, "FRESHREC_TEST_PROMETHEUS"
            )
        if self._use_docker():
            return self._prometheus_container()
        env_file = self._local_stack()
        url = env_file["FRESHREC_TEST_PROMETHEUS"]
        _deadline_loop(
            f"Prometheus of the local stack at {url}",
            lambda: _check_prometheus(url),
            15,
            f"Run `{STACK_UP}`; `{STACK_LOGS} prometheus` shows its log.",
        )
        return _Prometheus(
            url, Path(env_file["FRESHREC_TEST_PROMETHEUS_TARGETS_DIR"]), "local stack"
        )

    def _prometheus_container(self) -> _Prometheus:
        from testcontainers.core.container import DockerContainer

        # Host networking, so that targets registered as 127.0.0.1:<port> (a test's own
        # /metrics server) are reachable from inside the container. Linux Docker only.
        base = Path(tempfile.mkdtemp(prefix="prometheus-", dir=self._tmp_root))
        targets = base / "targets"
        targets.mkdir()
        # Prometheus runs as `nobody` in its image; mkdtemp's 0700 would hide the files.
        for folder in (self._tmp_root, base, targets):
            folder.chmod(0o755)
        port = _free_port()
        template = (REPO_ROOT / "deploy" / "local" / "prometheus.yml.tmpl").read_text()
        config = (
            template.replace("@RULES_DIR@", "/etc/freshrec/rules")
            .replace("@TARGETS_DIR@", "/etc/freshrec/targets")
            .replace("@PROMETHEUS_PORT@", str(port))
        )
        (base / "prometheus.yml").write_text(config)
        rules = REPO_ROOT / "deploy" / "prometheus" / "rules"
        rules_mount = rules if rules.is_dir() else base / "no-rules"
        rules_mount.mkdir(exist_ok=True)
        container = (
            DockerContainer(PROMETHEUS_IMAGE)
            .with_kwargs(network_mode="host")
            .with_volume_mapping(str(base / "prometheus.yml"), "/etc/freshrec/prometheus.yml", "ro")
            .with_volume_mapping(str(targets), "/etc/freshrec/targets", "ro")
            .with_volume_mapping(str(rules_mount), "/etc/freshrec/rules", "ro")
            .with_command(
                [
                    "--config.file=/etc/freshrec/prometheus.yml",
                    "--storage.tsdb.path=/prometheus",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--web.enable-lifecycle",
                ]
            )
        )
        self._start(container)
        url = f"http://127.0.0.1:{port}"
        _deadline_loop(
            f"Prometheus container {PROMETHEUS_IMAGE} at {url}",
            lambda: _check_prometheus(url),
            READY_TIMEOUT_S,
            "Host networking is required (Linux Docker). "
            "Set FRESHREC_TEST_DOCKER=0 to use the local stack.",
        )
        return _Prometheus(url, targets, "testcontainers")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def _freshrec_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Services]:
    services = _Services(tmp_path_factory.mktemp("services"))
    yield services
    services.close()


@pytest.fixture(scope="session")
def kafka_bootstrap(_freshrec_services: _Services) -> str:
    """Bootstrap servers of a real Kafka broker, "host:port"."""
    return _freshrec_services.kafka()


@pytest.fixture(scope="session")
def s3_endpoint(_freshrec_services: _Services) -> S3Endpoint:
    """A real S3-compatible server; its default bucket exists."""
    return _freshrec_services.s3()


@pytest.fixture(scope="session")
def prometheus_url(_freshrec_services: _Services) -> str:
    """Base URL of a real Prometheus, "http://host:port" (no trailing slash)."""
    return _freshrec_services.prometheus().url


def _slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")[:limit] or "test"


@pytest.fixture
def prometheus_targets(_freshrec_services: _Services) -> Iterator[Callable[[str, str], Path]]:
    """register(name, host_port) makes Prometheus scrape http://host_port/metrics
    (job "freshrec", label target=<name>, every second). Unregistered at teardown."""
    prom = _freshrec_services.prometheus()
    if prom.targets_dir is None:
        pytest.fail(
            f"Prometheus comes from {prom.source} ({prom.url}) but its file_sd folder is unknown: "
            "set FRESHREC_TEST_PROMETHEUS_TARGETS_DIR to the folder its file_sd_configs read.",
            pytrace=False,
        )
    targets_dir = prom.targets_dir
    targets_dir.mkdir(parents=True, exist_ok=True)
    # The token keeps concurrent sessions (several engineers, one shared stack) apart.
    token = uuid.uuid4().hex[:8]
    written: list[Path] = []

    def register(name: str, host_port: str) -> Path:
        path = targets_dir / f"{_slug(name, 80)}-{token}.json"
        tmp = path.with_name(f".{path.name}.tmp")  # not *.json: Prometheus ignores it
        tmp.write_text(json.dumps([{"targets": [host_port], "labels": {"target": name}}]))
        os.replace(tmp, path)  # atomic: Prometheus never reads a half-written file
        written.append(path)
        return path

    yield register
    for path in written:
        path.unlink(missing_ok=True)


@pytest.fixture
def unique_topic(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """make(partitions=1, config=None) -> name of a new, empty topic on the broker,
    named after the test; its partitions have leaders when make() returns.
    The topics are deleted when the test ends."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": kafka_bootstrap, "log_level": 0})
    created: list[str] = []

    def make(partitions: int = 1, config: dict[str, str] | None = None) -> str:
        name = f"test-{_slug(request.node.name)}-{uuid.uuid4().hex[:8]}"
        futures = admin.create_topics(
            [NewTopic(name, num_partitions=partitions, replication_factor=1, config=config or {})],
            operation_timeout=30,
            request_timeout=30,
        )
        futures[name].result(timeout=40)
        created.append(name)
        # CreateTopics returns once the controller has the topic; producers and consumers
        # need every partition to have a leader in the broker's metadata.
        deadline = time.monotonic() + 30
        while True:
            meta = admin.list_topics(topic=name, timeout=5).topics.get(name)
            if (
                meta is not None
                and meta.error is None
                and len(meta.partitions) == partitions
                and all(p.leader >= 0 for p in meta.partitions.values())
            ):
                return name
            if time.monotonic() >= deadline:
                pytest.fail(
                    f"topic {name} has no leader for every partition after 30s", pytrace=False
                )
            time.sleep(0.1)

    yield make
    if created:
        for future in admin.delete_topics(
            created, operation_timeout=10, request_timeout=15
        ).values():
            # Best effort: the names are unique anyway.
            with contextlib.suppress(Exception):
                future.result(timeout=20)


@pytest.fixture
def unique_prefix(request: pytest.FixtureRequest) -> str:
    """An S3 key prefix ("test/<test-name>-<random>/") that no other test or session uses."""
    return f"test/{_slug(request.node.name)}-{uuid.uuid4().hex[:8]}/"


__all__ = [
    "S3Endpoint",
    "kafka_bootstrap",
    "prometheus_targets",
    "prometheus_url",
    "s3_endpoint",
    "unique_prefix",
    "unique_topic",
]
