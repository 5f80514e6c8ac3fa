"""Tools, call control, agent routing and call records, over real sockets end to end."""

from __future__ import annotations

import asyncio
import io
import json
import time
from pathlib import Path
from typing import Any

import pytest

from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.sim.twilio_rest import TwilioRestSimulator
from bridge.store.cli import main as calls_cli

pytestmark = pytest.mark.e2e

API_KEY = "sk-agent-e2e-key"


def fc(name: str, arguments: Any) -> dict[str, Any]:
    args = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return {"function_call": {"name": name, "arguments": args}}


def tool_outputs(sim: RealtimeSimulator) -> list[str]:
    return [
        e["item"]["output"]
        for e in sim.last_connection.received_events("conversation.item.create")
        if e["item"].get("type") == "function_call_output"
    ]


async def run_tool_call(
    tool_entry: str, script: list[Any], hangup_at_ms: int = 7500, **env: str
) -> tuple[Any, Any]:
    sim = RealtimeSimulator(script=script, api_key=API_KEY)
    async with (
        sim,
        LocalBridge(
            sim.url,
            env={
                "OPENAI_API_KEY": API_KEY,
                "AGENT_TOOLS": f"hang_up,{tool_entry}",
                **env,
            },
        ) as bridge,
    ):
        caller = await bridge.place_call(
            script=[(200, "caller_question")], hangup_at_ms=hangup_at_ms
        )
        result = await caller.run()
    return sim, result


async def test_tool_round_trip_and_the_agent_speaks_the_answer() -> None:
    sim, result = await run_tool_call(
        "tests.example_tools:lookup_order",
        [fc("lookup_order", {"order_id": "A100"}), "agent_short"],
    )
    assert [json.loads(o) for o in tool_outputs(sim)] == [{"order_id": "A100", "status": "shipped"}]
    tools = sim.last_connection.received_events("session.update")[0]["session"]["tools"]
    assert {t["name"] for t in tools} == {"hang_up", "lookup_order"}
    assert load_clip("agent_short") in result.heard


async def test_failing_tools_become_outputs_the_model_can_speak_about() -> None:
    script = [
        fc("flaky_lookup", {"order_id": "A1"}),
        fc("stuck_lookup", {"order_id": "A1"}),
        fc("flaky_lookup", "{not json"),
        fc("no_such_tool", {}),
        "agent_short",
    ]
    sim, result = await run_tool_call(
        "tests.agent_tools:flaky_lookup,tests.agent_tools:stuck_lookup", script
    )
    outputs = [json.loads(o)["error"] for o in tool_outputs(sim)]
    assert len(outputs) == 4
    assert "failed unexpectedly (RuntimeError)" in outputs[0]
    assert "orders-db.internal" not in outputs[0]  # internals stay in the logs
    assert "timed out after 0.3 s" in outputs[1]
    assert "not valid JSON" in outputs[2]
    assert "no tool named 'no_such_tool'" in outputs[3]
    # The call was never dropped: the agent's final words were heard.
    assert load_clip("agent_short") in result.heard
    assert result.closed_by == "caller"


async def test_slow_tool_gets_a_filler_line_and_no_response_collision() -> None:
    script = [fc("slow_lookup", {"order_id": "A1"}), "agent_short", "agent_goodbye"]
    sim, result = await run_tool_call(
        "tests.agent_tools:slow_lookup", script, 10500, TOOL_FILLER_AFTER_MS="400"
    )
    conn = sim.last_connection
    received = [
        (r.event["type"], r.event)
        for r in conn.received
        if r.event["type"] in ("response.create", "conversation.item.create")
    ]
    kinds = [k for k, _ in received]
    # filler response first, then the tool output, then the response that speaks it.
    assert kinds == ["response.create", "conversation.item.create", "response.create"]
    assert "still working" in received[0][1]["response"]["instructions"]
    errors = [e["error"]["code"] for e in conn.sent_events("error")]
    assert "conversation_already_has_active_response" not in errors
    assert load_clip("agent_short") in result.heard
    assert load_clip("agent_goodbye") in result.heard


