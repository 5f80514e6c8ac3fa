"""The Realtime simulator speaks the real wire protocol over a real socket.

Every test drives it with a plain ``websockets`` client on 127.0.0.1, as the bridge will.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.devtools.sim.clips import clip_duration_ms, clip_text, load_clip
from bridge.devtools.sim.realtime_server import RealtimeSimulator, ReplySpec

pytestmark = pytest.mark.e2e

SILENCE = b"\xff" * 8  # 1 ms of mu-law digital silence
PCMU_SESSION: dict[str, Any] = {
    "type": "realtime",
    "model": "gpt-realtime",
    "output_modalities": ["audio"],
    "instructions": "Be brief.",
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            "transcription": {"model": "gpt-4o-transcribe"},
            "turn_detection": {
                "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
                "silence_duration_ms": 500, "create_response": True,
                "interrupt_response": True,
            },
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
}


class Client:
    """A minimal Realtime client: send events, read until a type shows up."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.events: list[dict[str, Any]] = []

    async def send(self, type_: str, **fields: Any) -> None:
        await self.ws.send(json.dumps({"type": type_, **fields}))

    async def recv(self, timeout: float = 3.0) -> dict[str, Any]:
        event = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.events.append(event)
        return event

    async def until(self, type_: str, timeout: float = 3.0) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            event = await self.recv(max(0.01, deadline - loop.time()))
            if event["type"] == type_:
                return event

    def types(self) -> list[str]:
        return [e["type"] for e in self.events]

    async def append(self, ulaw: bytes, frame: int = 160) -> None:
        """Append mu-law audio in 20 ms frames, as the bridge forwards Twilio media."""
        for i in range(0, len(ulaw), frame):
            chunk = base64.b64encode(ulaw[i:i + frame]).decode()
            await self.send("input_audio_buffer.append", audio=chunk)

    async def configure(self, session: dict[str, Any] | None = None) -> dict[str, Any]:
        await self.until("session.created")
        await self.send("session.update", session=session or PCMU_SESSION)
        return await self.until("session.updated")


@pytest.fixture
async def sim() -> AsyncIterator[RealtimeSimulator]:
    async with RealtimeSimulator(
        ["agent_short"], first_delta_latency_ms=10, chunk_interval_ms=5,
        caller_transcripts=["Hi, what are your opening hours?"],
    ) as s:
        yield s


async def open_client(sim: RealtimeSimulator, **kw: Any) -> Client:
    ws = await connect(sim.url + "?model=gpt-realtime", **kw)
    return Client(ws)


# ---------------------------------------------------------------- sessions


async def test_ga_session_round_trip(sim: RealtimeSimulator) -> None:
    c = await open_client(sim)
    created = await c.until("session.created")
    s = created["session"]
    assert s["type"] == "realtime" and s["object"] == "realtime.session"
    assert s["audio"]["input"]["format"] == {"type": "audio/pcm", "rate": 24000}

    await c.send("session.update", session=PCMU_SESSION)
    updated = (await c.until("session.updated"))["session"]
    assert updated["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert updated["audio"]["output"] == {"format": {"type": "audio/pcmu"}, "voice": "marin",
                                          "speed": 1.0}
    assert updated["audio"]["input"]["turn_detection"]["interrupt_response"] is True
    assert updated["instructions"] == "Be brief."

    # partial update: only instructions change
    await c.send("session.update", session={"type": "realtime", "instructions": "Be kind."})
    updated = (await c.until("session.updated"))["session"]
    assert updated["instructions"] == "Be kind."
    assert updated["audio"]["output"]["voice"] == "marin"
    assert updated["audio"]["input"]["format"] == {"type": "audio/pcmu"}

    # GA requires session.type; beta-shaped fields are unknown parameters
    await c.send("session.update", event_id="ev1", session={"instructions": "x"})
    err = (await c.until("error"))["error"]
    assert err == {"type": "invalid_request_error", "code": "missing_required_parameter",
                   "message": "Missing required parameter: 'session.type'.",
                   "param": "session.type", "event_id": "ev1"}
    await c.send("session.update",
                 session={"type": "realtime", "input_audio_format": "g711_ulaw"})
    err = (await c.until("error"))["error"]
    assert (err["code"], err["param"]) == ("unknown_parameter", "session.input_audio_format")
    await c.send("session.update", session={"type": "realtime", "audio": {
        "input": {"format": {"type": "audio/pcm", "rate": 16000}}}})
    err = (await c.until("error"))["error"]
    assert (err["code"], err["param"]) == ("invalid_value", "session.audio.input.format.rate")

    ids = [e["event_id"] for e in c.events]
    assert len(ids) == len(set(ids))
    rec = sim.last_connection
    assert rec.dialect == "ga" and rec.model == "gpt-realtime" and rec.path == "/v1/realtime"
    assert rec.session is not None and rec.session.input_format == "pcmu"
    await c.ws.close()


