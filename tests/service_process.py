"""Run ``freshrec run`` as a real child process, the way users run it.

Integration tests start the service exactly as a user would (``python -m service run``
with ``FRESHREC_*`` environment variables), read its ``/metrics``, and stop it with
SIGTERM or kill it with SIGKILL for fault injection.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO_ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServiceProcess:
    """One ``freshrec run`` child process with its own HTTP port and log file."""

    def __init__(self, env: dict[str, str], log_path: Path, args: tuple[str, ...] = (),
                 module: str = "service") -> None:
        self.module = module  # another entry point (e.g. tests.faulty_pipeline) for faults
        self.port = free_port()
        self.env = {**os.environ, **env, "FRESHREC_HTTP__PORT": str(self.port)}
        self.env.setdefault("PYTHONPATH", str(REPO_ROOT))
        self.log_path = log_path
        self.args = args
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ServiceProcess:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", self.module, "run", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-5000:]

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://{self.address}{path}", timeout=2) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def metrics(self) -> dict[str, float]:
        """Every sample, keyed ``name{label=value,...}`` with labels sorted."""
        _, text = self._get("/metrics")
        out: dict[str, float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out[f"{s.name}{{{labels}}}"] = float(s.value)
        return out

    def total(self, name: str) -> float:
        """Sum of a metric over all its label sets (0 when the service is not up)."""
        try:
            samples = self.metrics()
        except OSError:
            return 0.0
        return sum(v for k, v in samples.items() if k.split("{", 1)[0] == name)

    def wait_until(self, what: str, check: Callable[[], bool], timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise AssertionError(
                    f"the service exited ({self.proc.returncode}) while waiting for {what}:\n"
                    + self.log()
                )
            try:
                if check():
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}:\n{self.log()}")

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_until("/readyz", lambda: self._get("/readyz")[0] == 200, timeout)

    def terminate(self, timeout: float = 60) -> int:
        """SIGTERM, then wait for a clean exit; returns the exit code."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError(f"no exit within {timeout}s of SIGTERM:\n{self.log()}") from None

    def kill(self) -> None:
        """SIGKILL: no chance to clean up, as in a crash."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