async def test_tool_result_during_a_caller_turn_waits_for_the_active_response() -> None:
    """The caller talks while a tool runs: the VAD response and ours must not collide."""
    sim = RealtimeSimulator(
        script=[fc("very_slow_lookup", {"order_id": "A1"}), "agent_short", "agent_goodbye"],
        api_key=API_KEY,
    )
    async with (
        sim,
        LocalBridge(
            sim.url,
            env={
                "OPENAI_API_KEY": API_KEY,
                "AGENT_TOOLS": "tests.agent_tools:very_slow_lookup",
                "TOOL_FILLER_AFTER_MS": "0",
            },
        ) as bridge,
    ):
        caller = await bridge.place_call(
            script=[(200, "caller_question"), (3000, "caller_interrupt")], hangup_at_ms=13000
        )
        result = await caller.run()
    conn = sim.last_connection
    errors = [e["error"]["code"] for e in conn.sent_events("error")]
    assert "conversation_already_has_active_response" not in errors
    statuses = [(r.trigger, r.status) for r in conn.responses]
    # The tool call, the VAD response to the caller's turn, then the one speaking the result.
    assert statuses == [("vad", "completed"), ("vad", "completed"), ("client", "completed")]
    kinds = [
        r.event["type"]
        for r in conn.received
        if r.event["type"] in ("response.create", "conversation.item.create")
    ]
    assert kinds == ["conversation.item.create", "response.create"]
    assert load_clip("agent_goodbye") in result.heard


async def call_through_twilio_rest(
    sim: RealtimeSimulator, *, duration_ms: int, **env: str
) -> tuple[Any, list[Any], list[float]]:
    """One call whose hang-up/transfer goes to the Twilio REST stand-in.

    Like Twilio, the stand-in ends the Media Stream once the call is updated. Returns
    the caller's result, the REST updates of the call and when each arrived."""
    token = "f" * 32
    call_sid = "CA" + "7" * 32
    updated_at: list[float] = []
    async with sim, TwilioRestSimulator(auth_token=token) as rest:
        async with LocalBridge(
            sim.url,
            auth_token=token,
            env={
                "OPENAI_API_KEY": API_KEY,
                "TWILIO_ACCOUNT_SID": rest.account_sid,
                "TWILIO_API_BASE_URL": rest.base_url,
                **env,
            },
        ) as bridge:
            rest.add_call(call_sid, to="+15559990000", from_="+15550001111")
            caller = await bridge.place_call(
                call_sid=call_sid, script=[(200, "caller_question")], duration_ms=duration_ms
            )

            def on_update(sid: str, form: dict[str, str]) -> None:
                updated_at.append(time.monotonic())
                asyncio.get_running_loop().call_soon(lambda: asyncio.ensure_future(caller.hangup()))

            rest.on_call_update = on_update
            result = await caller.run()
        updates = [r for r in rest.requests if r.method == "POST" and call_sid in r.path]
    return result, updates, updated_at


async def test_hang_up_waits_for_the_goodbye_to_play_then_uses_the_rest_api() -> None:
    sim = RealtimeSimulator(
        script=[["agent_goodbye", fc("hang_up", {"reason": "caller is done"})]], api_key=API_KEY
    )
    result, updates, updated_at = await call_through_twilio_rest(sim, duration_ms=15000)
    assert [u.form.get("Status") for u in updates] == ["completed"]
    goodbye = load_clip("agent_goodbye")
    assert goodbye in result.heard
    last_mark = max(
        (m for m in result.marks if m.echoed_ms is not None and not m.cleared),
        key=lambda m: m.echoed_ms or 0,
    )
    assert result.t0 is not None and last_mark.echoed_ms is not None
    # The REST hang-up came only after the goodbye's last mark had echoed.
    assert updated_at[0] >= result.t0 + last_mark.echoed_ms / 1000


