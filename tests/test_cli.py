"""The command line and the server process, as a user runs them."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bridge.config import ConfigError, load_settings
from bridge.devtools.sim.local_bridge import LocalBridge, free_socket
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.sim.twilio_rest import TwilioRestSimulator

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parent.parent
SECRET_KEY = "sk-cli-secret-value-1234"


def run_cli(
    *args: str, env: dict[str, str] | None = None, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    clean = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENAI_", "TWILIO_", "BRIDGE_", "AGENT_", "VAD_", "PUBLIC_URL"))
    }
    clean.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env=clean,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_every_config_problem_is_listed_without_a_traceback() -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(
            {
                "BRIDGE_AUDIO": "opus",
                "VAD_THRESHOLD": "2",
                "AGENT_VOICE": "robot",
                "PUBLIC_URL": "ftp://x",
                "BRIDGE_MAX_CALLS": "many",
                "TRANSFER_NUMBERS": "555-1234",
                "BRIDGE_STREAM_SERVER": "nginx",
            }
        )
    assert len(error.value.problems) == 7
    assert any("BRIDGE_STREAM_SERVER" in p for p in error.value.problems)


def test_serve_refuses_to_start_without_keys_and_says_why() -> None:
    proc = run_cli("serve", "--port", "0", env={"OPENAI_API_KEY": SECRET_KEY})
    assert proc.returncode == 2
    assert "PUBLIC_URL is required" in proc.stderr
    assert "TWILIO_AUTH_TOKEN is required" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert SECRET_KEY not in proc.stderr + proc.stdout


def test_uvicorn_entry_point_refuses_bad_config_cleanly() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_"))}
    clean["BRIDGE_AUDIO"] = "opus"
    clean["OPENAI_API_KEY"] = SECRET_KEY
    proc = subprocess.run(
        [sys.executable, "-m", "uvicorn", "bridge.app:app", "--port", "0"],
        env=clean,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "BRIDGE_AUDIO='opus' is not one of" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert SECRET_KEY not in proc.stderr + proc.stdout


async def test_call_and_twilio_configure_use_the_rest_api() -> None:
    token = "c" * 32
    async with TwilioRestSimulator(auth_token=token) as rest:
        rest.add_number("+15551230000")
        env = {
            "TWILIO_ACCOUNT_SID": rest.account_sid,
            "TWILIO_AUTH_TOKEN": token,
            "TWILIO_API_BASE_URL": rest.base_url,
            "PUBLIC_URL": "https://bridge.example.com",
        }
        configured = await asyncio.to_thread(
            run_cli, "twilio", "configure", "+15551230000", env=env
        )
        assert configured.returncode == 0, configured.stderr
        placed = await asyncio.to_thread(
            run_cli, "call", "+15557654321", "--from", "+15551230000", env=env
        )
        assert placed.returncode == 0, placed.stderr
        assert placed.stdout.strip().startswith("CA")
        requests = [(r.method, r.path.rsplit("/", 1)[-1], r.form) for r in rest.requests]
    number_update = next(f for m, p, f in requests if m == "POST" and p.startswith("PN"))
    assert number_update["VoiceUrl"] == "https://bridge.example.com/twiml"
    assert number_update["StatusCallback"] == "https://bridge.example.com/status"
    create = next(f for m, p, f in requests if m == "POST" and p == "Calls.json")
    assert create["To"] == "+15557654321" and create["From"] == "+15551230000"
    assert create["Url"] == "https://bridge.example.com/twiml"
    assert token not in placed.stderr + configured.stderr + placed.stdout + configured.stdout


async def test_capacity_limit_answers_busy_and_health_and_metrics_report() -> None:
    sim = RealtimeSimulator(script=["agent_reply"], api_key="sk-x")
    async with (
        sim,
        LocalBridge(
            sim.url,
            env={
                "OPENAI_API_KEY": "sk-x",
                "BRIDGE_MAX_CALLS": "1",
                "BRIDGE_METRICS_TOKEN": "metrics-test-token",
            },
        ) as bridge,
    ):
        caller = await bridge.place_call(script=[(200, "caller_question")], duration_ms=2500)
        running = asyncio.create_task(caller.run())
        services = bridge.services
        await sim.wait_for(
            lambda: services.active and services.metrics.value("bridge_calls_started_total"),
            timeout=5,
        )
        status, body = await bridge.post_webhook(
            "/twiml", {"CallSid": "CA" + "3" * 32, "From": "+1555", "To": "+1666"}
        )
        assert status == 200 and "<Hangup" in body and "<Stream" not in body
        import urllib.request

        def get(path: str) -> str:
            request = urllib.request.Request(
                bridge.base_url + path, headers={"Authorization": "Bearer metrics-test-token"}
            )
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.read().decode()

        health = await asyncio.to_thread(get, "/healthz")
        assert '"calls":1' in health.replace(" ", "")
        metrics = await asyncio.to_thread(get, "/metrics")
        assert "bridge_calls_active 1" in metrics
        assert 'bridge_calls_rejected_total{reason="capacity"} 1' in metrics
        await running


def test_sigterm_drains_refuses_new_calls_and_ends_live_ones(tmp_path: Path) -> None:
    """A real ``serve`` process: SIGTERM -> webhook 503 (Twilio fallback), live call ends."""

    async def scenario() -> None:
        sim = RealtimeSimulator(script=["agent_reply"], api_key="sk-y")
        async with sim:
            sock = free_socket()
            port = sock.getsockname()[1]
            sock.close()
            token = "d" * 32
            env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_"))}
            env.update(
                {
                    "OPENAI_API_KEY": "sk-y",
                    "OPENAI_REALTIME_URL": sim.url,
                    "PUBLIC_URL": f"http://127.0.0.1:{port}",
                    "TWILIO_AUTH_TOKEN": token,
                    "DATABASE_URL": f"sqlite:///{tmp_path / 'c.db'}",
                }
            )
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bridge",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--grace",
                    "2",
                ],
                env=env,
                cwd=ROOT,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
            )
            try:
                client = LocalBridge.__new__(LocalBridge)
                client.auth_token = token
                client.port = port
                client.settings = load_settings(
                    {"PUBLIC_URL": f"http://127.0.0.1:{port}", "TWILIO_AUTH_TOKEN": token}
                )
                # `serve` imports a lot; on a loaded 2-core host start-up takes a while.
                deadline = time.monotonic() + 45
                while True:
                    try:
                        caller = await client.place_call(
                            script=[(200, "caller_question")], duration_ms=20000
                        )
                        break
                    except OSError:
                        assert time.monotonic() < deadline, "server did not start"
                        await asyncio.sleep(0.2)
                running = asyncio.create_task(caller.run())
                await sim.wait_for(lambda: sim.open_connections == 1, timeout=5)
                proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.5)
                status, _ = await client.post_webhook(
                    "/twiml", {"CallSid": "CA" + "4" * 32, "From": "+1", "To": "+2"}
                )
                assert status == 503
                result = await asyncio.wait_for(running, 10)
                assert result.closed_by == "server"
                await asyncio.to_thread(proc.wait, 10)
                assert proc.returncode == 0
                assert sim.open_connections == 0
            finally:
                if proc.poll() is None:
                    proc.kill()
                output = proc.stdout.read() if proc.stdout else ""
                assert "Traceback" not in output, output
                # The drain above ran on serve's default Media Streams path.
                assert "media streams served by the lean path" in output, output

    asyncio.run(scenario())
