"""A two-replica fleet on loopback: real ``python -m bridge serve`` processes behind HAProxy.

Why real processes and a real balancer: what a fleet must get right (a token used on
one replica refused on another, a SIGTERM drain while the balancer moves new calls, a
``kill -9`` that ends only its own calls) lives between processes and in the balancer's
health checks, which no in-process test can show.  HAProxy comes from the OS packages
(``.ci/run`` installs it); without it the fleet tests skip with the reason.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode

from prometheus_client.parser import text_string_to_metric_families
from twilio.request_validator import RequestValidator

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


def haproxy_config(lb_port: int, replicas: dict[str, int]) -> str:
    """Round-robin webhooks and streams over healthy replicas; ``/r/NAME/`` reaches one.

    ``/healthz`` answers 503 while a replica drains, so the 200 ms health check takes it
    out of rotation; ``retry-on 503`` with ``redispatch`` re-sends a webhook that hit a
    draining replica in the gap to another one, so Twilio never sees the 503."""
    lines = [
        "global",
        "    maxconn 4096",
        "defaults",
        "    mode http",
        "    timeout connect 2s",
        "    timeout client 30s",
        "    timeout server 30s",
        "    timeout tunnel 2h",  # a WebSocket call may last the Realtime API's 60 min cap
        "    option http-buffer-request",
        "    retries 2",
        "    option redispatch 1",
        "    retry-on conn-failure empty-response 503",
        "frontend public",
        f"    bind 127.0.0.1:{lb_port}",
    ]
    for name in replicas:
        lines += [f"    use_backend only_{name} if {{ path_beg /r/{name}/ }}"]
    lines += [
        "    default_backend bridges",
        "backend bridges",
        "    balance roundrobin",
        "    option httpchk GET /healthz",
        "    http-check expect status 200",
    ]
    for name, port in replicas.items():
        lines.append(f"    server {name} 127.0.0.1:{port} check inter 200ms fall 1 rise 1")
    for name, port in replicas.items():
        lines += [
            f"backend only_{name}",
            f"    http-request replace-path /r/{name}(/.*) \\1",
            f"    server {name} 127.0.0.1:{port}",
        ]
    return "\n".join(lines) + "\n"


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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None
            if self.process.poll() is not None:
                raise RuntimeError(f"replica {self.name} exited: {self.log()[-2000:]}")
            try:
                if http_get(f"http://127.0.0.1:{self.port}/healthz", 0.5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError(f"replica {self.name} not ready: {self.log()[-2000:]}")

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
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"haproxy exited: {self.log.read_text(errors='replace')}")
            try:
                if http_get(f"http://127.0.0.1:{self.port}/healthz", 0.5)[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.05)
        raise RuntimeError("haproxy not ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def incoming_call(
    lb_url: str, public_url: str, auth_token: str, call_sid: str
) -> tuple[int, str, dict[str, str]]:
    """Twilio's webhook step through the balancer: (status, stream url, parameters)."""
    form = {
        "AccountSid": "AC" + "0" * 32,
        "CallSid": call_sid,
        "From": "+15550001111",
        "To": "+15559990000",
        "CallStatus": "ringing",
        "Direction": "inbound",
        "ApiVersion": "2010-04-01",
    }
    signature = RequestValidator(auth_token).compute_signature(public_url + "/twiml", form)
    request = urllib.request.Request(
        lb_url + "/twiml",
        data=urlencode(form).encode(),
        headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Twilio-Signature": str(signature),
        },
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, "", {}
    stream = ET.fromstring(body).find("./Connect/Stream")
    if stream is None:
        return status, "", {}
    params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
    return status, stream.get("url", ""), params