async def test_transfer_only_to_allowed_numbers() -> None:
    sim = RealtimeSimulator(
        script=[
            fc("transfer_call", {"to": "+19005550123"}),
            ["agent_short", fc("transfer_call", {"to": "+15550009999"})],
        ],
        api_key=API_KEY,
    )
    result, updates, _ = await call_through_twilio_rest(
        sim, duration_ms=9000, TRANSFER_NUMBERS="+15550009999"
    )
    refusal, _accepted = tool_outputs(sim)
    assert "not" in json.loads(refusal)["error"].lower() and "+15550009999" in refusal
    assert len(updates) == 1
    assert "<Dial" in updates[0].form["Twiml"] and "+15550009999" in updates[0].form["Twiml"]
    assert "+19005550123" not in updates[0].form["Twiml"]
    assert load_clip("agent_short") in result.heard  # its words played before the transfer


async def test_calls_are_routed_to_agent_profiles_by_called_number(tmp_path: Path) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text(
        '[agents.front]\ninstructions = "You are the front desk."\n'
        '[agents.sales]\ninstructions = "You sell widgets."\nvoice = "cedar"\n'
        'tools = ["hang_up", "tests.example_tools:lookup_order"]\n'
        '[routes]\n"+15559990001" = "sales"\ndefault = "front"\n'
    )
    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    async with (
        sim,
        LocalBridge(
            sim.url,
            env={
                "OPENAI_API_KEY": API_KEY,
                "BRIDGE_AGENTS_FILE": str(agents),
            },
        ) as bridge,
    ):
        for to in ("+15559990001", "+15550000000"):
            caller = await bridge.place_call(to=to, duration_ms=600)
            await caller.run()
    sessions = [c.received_events("session.update")[0]["session"] for c in sim.connections]
    assert sessions[0]["instructions"] == "You sell widgets."
    assert sessions[0]["audio"]["output"]["voice"] == "cedar"
    assert {t["name"] for t in sessions[0]["tools"]} == {"hang_up", "lookup_order"}
    assert sessions[1]["instructions"] == "You are the front desk."
    # A profile without a tools key inherits the environment agent's default tools.
    assert {t["name"] for t in sessions[1]["tools"]} == {"hang_up"}


async def test_a_finished_call_has_its_record_transcript_and_usage(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'calls.db'}"
    sim = RealtimeSimulator(
        script=["agent_reply", "agent_short"],
        api_key=API_KEY,
        caller_transcripts=["What are your opening hours?", "What about Sundays?"],
    )
    async with (
        sim,
        LocalBridge(sim.url, env={"OPENAI_API_KEY": API_KEY, "DATABASE_URL": db}) as bridge,
    ):
        caller = await bridge.place_call(
            script=[(200, "caller_question"), (5000, "caller_interrupt")], hangup_at_ms=11500
        )
        result = await caller.run()
        form = {"CallSid": result.call_sid, "CallStatus": "completed", "CallDuration": "12"}
        status, _ = await bridge.post_webhook("/status", form)
        assert status == 204
    truncate = sim.truncations[0]
    out = io.StringIO()
    # The CLI runs its own event loop, as it does from the shell.
    assert await asyncio.to_thread(calls_cli, ["show", result.call_sid, "--json"], db, out) == 0
    record = json.loads(out.getvalue())
    text = json.dumps(record)
    assert result.call_sid in text and "caller_hung_up" in text and "completed" in text
    turns = record["turns"]
    speakers = [t["speaker"] for t in turns]
    assert speakers[:4] == ["caller", "agent", "caller", "agent"], speakers
    interrupted = turns[1]
    assert interrupted["interrupted"] is True
    heard_ms = interrupted["end_ms"] - interrupted["start_ms"]
    assert heard_ms == truncate.audio_end_ms
    full = "Our store is open from nine in the morning until six in the evening"
    assert full.startswith(interrupted["text"]) and 0 < len(interrupted["text"]) < len(full)
    assert turns[3]["interrupted"] is False
    # Usage and cost from response.done.
    assert "cost" in text.lower()
    human = io.StringIO()
    assert await asyncio.to_thread(calls_cli, ["show", result.call_sid], db, human) == 0
    assert "[interrupted]" in human.getvalue()
