"""The console's event streams (Server-Sent Events) for a Twilio call, without a browser."""

from __future__ import annotations

import secrets

import httpx
import pytest

from bridge.devtools.sim.clips import clip_text
from bridge.devtools.sim.demo import AGENT_SCRIPT, CALL_LIMIT_MS, CALLER_SCRIPT, GREETING
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from tests.sse import watch_one_call

pytestmark = pytest.mark.e2e


async def test_live_calls_and_one_calls_timeline_are_pushed(tmp_path) -> None:
    token = secrets.token_urlsafe(24)
    sim = RealtimeSimulator(
        script=AGENT_SCRIPT, api_key="sk-sse",
        caller_transcripts=[clip_text(c) for _, c in CALLER_SCRIPT],
    )
    env = {"OPENAI_API_KEY": "sk-sse", "AGENT_GREETING": GREETING,
           "BRIDGE_OPERATOR_TOKEN": token}
    async with sim, LocalBridge(sim.url, env=env) as bridge:
        async with httpx.AsyncClient(base_url=bridge.base_url, timeout=60) as client:
            await client.post("/login", data={"token": token})
            watched = await watch_one_call(client, lambda: bridge.place_call(
                script=CALLER_SCRIPT, duration_ms=CALL_LIMIT_MS))
    assert watched.content_type.startswith("text/event-stream")
    call_id, calls, timeline, result = (
        watched.call_id, watched.calls, watched.timeline, watched.result)
    assert calls[0] == {"type": "snapshot", "calls": []}
    started = calls[1]["call"]
    assert started["leg"] == "twilio" and started["caller"] == "+15550001111"
    assert started["agent"] == "default" and started["state"] == "live"
    assert calls[-1]["call"]["state"] == "ended"
    assert calls[-1]["call"]["end_reason"] == "agent_hung_up"
    assert timeline[0]["type"] == "snapshot" and timeline[0]["call"]["call_id"] == call_id
    events = timeline[0]["timeline"] + timeline[1:]
    kinds = [e.get("kind") for e in events if e["type"] == "observed"]
    for kind in ("agent_audio", "speech_started", "speech_stopped", "clear", "barge_in",
                 "turn_latency", "tool_call", "tool_result", "ended"):
        assert kind in kinds, kind
    barge = next(e for e in events if e.get("kind") == "barge_in")
    assert barge["data"]["heard_ms"] == sim.truncations[0].audio_end_ms
    said = [e["text"] for e in events if e["type"] == "transcript"]
    assert GREETING in said and clip_text("caller_question") in said
    assert len(result.clears) == 1