async def test_beta_dialect_names_and_shape() -> None:
    async with RealtimeSimulator(["agent_short"], first_delta_latency_ms=0,
                                 chunk_interval_ms=1) as sim:
        c = Client(await connect(sim.url, additional_headers={"OpenAI-Beta": "realtime=v1"}))
        s = (await c.until("session.created"))["session"]
        assert "type" not in s and s["input_audio_format"] == "pcm16"
        await c.send("session.update", session={
            "modalities": ["text", "audio"], "voice": "alloy",
            "input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw",
            "turn_detection": {"type": "server_vad", "silence_duration_ms": 400},
            "input_audio_transcription": {"model": "whisper-1"},
        })
        s = (await c.until("session.updated"))["session"]
        assert s["input_audio_format"] == "g711_ulaw" and s["output_audio_format"] == "g711_ulaw"
        assert s["turn_detection"]["silence_duration_ms"] == 400
        assert s["turn_detection"]["prefix_padding_ms"] == 300  # defaults filled in
        assert s["modalities"] == ["text", "audio"]
        await c.send("session.update", session={"type": "realtime"})
        assert (await c.until("error"))["error"]["code"] == "unknown_parameter"

        await c.send("response.create")
        done = await c.until("response.done", timeout=5)
        types = c.types()
        assert "response.audio.delta" in types and "response.audio_transcript.done" in types
        assert "conversation.item.created" in types
        assert not any(t.startswith("response.output_audio") for t in types)
        assert "conversation.item.added" not in types
        item = done["response"]["output"][0]
        assert item["content"] == [{"type": "audio", "transcript": clip_text("agent_short")}]
        assert sim.last_connection.dialect == "beta"
        await c.ws.close()


async def test_reject_beta_like_todays_service() -> None:
    async with RealtimeSimulator(reject_beta=True) as sim:
        ws = await connect(sim.url, additional_headers={"OpenAI-Beta": "realtime=v1"})
        event = json.loads(await ws.recv())
        assert event["type"] == "error"
        assert event["error"]["code"] == "beta_api_shape_disabled"
        with pytest.raises(ConnectionClosed) as info:
            await ws.recv()
        assert info.value.rcvd is not None and info.value.rcvd.code == 4000


async def test_auth_required_and_redacted() -> None:
    async with RealtimeSimulator(api_key="sk-test-secret") as sim:
        with pytest.raises(InvalidStatus) as info:
            await connect(sim.url, additional_headers={"Authorization": "Bearer nope"})
        assert info.value.response.status_code == 401
        assert b"sk-test-secret" not in (info.value.response.body or b"")
        with pytest.raises(InvalidStatus):
            await connect(sim.url)  # no header at all
        with pytest.raises(InvalidStatus):  # api-key header is the Azure form only
            await connect(sim.url, additional_headers={"api-key": "sk-test-secret"})

        ok = Client(await connect(sim.url + "?model=m1",
                                  additional_headers={"Authorization": "Bearer sk-test-secret"}))
        await ok.until("session.created")
        azure = Client(await connect(sim.azure_url + "?model=dep1",
                                     additional_headers={"api-key": "sk-test-secret"}))
        await azure.until("session.created")
        first, second = sim.connections
        assert first.headers["authorization"] == "<redacted>"
        assert second.azure and second.model == "dep1" and second.headers["api-key"] == "<redacted>"
        assert "sk-test-secret" not in repr(sim.connections)
        assert [code for _, code in sim.rejected_handshakes] == [401, 401, 401]
        await ok.ws.close()
        await azure.ws.close()
        await sim.wait_for(lambda: sim.open_connections == 0)


