"""A two-replica fleet on loopback: real ``python -m bridge serve`` processes behind HAProxy.

Why real processes and a real balancer: what a fleet must get right (a token used on
one replica refused on another, a SIGTERM drain while the balancer moves new calls, a
``kill -9`` that ends only its own calls) lives between processes and in the balancer's
health checks, which no in-process test can show.  HAProxy comes from the OS packages
(``.ci/run`` installs it); without it the fleet tests skip with the reason.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bridge.devtools.sim.phone import incoming_call

__all__ = ["HAProxy", "Replica", "free_port", "haproxy_binary", "incoming_call"]

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def haproxy_binary() -> str | None:
    return shutil.which("haproxy") or (
        "/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None
    )


def http_get(url: str, timeout: float = 2.0) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


COMPOSE_HAPROXY = ROOT / "deploy" / "compose" / "haproxy.cfg"


def haproxy_config(lb_port: int, replicas: dict[str, int]) -> str:
    """The shipped ``deploy/compose/haproxy.cfg``, pointed at loopback ports.

    The test runs the very routing the compose fleet uses (round robin with health
    checks, ``retry-on 503``, ``/r/NAME/`` per replica); only addresses, Docker's DNS
    resolver and the health-check interval (1 s there, 200 ms here) are changed."""
    text = COMPOSE_HAPROXY.read_text()
    text = re.sub(r"\nresolvers docker\n(    .*\n)+", "\n", text)
    text = text.replace(" resolvers docker init-addr last,libc,none", "")
    text = text.replace("    bind :8080", f"    bind 127.0.0.1:{lb_port}")
    text = text.replace("    log stdout format raw local0\n", "")
    text = text.replace("check inter 1s fall 1 rise 2", "check inter 200ms fall 1 rise 1")
    for name, port in replicas.items():
        text = text.replace(f"bridge-{name}:8080", f"127.0.0.1:{port}")
    assert "bridge-" not in text and "resolvers" not in text, text
    return text


@dataclass
class Replica:
    """One ``python -m bridge serve`` process."""

    name: str
    env: dict[str, str]
    grace_s: float = 10.0
    port: int = field(default_factory=free_port)
    metrics_port: int = field(default_factory=free_port)
    log_path: Path = field(default_factory=lambda: Path(tempfile.mktemp(suffix=".log")))
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [
            sys.executable,
            "-m",
            "bridge",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--metrics-port",
            str(self.metrics_port),
            "--grace",
            str(self.grace_s),
        ]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            command, env={**os.environ, **self.env}, stdout=log, stderr=log, cwd=ROOT
        )
        log.close()

    def wait_ready(self, timeout: float = 30.0) -> None:
        assert self.process is not None
        wait_healthy(self.process, self.port, timeout,
                     lambda: f"replica {self.name}: {self.log()[-2000:]}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        """A sample from this replica's private metrics port (0 when absent)."""
        _, text = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == name and all(
                    sample.labels.get(k) == v for k, v in (labels or {}).items()
                ):
                    return float(sample.value)
        return 0.0

    def signal(self, sig: signal.Signals) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
        self.log_path.unlink(missing_ok=True)


def wait_healthy(process: subprocess.Popen[bytes], port: int, timeout: float,
                 describe: Callable[[], str]) -> None:
    """Until ``/healthz`` on ``port`` answers 200; the process exiting first, or the
    timeout, raises with ``describe()`` (its name and log)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"exited: {describe()}")
        try:
            if http_get(f"http://127.0.0.1:{port}/healthz", 0.5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"not ready: {describe()}")


class HAProxy:
    """HAProxy in the foreground (``-db``) with a generated configuration."""

    def __init__(self, binary: str, lb_port: int, replicas: dict[str, int]) -> None:
        self.port = lb_port
        self.dir = Path(tempfile.mkdtemp(prefix="bridge-haproxy-"))
        self.config = self.dir / "haproxy.cfg"
        self.config.write_text(haproxy_config(lb_port, replicas))
        self.log = self.dir / "haproxy.log"
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [binary, "-db", "-f", str(self.config)], stdout=out, stderr=out
            )

    def wait_ready(self, timeout: float = 10.0) -> None:
        wait_healthy(self.process, self.port, timeout,
                     lambda: f"haproxy: {self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)
