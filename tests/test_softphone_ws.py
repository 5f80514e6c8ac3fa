"""The softphone's WebSocket leg at the protocol level (no browser): a client speaking
Media Streams JSON as the page does, through the real bridge, to the Realtime simulator.

Covers what the page relies on: the ticket exchange, the stream token in the ticket
response passing the bridge's unchanged ``start`` check, the agent profile and voice
chosen by ``customParameters``, Twilio's ``media``/``mark`` playback messages, and the
extra ``transcript``/``observed`` frames only this leg gets.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect

from bridge.devtools.sim.clips import clip_text
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.operator.access import COOKIE_NAME

pytestmark = pytest.mark.e2e

AGENTS = """
[routes]
default = "front"

[agents.front]
greeting = "Front desk here."
instructions = "You are the front desk."

[agents.back]
voice = "ash"
greeting = "Back office here."
instructions = "You are the back office."
"""


async def test_agent_and_voice_by_parameter_and_the_extra_frames(tmp_path: Path) -> None:
    agents = tmp_path / "agents.toml"
    agents.write_text(AGENTS)
    token = secrets.token_urlsafe(24)
    env = {
        "OPENAI_API_KEY": "sk-ws",
        "BRIDGE_OPERATOR_TOKEN": token,
        "BRIDGE_AGENTS_FILE": str(agents),
    }
    async with RealtimeSimulator(script=["agent_short"], api_key="sk-ws") as sim:
        async with LocalBridge(sim.url, env=env) as bridge:
            async with httpx.AsyncClient(base_url=bridge.base_url) as client:
                await client.post("/login", data={"token": token})
                config = (await client.get("/softphone/config")).json()
                assert config["agents"] == ["back", "front"]
                grant = (await client.post("/softphone/ticket")).json()
                cookie = client.cookies[COOKIE_NAME]
            url = f"ws://127.0.0.1:{bridge.port}/softphone/ws?ticket={grant['ticket']}"
            stream_sid = "MZ" + secrets.token_hex(16)
            frames: list[dict] = []
            async with connect(url, additional_headers={"Cookie": f"{COOKIE_NAME}={cookie}"}) as ws:
                await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
                await ws.send(json.dumps({
                    "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                    "start": {
                        "streamSid": stream_sid, "callSid": grant["call_id"],
                        "accountSid": "browser", "tracks": ["inbound"],
                        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000,
                                        "channels": 1},
                        "customParameters": {**grant["parameters"], "agent": "back",
                                             "voice": "verse", "From": "browser"},
                    },
                }))

                async def read_until_greeting_heard() -> None:
                    while True:
                        frame = json.loads(await ws.recv())
                        frames.append(frame)
                        if frame["event"] == "mark":  # nothing buffered here: echo at once
                            await ws.send(json.dumps(
                                {"event": "mark", "streamSid": stream_sid, "mark": frame["mark"]}
                            ))
                        if frame["event"] == "transcript":
                            return

                await asyncio.wait_for(read_until_greeting_heard(), 15)
                await ws.send(json.dumps({"event": "stop", "streamSid": stream_sid}))
            session = sim.last_connection.effective_session
            asked = json.dumps(sim.last_connection.received_events("response.create"))
    kinds = [f["event"] for f in frames]
    assert "media" in kinds and "mark" in kinds
    assert all(f.get("streamSid") == stream_sid for f in frames if f["event"] == "media")
    observed = [f["observed"]["kind"] for f in frames if f["event"] == "observed"]
    assert "agent_audio" in observed
    line = next(f["transcript"] for f in frames if f["event"] == "transcript")
    assert line["speaker"] == "agent" and line["text"] == clip_text("agent_short")
    assert "Back office here." in asked  # the chosen profile's greeting was asked for
    # The profile came from customParameters.agent, the voice override from .voice.
    assert session is not None
    text = json.dumps(session)
    assert "You are the back office." in text and '"verse"' in text and '"ash"' not in text