async def test_unknown_and_malformed_events(sim: RealtimeSimulator) -> None:
    c = await open_client(sim)
    await c.until("session.created")
    await c.send("no.such.event", event_id="evt_42")
    err = (await c.until("error"))["error"]
    assert err["type"] == "invalid_request_error" and err["code"] == "invalid_value"
    assert err["param"] == "type" and err["event_id"] == "evt_42"
    await c.ws.send("this is not json")
    err = (await c.until("error"))["error"]
    assert err["type"] == "invalid_request_error" and err["event_id"] is None
    await c.ws.close()


# ---------------------------------------------------------------- VAD


async def test_vad_offsets_commit_transcript_and_response(sim: RealtimeSimulator) -> None:
    c = await open_client(sim)
    await c.configure()
    caller = load_clip("caller_question")
    await c.append(SILENCE * 1000 + caller + SILENCE * 1000)
    started = await c.until("input_audio_buffer.speech_started")
    assert abs(started["audio_start_ms"] - (1000 - 300)) <= 40
    stopped = await c.until("input_audio_buffer.speech_stopped")
    speech_end = 1000 + clip_duration_ms("caller_question")
    # end of speech (the clip ends with ~300 ms of fade and room tone) + silence_duration_ms
    assert speech_end - 400 + 500 <= stopped["audio_end_ms"] <= speech_end + 500
    assert stopped["item_id"] == started["item_id"]
    committed = await c.until("input_audio_buffer.committed")
    assert committed["item_id"] == started["item_id"]
    assert committed["previous_item_id"] is None
    added = await c.until("conversation.item.added")
    assert added["item"]["role"] == "user" and added["item"]["id"] == started["item_id"]
    await c.until("conversation.item.done")
    tr = await c.until("conversation.item.input_audio_transcription.completed")
    assert tr["item_id"] == started["item_id"] and tr["content_index"] == 0
    assert tr["transcript"] == "Hi, what are your opening hours?"
    created = await c.until("response.created")
    assert created["response"]["status"] == "in_progress"
    await c.until("response.done", timeout=5)
    assert sim.last_connection.responses[0].trigger == "vad"
    assert abs(sim.last_connection.audio_in_ms - (2000 + clip_duration_ms("caller_question"))) < 1
    await c.ws.close()


async def test_commit_clear_and_manual_turns(sim: RealtimeSimulator) -> None:
    c = await open_client(sim)
    session = json.loads(json.dumps(PCMU_SESSION))
    session["audio"]["input"]["turn_detection"] = None
    updated = await c.configure(session)
    assert updated["session"]["audio"]["input"]["turn_detection"] is None

    await c.send("input_audio_buffer.commit", event_id="c1")
    err = (await c.until("error"))["error"]
    assert err["code"] == "input_audio_buffer_commit_empty" and err["event_id"] == "c1"

    await c.append(load_clip("caller_thanks"))
    await c.send("input_audio_buffer.clear")
    await c.until("input_audio_buffer.cleared")
    await c.send("input_audio_buffer.commit")
    assert (await c.until("error"))["error"]["code"] == "input_audio_buffer_commit_empty"

    await c.append(load_clip("caller_thanks"))
    await c.send("input_audio_buffer.commit")
    committed = await c.until("input_audio_buffer.committed")
    tr = await c.until("conversation.item.input_audio_transcription.completed")
    assert tr["item_id"] == committed["item_id"]
    assert "input_audio_buffer.speech_started" not in c.types()  # no VAD
    await asyncio.sleep(0.05)
    assert not sim.last_connection.responses  # manual commit never starts a response
    await c.ws.close()


# ---------------------------------------------------------------- responses


