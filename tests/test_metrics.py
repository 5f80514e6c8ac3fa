"""``/metrics`` with prometheus-client: private by default, per-app registries, real series."""

from __future__ import annotations

import asyncio
import json
import logging
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.logs import CallIdFilter, JsonFormatter, bind_call, call_log_context
from tests.fleet import free_port

pytestmark = pytest.mark.e2e

TOKEN = "metrics-bearer-token-123"


def fetch(url: str, token: str | None = None) -> tuple[int, str, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=5) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, "", error.read().decode()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def test_public_metrics_need_the_bearer_token_and_report_a_call() -> None:
    sim = RealtimeSimulator(
        script=["agent_reply"], api_key="sk-x", caller_transcripts=["what are your hours"]
    )
    env = {"OPENAI_API_KEY": "sk-x", "BRIDGE_METRICS_TOKEN": TOKEN}
    async with sim, LocalBridge(sim.url, env=env) as bridge:
        caller = await bridge.place_call(script=[(200, "caller_question")], duration_ms=4000)
        result = await caller.run()
        assert result.closed_by == "caller"
        url = bridge.base_url + "/metrics"
        assert (await asyncio.to_thread(fetch, url))[0] == 401
        assert (await asyncio.to_thread(fetch, url, "wrong-token"))[0] == 401
        status, content_type, text = await asyncio.to_thread(fetch, url, TOKEN)
    assert status == 200 and content_type.startswith("text/plain")
    assert TOKEN not in text
    got = samples(text)
    assert got[("bridge_calls_started_total", ())] == 1
    assert got[("bridge_calls_ended_total", (("reason", "caller_hung_up"),))] == 1
    assert got[("bridge_model_connect_seconds_count", ())] == 1
    assert got[("bridge_preconnect_total", (("result", "hit"),))] == 1
    assert got[("bridge_stream_token_check_seconds_count", ())] == 1
    assert got[("bridge_turn_latency_seconds_count", ())] >= 1
    assert got[("bridge_calls_active", ())] == 0
    assert ("bridge_turn_latency_seconds_bucket", (("le", "+Inf"),)) in got
    assert got[("bridge_deltas_forwarded_total", ())] > 0
    assert ("process_cpu_seconds_total", ()) in got  # the standard process metrics
    assert ("bridge_store_pending_records", ()) in got


async def test_metrics_are_off_the_public_port_by_default_and_on_their_own_port() -> None:
    sim = RealtimeSimulator(script=["agent_reply"], api_key="sk-x")
    port_a, port_b = free_port(), free_port()
    async with (
        sim,
        LocalBridge(
            sim.url, env={"OPENAI_API_KEY": "sk-x", "BRIDGE_METRICS_PORT": str(port_a)}
        ) as a,
        LocalBridge(
            sim.url, env={"OPENAI_API_KEY": "sk-x", "BRIDGE_METRICS_PORT": str(port_b)}
        ) as _b,
    ):
        # Two apps in one process: separate registries, no "Duplicated timeseries".
        assert (await asyncio.to_thread(fetch, a.base_url + "/metrics"))[0] == 404
        assert (await asyncio.to_thread(fetch, a.base_url + "/metrics", TOKEN))[0] == 404
        a.services.metrics.reject("capacity")
        status, _, text_a = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port_a}/metrics")
        _, _, text_b = await asyncio.to_thread(fetch, f"http://127.0.0.1:{port_b}/metrics")
    assert status == 200
    key = ("bridge_calls_rejected_total", (("reason", "capacity"),))
    assert samples(text_a)[key] == 1
    assert key not in samples(text_b)


async def test_json_log_lines_carry_the_call_ids_into_spawned_tasks() -> None:
    formatter, ids = JsonFormatter(), CallIdFilter()

    def line(message: str) -> dict[str, object]:
        record = logging.LogRecord("bridge.call", logging.INFO, __file__, 1, message, (), None)
        ids.filter(record)
        return dict(json.loads(formatter.format(record)))

    async def one_call(n: str) -> tuple[dict[str, object], dict[str, object]]:
        call_log_context()
        before = line("stream accepted")
        bind_call("CA" + n * 32, "MZ" + n * 32)
        # A task spawned after start (model reader, tool) logs with the same ids.
        return before, await asyncio.create_task(asyncio.to_thread(line, "in a task"))

    (b1, t1), (b2, t2) = await asyncio.gather(one_call("5"), one_call("6"))
    assert b1["call_sid"] is None and b2["call_sid"] is None
    assert t1["call_sid"] == "CA" + "5" * 32 and t1["stream_sid"] == "MZ" + "5" * 32
    assert t2["call_sid"] == "CA" + "6" * 32
