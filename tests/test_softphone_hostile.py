"""No malformed frame ends a softphone call either, in either wire encoding.

The browser leg is a caller leg like Twilio's, and its socket is reachable by anyone
holding a session cookie and a ticket, so it gets the same barrage as
``tests/test_hostile_frames.py`` (the same seeded generator), over a real socket, in a
started call.  The call must then still hear its agent answer a spoken question, and
the Realtime simulator must have received only well-formed client events.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from base64 import b64encode
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from bridge.audio.transcoder import Pcm16Transcoder
from bridge.devtools.sim.clips import clip_text, load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.operator.access import COOKIE_NAME
from bridge.operator.softphone import ENCODINGS
from tests.test_hostile_frames import assert_model_got_only_valid_events, hostile_frames

pytestmark = pytest.mark.e2e

API_KEY = "sk-softphone-hostile"
FRAMES = 1500
FRAME_MS = 20


def _page_audio(ulaw: bytes, encoding: str) -> list[str]:
    """The clip as the page would send it: 20 ms payloads in the negotiated encoding."""
    step = 8 * FRAME_MS
    chunks = [ulaw[i : i + step] for i in range(0, len(ulaw), step)]
    if encoding == "pcm16":
        up = Pcm16Transcoder()
        return [b64encode(up.to_model(chunk)).decode() for chunk in chunks]
    return [b64encode(chunk).decode() for chunk in chunks]


@pytest.mark.parametrize("encoding", ["mulaw", "pcm16"])
async def test_hostile_frames_never_end_a_softphone_call(encoding: str) -> None:
    token = secrets.token_urlsafe(24)
    env = {
        "OPENAI_API_KEY": API_KEY,
        "BRIDGE_OPERATOR_TOKEN": token,
        "BRIDGE_SOFTPHONE_AUDIO": encoding,
        "BRIDGE_MAX_MESSAGE_BYTES": "65536",
        "AGENT_GREETING": "Hello from the browser test.",
    }
    subprotocol, media_format = ENCODINGS[encoding]
    sim = RealtimeSimulator(script=["agent_short", "agent_reply"], api_key=API_KEY)
    async with sim, LocalBridge(sim.url, env=env) as bridge:
        async with httpx.AsyncClient(base_url=bridge.base_url) as client:
            await client.post("/login", data={"token": token})
            grant = (await client.post("/softphone/ticket")).json()
            cookie = {"Cookie": f"{COOKIE_NAME}={client.cookies[COOKIE_NAME]}"}
        url = f"ws://127.0.0.1:{bridge.port}/softphone/ws?ticket={grant['ticket']}"
        stream_sid = "MZ" + secrets.token_hex(16)
        agent_lines: list[str] = []
        async with connect(url, additional_headers=cookie, max_size=None,
                           subprotocols=[subprotocol]) as ws:  # type: ignore[list-item]
            assert ws.subprotocol == subprotocol
            await ws.send(json.dumps({"event": "connected", "protocol": "Call"}))
            await ws.send(json.dumps({
                "event": "start", "sequenceNumber": "1", "streamSid": stream_sid,
                "start": {"streamSid": stream_sid, "callSid": grant["call_id"],
                          "accountSid": "browser", "tracks": ["inbound"],
                          "mediaFormat": media_format,
                          "customParameters": {**grant["parameters"], "From": "browser"}},
            }))
            reader = asyncio.create_task(_play_like_the_page(ws, stream_sid, agent_lines))
            await sim.wait_for(lambda: len(agent_lines) >= 1, timeout=15)  # the greeting

            for i, frame in enumerate(hostile_frames(29, FRAMES)):
                await ws.send(frame)
                if i % 50 == 0:
                    await asyncio.sleep(0)
                assert ws.close_code is None, (i, frame[:200], ws.close_code, ws.close_reason)

            # Still a live call: a spoken question after the barrage gets its answer.
            question = load_clip("caller_question") + b"\xff" * 8 * 1500  # then silence
            for seq, payload in enumerate(_page_audio(question, encoding), start=2):
                await ws.send(json.dumps({
                    "event": "media", "sequenceNumber": str(seq), "streamSid": stream_sid,
                    "media": {"track": "inbound", "payload": payload}}))
            await sim.wait_for(lambda: len(agent_lines) >= 2, timeout=20)  # the answer
            await ws.send(json.dumps({"event": "stop", "streamSid": stream_sid}))
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader
        await sim.wait_for(lambda: not bridge.services.active, timeout=5)
        bad_frames = bridge.services.metrics.value("bridge_bad_frames_total")
    assert agent_lines[1] == clip_text("agent_reply")
    assert sim.connection_count == 1  # one model session throughout: nothing reconnected
    assert assert_model_got_only_valid_events(sim.connections[0]) > 50
    assert bad_frames >= FRAMES // 2


async def _play_like_the_page(
    ws: ClientConnection, stream_sid: str, agent_lines: list[str]
) -> None:
    """Echo each mark at once (nothing is really played) and collect agent lines."""
    async for raw in ws:
        frame: dict[str, Any] = json.loads(raw)
        if frame.get("event") == "mark":
            await ws.send(json.dumps(
                {"event": "mark", "streamSid": stream_sid, "mark": frame["mark"]}))
        elif frame.get("event") == "transcript" and frame["transcript"]["speaker"] == "agent":
            agent_lines.append(frame["transcript"]["text"])