async def test_audio_reply_event_sequence_faster_than_real_time() -> None:
    async with RealtimeSimulator(["agent_short"], first_delta_latency_ms=50) as sim:
        c = await open_client(sim)
        await c.configure()
        await c.send("response.create", response={"instructions": "Greet."})
        done = await c.until("response.done", timeout=5)
        rec = sim.last_connection
        types = [t for t in c.types() if not t.startswith("session.")]
        deltas = [e for e in c.events if e["type"] == "response.output_audio.delta"]
        head = ["response.created", "rate_limits.updated", "response.output_item.added",
                "conversation.item.added", "response.content_part.added"]
        assert types[:5] == head
        tail = ["response.output_audio.done", "response.output_audio_transcript.done",
                "response.content_part.done", "conversation.item.done",
                "response.output_item.done", "response.done"]
        assert types[-6:] == tail
        audio = b"".join(base64.b64decode(d["delta"]) for d in deltas)
        assert audio == load_clip("agent_short")  # pcmu: the clip bytes unchanged
        item = done["response"]["output"][0]
        assert {k: deltas[0][k] for k in ("response_id", "item_id", "output_index",
                                           "content_index")} == {
            "response_id": done["response"]["id"], "item_id": item["id"],
            "output_index": 0, "content_index": 0}
        transcript = "".join(e["delta"] for e in c.events
                             if e["type"] == "response.output_audio_transcript.delta")
        assert transcript == clip_text("agent_short")
        assert item["role"] == "assistant" and item["status"] == "completed"
        assert done["response"]["status"] == "completed"
        usage = done["response"]["usage"]
        assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
        # 3.25 s of audio in 100 ms chunks every 25 ms: ~0.8 s; allow a wide margin
        span = rec.audio_deltas[-1].t - rec.audio_deltas[0].t
        assert span < clip_duration_ms("agent_short") / 1000 / 2
        assert rec.responses[0].params == {"instructions": "Greet."}
        assert len(rec.audio_deltas) == len(deltas)
        await c.ws.close()


async def test_pcm16_output_is_24khz() -> None:
    async with RealtimeSimulator(["agent_short"], first_delta_latency_ms=0,
                                 chunk_interval_ms=1) as sim:
        c = await open_client(sim)
        await c.until("session.created")  # defaults: audio/pcm 24 kHz both ways
        await c.send("response.create")
        await c.until("response.done", timeout=5)
        audio = b"".join(base64.b64decode(e["delta"]) for e in c.events
                         if e["type"] == "response.output_audio.delta")
        assert len(audio) == len(load_clip("agent_short")) * 3 * 2
        assert sim.last_connection.session is not None
        await c.ws.close()


async def _start_reply_then_barge_in(c: Client) -> dict[str, Any]:
    await c.send("response.create")
    first = await c.until("response.output_audio.delta")
    await c.append(load_clip("caller_interrupt")[:4000])  # 500 ms of speech
    await c.until("input_audio_buffer.speech_started")
    return first


async def test_barge_in_cancels_response() -> None:
    async with RealtimeSimulator(["agent_reply"], first_delta_latency_ms=0,
                                 chunk_interval_ms=20) as sim:
        c = await open_client(sim)
        await c.configure()
        await _start_reply_then_barge_in(c)
        done = await c.until("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"] == {"type": "cancelled",
                                                      "reason": "turn_detected"}
        assert done["response"]["output"][0]["status"] == "incomplete"
        i_done = c.types().index("response.done")
        i_speech = c.types().index("input_audio_buffer.speech_started")
        assert i_speech < i_done
        await asyncio.sleep(0.1)
        while True:  # nothing of that response after its response.done
            try:
                ev = await c.recv(timeout=0.05)
            except TimeoutError:
                break
            assert ev.get("response_id") != done["response"]["id"]
        # an extra cancel is an error, exactly as the real service answers
        await c.send("response.cancel")
        assert (await c.until("error"))["error"]["code"] == "response_cancel_not_active"
        assert sim.last_connection.responses[0].reason == "turn_detected"
        # the caller finishes; the end of their turn starts the next response
        await c.append(load_clip("caller_interrupt")[4000:] + SILENCE * 800)
        await c.until("input_audio_buffer.speech_stopped")
        await c.until("response.created")
        assert [r.trigger for r in sim.last_connection.responses] == ["client", "vad"]
        await c.ws.close()


async def test_barge_in_without_interrupt_response_keeps_streaming() -> None:
    async with RealtimeSimulator(["agent_short"], first_delta_latency_ms=0,
                                 chunk_interval_ms=10) as sim:
        c = await open_client(sim)
        session = json.loads(json.dumps(PCMU_SESSION))
        session["audio"]["input"]["turn_detection"]["interrupt_response"] = False
        await c.configure(session)
        await _start_reply_then_barge_in(c)
        done = await c.until("response.done", timeout=5)
        assert done["response"]["status"] == "completed"
        audio = b"".join(base64.b64decode(e["delta"]) for e in c.events
                         if e["type"] == "response.output_audio.delta")
        assert audio == load_clip("agent_short")
        assert len(sim.last_connection.responses) == 1
        await c.ws.close()


