"""What a new operator trips on, tried through the real entry point (``python -m bridge``).

Each test runs the CLI as a subprocess, as a user would, so the top-level parser,
the start-up path and the process's exit status are all exercised.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

from bridge.store import open_store
from tests.test_cli import ROOT, SECRET_KEY, run_cli

pytestmark = pytest.mark.e2e

SERVE_ENV = {
    "OPENAI_API_KEY": SECRET_KEY,
    "PUBLIC_URL": "https://bridge.example.com",
    "TWILIO_AUTH_TOKEN": "tw-operator-test-token",
}


async def _recorded_calls(path: Path, count: int) -> list[str]:
    store = open_store(f"sqlite:///{path}")
    await store.start()
    sids = [f"CA{i:032d}" for i in range(count)]
    for i, sid in enumerate(sids):
        store.record_call_started(sid, from_number="+15550001111", agent="default")
        store.record_turn(sid, 1, "caller", f"question {i}", start_ms=0, end_ms=900)
        store.record_call_ended(sid, "caller_hung_up")
    assert await store.close()
    return sids


def test_calls_json_and_limit_work_from_the_entry_point(tmp_path: Path) -> None:
    db = tmp_path / "calls.db"
    sids = asyncio.run(_recorded_calls(db, 7))
    env = {"DATABASE_URL": f"sqlite:///{db}"}

    listed = run_cli("calls", "--json", "--limit", "5", env=env)
    assert listed.returncode == 0, listed.stderr
    calls = json.loads(listed.stdout)["calls"]
    assert len(calls) == 5 and {c["call_sid"] for c in calls} <= set(sids)

    assert run_cli("calls", "--json", env=env).returncode == 0
    text = run_cli("calls", "--limit", "2", env=env)
    assert text.returncode == 0 and sum(sid in text.stdout for sid in sids) == 2

    shown = run_cli("calls", "show", sids[0], "--json", env=env)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["call_sid"] == sids[0]

    helped = run_cli("calls", "--help")
    assert helped.returncode == 0
    assert "--json" in helped.stdout and "--limit" in helped.stdout and "show" in helped.stdout
    assert "rest" not in helped.stdout


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DATABASE_URL": "mysql://u:pw-secret@db/calls"}, "unsupported scheme"),
        ({"AGENT_TOOLS": "no_such_package.tools:nothing"}, "no_such_package"),
    ],
)
def test_bad_database_url_or_tool_path_is_one_line_without_traceback(
    env: dict[str, str], message: str
) -> None:
    proc = run_cli("serve", "--port", "0", env={**SERVE_ENV, **env})
    assert proc.returncode == 2
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) <= 3, proc.stderr
    assert "pw-secret" not in proc.stderr and SECRET_KEY not in proc.stderr


def test_uvicorn_entry_point_reports_a_bad_database_url_without_traceback() -> None:
    if shutil.which("uvicorn") is None and not (ROOT / ".venv/bin/uvicorn").exists():
        pytest.skip("uvicorn's console script is not on PATH")
    import os
    import sys

    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "TWILIO_", "BRIDGE_"))
    }
    env.update(SERVE_ENV)
    env["DATABASE_URL"] = "mysql://u:p@db/calls"
    proc = subprocess.run(
        [sys.executable, "-m", "uvicorn", "bridge.app:app", "--port", "0"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode != 0
    assert "unsupported scheme" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plain_http_public_url_is_refused_unless_loopback_or_allowed() -> None:
    bad = run_cli("serve", "--port", "0", env={**SERVE_ENV, "PUBLIC_URL": "http://b.example.com"})
    assert bad.returncode == 2
    assert "PUBLIC_URL must start with https://" in bad.stderr
    assert "Traceback" not in bad.stderr
    # Allowed explicitly: the only problem left is the (deliberately) bad database URL.
    allowed = run_cli(
        "serve",
        "--port",
        "0",
        env={
            **SERVE_ENV,
            "PUBLIC_URL": "http://b.example.com",
            "BRIDGE_ALLOW_HTTP": "1",
            "DATABASE_URL": "mysql://x/y",
        },
    )
    assert allowed.returncode == 2
    assert "PUBLIC_URL" not in allowed.stderr and "unsupported scheme" in allowed.stderr
    replica = run_cli(
        "serve",
        "--port",
        "0",
        env={**SERVE_ENV, "BRIDGE_REPLICA_STREAM_URL": "ws://bridge-0.example.com/media-stream"},
    )
    assert "BRIDGE_REPLICA_STREAM_URL must start with wss://" in replica.stderr


def test_serve_help_shows_defaults_and_the_metrics_port() -> None:
    proc = run_cli("serve", "--help", env={"PORT": "9090"})
    assert proc.returncode == 0
    text = " ".join(proc.stdout.split())
    assert "(default: 9090)" in text  # --port follows $PORT
    assert "(default: 30)" in text  # --grace
    assert "(default: 0.0.0.0)" in text
    assert "--metrics-port" in text


def test_procfile_runs_the_draining_server_with_the_recommended_websocket_stack() -> None:
    line = (ROOT / "Procfile").read_text().strip()
    assert line.startswith("web: python -m bridge serve ")
    assert "--port $PORT" in line


def test_sqlite_side_files_are_ignored_by_git() -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    for name in ("bridge.db", "bridge.db-wal", "bridge.db-shm"):
        proc = subprocess.run(
            ["git", "check-ignore", "-q", name], cwd=ROOT, capture_output=True, timeout=10
        )
        if proc.returncode == 128:
            pytest.skip("not a git checkout")
        assert proc.returncode == 0, f"{name} would show as untracked"


def test_dev_extra_brings_the_postgres_driver() -> None:
    """``pip install -e '.[dev]'`` must not silently skip the PostgreSQL tests."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    dev = project["optional-dependencies"]["dev"]
    assert any(req.startswith("asyncpg") for req in dev)
    markers = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
        "markers"
    ]
    assert any(m.startswith("e2e:") for m in markers)


def test_a_bad_port_or_grace_in_the_environment_is_a_usage_error() -> None:
    proc = run_cli("serve", env={**SERVE_ENV, "BRIDGE_DRAIN_GRACE": "soon"})
    assert proc.returncode == 2 and "invalid float value: 'soon'" in proc.stderr
    assert "Traceback" not in proc.stderr


async def test_simulated_phone_places_a_call_through_the_entry_point() -> None:
    """``python -m bridge.devtools.sim.phone`` (compose's caller) against a running bridge."""
    import os
    import sys

    from bridge.devtools.sim.local_bridge import LocalBridge
    from bridge.devtools.sim.realtime_server import RealtimeSimulator

    sim = RealtimeSimulator(script=["agent_reply"], api_key="sk-x")
    async with sim, LocalBridge(sim.url, env={"OPENAI_API_KEY": "sk-x"}) as bridge:
        env = {**os.environ, "PUBLIC_URL": bridge.base_url, "TWILIO_AUTH_TOKEN": bridge.auth_token}
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bridge.devtools.sim.phone",
            "--calls",
            "2",
            "--duration-ms",
            "4000",
            env=env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(), 30)
    lines = out.decode().splitlines()
    assert proc.returncode == 0, err.decode()
    assert len(lines) == 2 and all("ended by caller" in line for line in lines)
    assert all("agent audio 0 ms" not in line for line in lines)
    assert bridge.auth_token not in out.decode() + err.decode()
