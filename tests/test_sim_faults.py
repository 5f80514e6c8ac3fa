"""The Realtime simulator's fault plan, over real sockets with the bridge's own connector.

Reconnect logic is tested against these faults, so each one must look on the wire the
way the live API's does: refused handshakes with the API's status and error body, the
session cap's ``error`` event and 1001 close, closes at a time or after N responses, and
``error`` events, each limited to chosen connections.
"""

from __future__ import annotations

import asyncio
import base64
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.config import Secret
from bridge.devtools.sim.realtime_faults import ErrorFault, FaultPlan, parse_fault_args
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.realtime.connection import ModelConnectError, ModelEndpoint
from bridge.realtime.dialects import dialect_for
from bridge.realtime.failures import Action, classify_close, classify_error_event
from tests.test_sim_realtime import PCMU_SESSION, SILENCE

pytestmark = pytest.mark.e2e

KEY = "sk-faults-test-key"


def endpoint(url: str, key: str = KEY) -> ModelEndpoint:
    return ModelEndpoint(url=url, model="gpt-realtime", dialect=dialect_for("ga"),
                         api_key=Secret(key), open_timeout_s=3.0)


async def events_until_closed(ws: ClientConnection, timeout: float = 5.0) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    with pytest.raises(ConnectionClosed):
        while True:
            events.append(json.loads(await asyncio.wait_for(ws.recv(), timeout)))
    return events


@pytest.mark.parametrize(
    ("kind", "status", "code", "action"),
    [
        ("unavailable", 503, None, Action.BACKOFF),
        ("server_error", 500, None, Action.BACKOFF),
        ("rate_limit", 429, "rate_limit_exceeded", Action.BACKOFF),
        ("quota", 429, "insufficient_quota", Action.FATAL),
        ("bad_key", 401, "invalid_api_key", Action.FATAL),
    ],
)
async def test_refused_handshakes_have_the_api_status_and_body(
    kind: str, status: int, code: str | None, action: Action
) -> None:
    plan = FaultPlan()
    plan.refuse(2, kind)  # type: ignore[arg-type]
    async with RealtimeSimulator(api_key=KEY, faults=plan) as sim:
        for _ in range(2):
            with pytest.raises(ModelConnectError) as info:
                await endpoint(sim.url).open()
            err = info.value
            assert err.status == status
            assert err.body["error"]["code"] == code
            assert set(err.body["error"]) == {"message", "type", "param", "code"}
            assert err.verdict.action is action
            assert KEY not in str(err)
        # The third connects: the refusal was for the next N only.
        ws = await endpoint(sim.url).open()
        await ws.close()
        assert sim.handshakes == 3 and sim.connection_count == 1
        assert [s for _, s in sim.rejected_handshakes] == [status, status]


async def test_real_bad_key_is_refused_in_the_same_shape() -> None:
    async with RealtimeSimulator(api_key=KEY) as sim:
        with pytest.raises(ModelConnectError) as info:
            await endpoint(sim.url, key="sk-not-the-key").open()
    assert info.value.status == 401 and info.value.verdict.reason == "bad_api_key"
    assert "sk-not-the-key" not in json.dumps(info.value.body)


async def test_session_cap_sends_the_api_error_then_closes_1001_with_its_message() -> None:
    async with RealtimeSimulator(faults=FaultPlan(max_session_ms=150)) as sim:
        ws = await endpoint(sim.url).open()
        events = await events_until_closed(ws)
    error = events[-1]
    assert error["type"] == "error"
    assert error["error"]["type"] == "invalid_request_error"
    assert error["error"]["code"] == "session_expired"
    message = "Your session hit the maximum duration of 60 minutes."
    assert error["error"]["message"] == message
    assert (ws.close_code, ws.close_reason) == (1001, message)
    record = sim.last_connection
    assert record.closed_by == "server" and record.closed_at is not None
    assert 0.1 <= record.closed_at - record.opened_at < 2.0
    assert classify_close(ws.close_code, ws.close_reason or "").action is Action.RETRY_NOW
    assert classify_error_event(error).reason == "session_expired"


async def test_close_at_a_time_only_on_chosen_connections() -> None:
    plan = FaultPlan(close_after_ms=100, close_code=1011, close_reason="boom", connections={1})
    async with RealtimeSimulator(faults=plan) as sim:
        first = await endpoint(sim.url).open()
        await events_until_closed(first)
        assert (first.close_code, first.close_reason) == (1011, "boom")
        second = await endpoint(sim.url).open()
        await asyncio.sleep(0.4)
        assert sim.connections[1].is_open  # connection 2 is not in the plan
        await second.close()


async def test_close_after_the_nth_response() -> None:
    plan = FaultPlan(close_after_responses=2, close_code=1012, close_reason="restart")
    async with RealtimeSimulator(["agent_short"], faults=plan, first_delta_latency_ms=0,
                                 chunk_interval_ms=1) as sim:
        ws = await endpoint(sim.url).open()
        await ws.send(json.dumps({"type": "session.update", "session": PCMU_SESSION}))
        for _ in range(2):
            await ws.send(json.dumps({"type": "response.create"}))
            await sim.wait_for(lambda: any(
                r.status != "in_progress" for r in sim.last_connection.responses[-1:]))
        events = await events_until_closed(ws)
    assert ws.close_code == 1012
    done = [e for e in events if e["type"] == "response.done"]
    assert len(done) == 2 and events[-1]["type"] == "response.done"


async def test_error_event_at_a_time_optionally_closing() -> None:
    plan = FaultPlan(errors=[
        ErrorFault(after_ms=50, type="server_error", code="server_error"),
        ErrorFault(after_ms=150, type="invalid_request_error", code="insufficient_quota",
                   message="You exceeded your current quota.", close_code=1011),
    ])
    async with RealtimeSimulator(faults=plan) as sim:
        ws = await endpoint(sim.url).open()
        events = await events_until_closed(ws)
        assert sim.last_connection.closed_by == "server"
    errors = [e["error"] for e in events if e["type"] == "error"]
    assert [e["code"] for e in errors] == ["server_error", "insufficient_quota"]
    assert ws.close_code == 1011


async def test_each_connection_keeps_its_session_updates_and_created_items() -> None:
    async with RealtimeSimulator(record_events=False) as sim:
        for n in range(2):
            ws = await endpoint(sim.url).open()
            await ws.send(json.dumps({"type": "session.update", "session": PCMU_SESSION}))
            await ws.send(json.dumps({"type": "conversation.item.create", "item": {
                "type": "message", "role": "user",
                "content": [{"type": "input_text", "text": f"turn {n}"}]}}))
            await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                      "audio": base64.b64encode(SILENCE).decode()}))
            await sim.wait_for(lambda n=n: len(sim.connections[n].items_created) == 1)
            await ws.close()
    assert sim.connection_count == 2
    first, second = sim.connections
    assert first.session_updates[0]["session"] == second.session_updates[0]["session"]
    assert second.items_created[0]["item"]["content"][0]["text"] == "turn 1"
    assert first.received == []  # record_events=False keeps only these two lists


def test_cli_style_fault_arguments() -> None:
    plan = parse_fault_args(refuse="3:quota", error_at=["1500:server_error"],
                            connections="1,3", max_session_ms=1000)
    assert plan.refuse_next == 3 and plan.refuse_kind == "quota"
    assert plan.errors[0].after_ms == 1500 and plan.errors[0].code == "server_error"
    assert plan.applies_to(3) and not plan.applies_to(2)
    with pytest.raises(ValueError):
        parse_fault_args(refuse="1:teapot")
    with pytest.raises(ValueError):
        FaultPlan(close_after_ms=-1)