async def test_cancel_and_active_response_errors() -> None:
    async with RealtimeSimulator(["agent_reply"], first_delta_latency_ms=0,
                                 chunk_interval_ms=20) as sim:
        c = await open_client(sim)
        await c.configure()
        await c.send("response.cancel", event_id="x1")
        err = (await c.until("error"))["error"]
        assert err["code"] == "response_cancel_not_active" and err["event_id"] == "x1"
        assert err["message"] == "Cancellation failed: no active response found"
        await c.send("response.create")
        created = await c.until("response.created")
        await c.send("response.create")
        err = (await c.until("error"))["error"]
        assert err["code"] == "conversation_already_has_active_response"
        assert created["response"]["id"] in err["message"]
        await c.until("response.output_audio.delta")
        await c.send("response.cancel")
        done = await c.until("response.done")
        assert done["response"]["status"] == "cancelled"
        assert done["response"]["status_details"]["reason"] == "client_cancelled"
        await c.ws.close()


async def test_truncate_ok_and_errors() -> None:
    async with RealtimeSimulator(["agent_short"], first_delta_latency_ms=0,
                                 chunk_interval_ms=1) as sim:
        c = await open_client(sim)
        await c.configure()
        await c.send("conversation.item.create", item={
            "type": "message", "role": "user",
            "content": [{"type": "input_text", "text": "DTMF 5 pressed"}]})
        user = (await c.until("conversation.item.added"))["item"]
        assert user["content"] == [{"type": "input_text", "text": "DTMF 5 pressed"}]
        await c.until("conversation.item.done")
        await c.send("response.create")
        done = await c.until("response.done", timeout=5)
        item_id = done["response"]["output"][0]["id"]
        total_ms = len(load_clip("agent_short")) // 8

        await c.send("conversation.item.truncate", item_id=item_id, content_index=0,
                     audio_end_ms=total_ms + 500, event_id="t1")
        err = (await c.until("error"))["error"]
        assert (err["type"], err["code"], err["param"], err["event_id"]) == (
            "invalid_request_error", "invalid_value", "audio_end_ms", "t1")
        assert "shorter than" in err["message"] and str(total_ms) in err["message"]

        await c.send("conversation.item.truncate", item_id=user["id"], content_index=0,
                     audio_end_ms=0)
        assert (await c.until("error"))["error"]["code"] == "unsupported_content_type"

        await c.send("conversation.item.truncate", item_id=item_id, content_index=0,
                     audio_end_ms=1500)
        truncated = await c.until("conversation.item.truncated")
        assert {k: truncated[k] for k in ("item_id", "content_index", "audio_end_ms")} == {
            "item_id": item_id, "content_index": 0, "audio_end_ms": 1500}
        await c.send("conversation.item.retrieve", item_id=item_id)
        item = (await c.until("conversation.item.retrieved"))["item"]
        words = clip_text("agent_short").split()
        assert item["content"][0]["transcript"].split() == words[: len(words) * 1500 // total_ms]

        ok = [t for t in sim.truncations if t.ok]
        assert [(t.item_id, t.audio_end_ms, t.item_audio_ms) for t in ok] == [
            (item_id, 1500, total_ms)]
        assert len(sim.truncations) == 3
        await c.ws.close()


async def test_function_call_script() -> None:
    call = {"function_call": {"name": "lookup_order", "arguments": '{"id": "A17"}'}}
    script: list[ReplySpec] = [call, "agent_short"]
    async with RealtimeSimulator(script, first_delta_latency_ms=0, chunk_interval_ms=1) as sim:
        c = await open_client(sim)
        await c.configure()
        await c.send("response.create")
        done = await c.until("response.done", timeout=5)
        args_done = next(e for e in c.events
                         if e["type"] == "response.function_call_arguments.done")
        item = done["response"]["output"][0]
        assert item["type"] == "function_call" and item["name"] == "lookup_order"
        assert item["arguments"] == '{"id": "A17"}' and item["call_id"].startswith("call_")
        assert args_done["call_id"] == item["call_id"] and args_done["item_id"] == item["id"]
        assert args_done["name"] == "lookup_order" and args_done["output_index"] == 0
        assert args_done["response_id"] == done["response"]["id"]
        streamed = "".join(e["delta"] for e in c.events
                           if e["type"] == "response.function_call_arguments.delta")
        assert streamed == '{"id": "A17"}'
        added = next(e for e in c.events if e["type"] == "response.output_item.added")
        assert added["item"]["status"] == "in_progress"

        await c.send("conversation.item.create", item={
            "type": "function_call_output", "call_id": "call_unknown", "output": "{}"})
        assert (await c.until("error"))["error"]["param"] == "item.call_id"
        await c.send("conversation.item.create", item={
            "type": "function_call_output", "call_id": item["call_id"],
            "output": '{"status": "shipped"}'})
        out = (await c.until("conversation.item.done"))["item"]
        assert out["type"] == "function_call_output" and out["call_id"] == item["call_id"]
        await c.send("response.create")
        done = await c.until("response.done", timeout=5)
        assert done["response"]["output"][0]["content"][0]["transcript"] == clip_text(
            "agent_short")
        await c.ws.close()


async def test_fault_injection() -> None:
    script: list[ReplySpec] = [{"error": {"code": "rate_limit_exceeded", "message": "slow down"}},
              {"close": 4001, "reason": "dropped"}]
    async with RealtimeSimulator(script, first_delta_latency_ms=0) as sim:
        c = await open_client(sim)
        await c.configure()
        await c.send("response.create")
        err = (await c.until("error"))["error"]
        assert err["code"] == "rate_limit_exceeded"
        done = await c.until("response.done")
        assert done["response"]["status"] == "failed"
        await c.send("response.create")
        with pytest.raises(ConnectionClosed) as info:
            await c.until("never")
        assert info.value.rcvd is not None and info.value.rcvd.code == 4001
        await sim.wait_for(lambda: not sim.last_connection.is_open)
        assert sim.last_connection.close_code == 4001
        assert sim.last_connection.closed_by == "server"

    async with RealtimeSimulator(["agent_short"], first_delta_latency_ms=0, chunk_interval_ms=1,
                                 close_after_responses=1, record_audio=False) as sim:
        c = await open_client(sim)
        await c.configure()
        await c.append(SILENCE * 40)
        await c.send("response.create")
        with pytest.raises(ConnectionClosed) as info:
            await c.until("never", timeout=5)
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        rec = sim.last_connection
        assert rec.sent_types()[-1] == "response.done"
        delta = rec.first_sent("response.output_audio.delta")
        assert delta is not None and delta["delta"].startswith("<")  # payload not kept
        assert rec.received_events("input_audio_buffer.append")[0]["audio"].startswith("<")


async def test_text_only_modality(sim: RealtimeSimulator) -> None:
    c = await open_client(sim)
    await c.until("session.created")
    await c.send("session.update", session={"type": "realtime", "output_modalities": ["text"]})
    await c.until("session.updated")
    await c.send("response.create")
    done = await c.until("response.done", timeout=5)
    assert "response.output_audio.delta" not in c.types()
    text = "".join(e["delta"] for e in c.events if e["type"] == "response.output_text.delta")
    assert text == clip_text("agent_short")
    assert done["response"]["output"][0]["content"] == [{"type": "output_text", "text": text}]
    await c.send("session.update", session={"type": "realtime",
                                            "output_modalities": ["text", "audio"]})
    assert (await c.until("error"))["error"]["code"] == "invalid_value"
    await c.ws.close()


async def test_timed_faults() -> None:
    async with RealtimeSimulator(expire_after_ms=50) as sim:
        c = await open_client(sim)
        err = (await c.until("error"))["error"]
        assert err["code"] == "session_expired"
        with pytest.raises(ConnectionClosed):
            await c.until("never")
        await sim.wait_for(lambda: sim.open_connections == 0)
    async with RealtimeSimulator(close_after_ms=50, close_code=1011) as sim:
        c = await open_client(sim)
        with pytest.raises(ConnectionClosed) as info:
            await c.until("never")
        assert info.value.rcvd is not None and info.value.rcvd.code == 1011
        await sim.wait_for(lambda: not sim.last_connection.is_open)
        assert sim.last_connection.closed_by == "server"
