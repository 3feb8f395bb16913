"""Private, killable real servers for fault-injection tests.

Killing the shared stack's broker would disturb every other test, so fault tests start
their own Kafka broker and S3 server: the same software as the stack (the Kafka jars and
the versitygw binary that ``deploy/local/stack.sh up`` cached under ``.stack/``), on free
ports, with data in the test's temporary folder. ``kill()`` is SIGKILL, as in a crash;
``start()`` again restarts on the same data, as after a reboot.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from tests.service_process import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = REPO_ROOT / "deploy" / "local" / "kafka-server.properties.tmpl"


def stack_dir() -> Path:
    return Path(os.environ.get("FRESHREC_STACK_DIR", REPO_ROOT / ".stack"))


def _require(path: Path, what: str) -> None:
    if not path.exists():
        pytest.fail(
            f"{what} not found at {path}: fault tests start private servers from the local "
            "stack's cache. Run `deploy/local/stack.sh up` once (or `make test`).",
            pytrace=False,
        )


class _Process:
    def __init__(self, name: str, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                start_new_session=True,  # its own process group: kill() takes it all
            )

    def kill(self) -> None:
        """SIGKILL the whole process group, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)

    def log_tail(self) -> str:
        return self.log_path.read_text(errors="replace")[-3000:]


class PrivateKafka(_Process):
    """A one-node KRaft Kafka broker of our own."""

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__("kafka", root / "kafka.log")
        self.libs = stack_dir() / "kafka" / "libs"
        _require(self.libs, "Kafka jars")
        self.port = free_port()
        self.controller_port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        data = root / "data"
        data.mkdir(exist_ok=True)
        props = TEMPLATE.read_text()
        for key, value in {
            "KAFKA_PORT": str(self.port),
            "KAFKA_CONTROLLER_PORT": str(self.controller_port),
            "KAFKA_DATA_DIR": str(data),
        }.items():
            props = props.replace(f"@{key}@", value)
        self.props = root / "server.properties"
        self.props.write_text(props)
        classpath = f"{self.libs}/*"
        cluster_id = subprocess.run(
            ["java", "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
            check=True, capture_output=True, text=True,
        ).stdout.strip()
        subprocess.run(
            ["java", "-cp", classpath, "kafka.tools.StorageTool", "format", "-t", cluster_id,
             "-c", str(self.props), "--standalone", "--ignore-formatted"],
            check=True, capture_output=True,
        )

    def start(self, timeout: float = 90) -> PrivateKafka:
        self._spawn(["java", "-Xmx384m", "-Xms128m", "-XX:+UseG1GC",
                     "-cp", f"{self.libs}/*", "kafka.Kafka", str(self.props)])
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float) -> None:
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(f"private Kafka exited:\n{self.log_tail()}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:
                pass
            time.sleep(0.5)
        raise AssertionError(f"private Kafka not ready in {timeout}s:\n{self.log_tail()}")


class PrivateS3(_Process):
    """A versitygw S3 server of our own, serving a folder of the test."""

    access_key = "fault"
    secret_key = "fault-secret"
    bucket = "faults"

    def __init__(self, root: Path) -> None:
        root.mkdir(parents=True, exist_ok=True)
        super().__init__("s3", root / "s3.log")
        self.binary = stack_dir() / "bin" / "versitygw"
        _require(self.binary, "the versitygw binary")
        self.data = root / "data"
        self.data.mkdir(exist_ok=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._bucket_made = False

    def start(self, timeout: float = 30) -> PrivateS3:
        env = {**os.environ, "ROOT_ACCESS_KEY": self.access_key,
               "ROOT_SECRET_KEY": self.secret_key}
        self._spawn([str(self.binary), "--port", f"127.0.0.1:{self.port}", "--quiet",
                     "posix", str(self.data)], env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    break
            except OSError:
                time.sleep(0.2)
        else:
            raise AssertionError(f"private S3 not listening in {timeout}s:\n{self.log_tail()}")
        if not self._bucket_made:
            self.client().create_bucket(Bucket=self.bucket)
            self._bucket_made = True
        return self

    def client(self):  # type: ignore[no-untyped-def]
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3", endpoint_url=self.url, aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key, region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def env(self, prefix: str) -> dict[str, str]:
        """The service's storage settings for this server."""
        return {
            "FRESHREC_STORAGE__URL": f"s3://{self.bucket}/{prefix}",
            "FRESHREC_STORAGE__ENDPOINT_URL": self.url,
            "FRESHREC_STORAGE__ACCESS_KEY": self.access_key,
            "FRESHREC_STORAGE__SECRET_KEY": self.secret_key,
        }
