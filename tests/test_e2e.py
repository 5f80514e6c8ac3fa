"""Whole calls over real sockets: simulated Twilio caller -> bridge -> simulated Realtime server.

Every test goes through the production path: the signed webhook, the signed WebSocket
upgrade, the stream token, the relay and the core.  Assertions are made on what the
simulators observed on the wire, never on the bridge's own beliefs.
"""

from __future__ import annotations

import asyncio
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bridge.audio.mulaw import ulaw_to_pcm16
from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.sim.twilio_caller import CallResult
from bridge.tapes.format import load_tape
from tests.tape_marks import mark_before_truncate

pytestmark = pytest.mark.e2e

API_KEY = "sk-e2e-test-key"
CHUNK_MS = 100  # the simulator's audio per delta = one mark's worth of audio


def item_heard_ms(result: CallResult, item_id: str, played_position: int) -> float:
    """How much of ``item_id`` the caller really heard, from the caller's own byte positions."""
    marks = [m for m in result.marks if f":{item_id}:" in m.name]
    assert marks, f"no marks for {item_id}"
    first = marks[0]
    media = next(m for m in result.media if m.position + m.size == first.position)
    return (played_position - media.position) / 8


def rms_db(ulaw: bytes) -> float:
    samples = np.frombuffer(ulaw_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    rms = float(np.sqrt(np.mean(samples**2))) or 1.0
    return 20 * math.log10(rms / 32768)


@pytest.mark.parametrize("audio", ["passthrough", "pcm16"])
@pytest.mark.parametrize("dialect", ["ga", "beta"])
async def test_call_with_greeting_question_barge_in_and_hang_up(dialect: str, audio: str) -> None:
    sim = RealtimeSimulator(script=["agent_short", "agent_reply", "agent_short"], api_key=API_KEY)
    async with (
        sim,
        LocalBridge(
            sim.url,
            env={
                "OPENAI_API_KEY": API_KEY,
                "AGENT_GREETING": "Hi there!",
                "OPENAI_REALTIME_DIALECT": dialect,
                "BRIDGE_AUDIO": audio,
            },
        ) as bridge,
    ):
        caller = await bridge.place_call(
            script=[(3600, "caller_question"), (8000, "caller_interrupt")], hangup_at_ms=9500
        )
        result = await caller.run()
        hung_up_at = time.monotonic()
        assert result.t0 is not None
        conn = sim.last_connection
        closed = await sim.wait_for(lambda: not conn.is_open, timeout=2.0)
        assert closed, "model socket still open after the caller hung up"
        assert conn.closed_at is not None and conn.closed_at - hung_up_at < 1.0

    assert conn.dialect == dialect
    assert not result.violations, result.violations
    assert result.closed_by == "caller"

    # The caller heard the greeting: agent audio in the first seconds of the call.
    heard = result.heard
    greeting = load_clip("agent_short")
    if audio == "passthrough":
        assert greeting in heard  # byte for byte, no decode or re-encode
    else:
        window = heard[400 * 8 : 3000 * 8]
        assert rms_db(window) > -35, "greeting not audible after transcoding"

    # Barge-in: clear within 50 ms of the model's speech_started.
    assert len(result.clears) == 1
    clear = result.clears[0]
    speech = [r.t for r in conn.sent if r.event["type"] == "input_audio_buffer.speech_started"]
    barge_speech = max(t for t in speech if t <= result.t0 + clear.at_ms / 1000 + 0.001)
    clear_at = result.t0 + clear.at_ms / 1000
    assert 0 <= clear_at - barge_speech < 0.050

    # Truncate = what the caller really heard of the interrupted item, within one chunk.
    assert len(sim.truncations) == 1
    truncate = sim.truncations[0]
    assert truncate.ok, truncate.error_code
    heard_ms = item_heard_ms(result, truncate.item_id, clear.played_position)
    assert heard_ms - CHUNK_MS - 20 <= truncate.audio_end_ms <= heard_ms + 5, (
        truncate.audio_end_ms,
        heard_ms,
    )
    assert truncate.audio_end_ms < truncate.item_audio_ms  # really cut the reply short


async def test_model_socket_closing_ends_the_call_cleanly_when_reconnect_is_off() -> None:
    """With BRIDGE_RECONNECT=false a model close ends the call, promptly and cleanly
    (with reconnect on, the default, see tests/test_reconnect.py)."""
    sim = RealtimeSimulator(script=["agent_reply"], api_key=API_KEY, close_after_ms=1500)
    env = {"OPENAI_API_KEY": API_KEY, "BRIDGE_RECONNECT": "false"}
    async with sim, LocalBridge(sim.url, env=env) as bridge:
        caller = await bridge.place_call(script=[(200, "caller_question")], duration_ms=8000)
        started = time.monotonic()
        result = await caller.run()
        assert result.closed_by == "server"
        assert result.close_code == 1000 and "model_closed" in (result.close_reason or "")
        closed = sim.last_connection.closed_at
        assert closed is not None
        # Twilio side closed within 1 s of the model side.
        assert result.t0 is not None and result.closed_ms is not None
        assert (result.t0 + result.closed_ms / 1000) - closed < 1.0
        assert time.monotonic() - started < 5
        services = bridge.services
        assert services.metrics.value("bridge_calls_ended_total", {"reason": "model_closed"}) == 1
        assert not services.active


async def test_bad_input_is_survived_and_another_call_is_unaffected() -> None:
    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    async with sim, LocalBridge(sim.url, env={"OPENAI_API_KEY": API_KEY}) as bridge:
        hostile = await bridge.place_call(auto_start=False, duration_ms=6000)
        good = await bridge.place_call(script=[(300, "caller_question")], hangup_at_ms=8000)
        await hostile.connect()
        for frame in [
            "this is not json",
            '{"event": "media", "media": {"payload": "AAAA"}}',  # media before start
            '{"event": "teleport"}',
            "[]",
            '{"no_event": 1}',
        ]:
            await hostile.send_raw(frame)
        hostile.start_stream()
        await asyncio.sleep(0.3)
        for frame in [
            '{"event": "media", "streamSid": "x", "media": {"payload": "***not base64***"}}',
            '{"event": "media", "streamSid": "x"}',
            '{"event": "mark", "streamSid": "x", "mark": {}}',
            '{"event": "dtmf", "streamSid": "x", "dtmf": {"digit": "?"}}',
            '{"event": "mark", "streamSid": "x", "mark": {"name": "not-ours"}}',
        ]:
            await hostile.send_raw(frame)
        good_result, hostile_result = await asyncio.gather(good.run(), hostile.run())
        # The hostile call survived its garbage until its own hang-up...
        assert hostile_result.closed_by == "caller"
        # ...and the good call had a normal conversation alongside it.
        assert good_result.closed_by == "caller"
        assert load_clip("agent_short") in good_result.heard
        assert not good_result.violations


async def _twilio_start_rejected(
    bridge: LocalBridge, sim: RealtimeSimulator, params: dict[str, Any], call_sid: str
) -> CallResult:
    from bridge.devtools.sim.twilio_caller import TwilioCaller

    assert bridge.settings.stream_url is not None
    caller = TwilioCaller(
        url=bridge.settings.stream_url,
        call_sid=call_sid,
        custom_parameters=params,
        auth_token=bridge.auth_token,
        duration_ms=3000,
    )
    return await caller.run()


async def test_stream_token_is_checked_before_any_model_connection() -> None:
    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    async with (
        sim,
        LocalBridge(
            sim.url,
            env={
                "OPENAI_API_KEY": API_KEY,
                "BRIDGE_PRECONNECT": "false",
            },
        ) as bridge,
    ):
        url, params, call_sid = await bridge.incoming_call()
        # Missing token.
        no_token = {k: v for k, v in params.items() if k != "streamToken"}
        result = await _twilio_start_rejected(bridge, sim, no_token, call_sid)
        assert result.closed_by == "server" and "unauthorised" in (result.close_reason or "")
        # Wrong call: a valid token presented for another CallSid.
        result = await _twilio_start_rejected(bridge, sim, params, "CA" + "1" * 32)
        assert result.closed_by == "server"
        assert not sim.connections, "the model was contacted for an unauthorised stream"
        # The genuine use works once...
        ok = await _twilio_start_rejected(bridge, sim, params, call_sid)
        assert ok.closed_by == "caller"
        assert len(sim.connections) == 1
        # ...and a replay of the same token is refused.
        again = await _twilio_start_rejected(bridge, sim, params, call_sid)
        assert again.closed_by == "server"
        assert len(sim.connections) == 1
        assert (
            bridge.services.metrics.value(
                "bridge_calls_rejected_total", {"reason": "stream_token_replayed"}
            )
            == 1
        )
        # An expired token (minted two minutes ago by this very bridge) is refused too.
        _, fresh, expired_sid = await bridge.incoming_call()
        fresh["streamToken"] = bridge.services.tokens.mint(expired_sid, time.time() - 120)
        late = await _twilio_start_rejected(bridge, sim, fresh, expired_sid)
        assert late.closed_by == "server"
        assert (
            bridge.services.metrics.value(
                "bridge_calls_rejected_total", {"reason": "stream_token_expired"}
            )
            == 1
        )
        assert len(sim.connections) == 1


async def test_unsigned_requests_never_reach_the_model() -> None:
    import websockets

    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    async with sim, LocalBridge(sim.url, env={"OPENAI_API_KEY": API_KEY}) as bridge:
        form = {"CallSid": "CA" + "2" * 32, "From": "+15550001111", "To": "+15559990000"}
        status, body = await bridge.post_webhook("/twiml", form, signed=False)
        assert status == 403 and "<Response" not in body
        status, _ = await bridge.post_webhook("/twiml", form, signature="bm90IGEgc2lnbmF0dXJl")
        assert status == 403
        tampered = dict(form, To="+15550000000")
        signature = bridge.sign(bridge.base_url + "/twiml", form)
        status, _ = await bridge.post_webhook("/twiml", tampered, signature=signature)
        assert status == 403
        assert bridge.settings.stream_url is not None
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(bridge.settings.stream_url):
                pass
        assert refused.value.response.status_code == 403
        assert not sim.connections


async def test_abrupt_caller_disconnect_closes_the_model_socket_within_a_second() -> None:
    sim = RealtimeSimulator(script=["agent_reply"], api_key=API_KEY)
    async with sim, LocalBridge(sim.url, env={"OPENAI_API_KEY": API_KEY}) as bridge:
        caller = await bridge.place_call(
            script=[(200, "caller_question")], hangup_at_ms=4000, abrupt_hangup=True
        )
        result = await caller.run()
        dropped_at = time.monotonic()
        conn = sim.last_connection
        assert await sim.wait_for(lambda: not conn.is_open, timeout=2.0)
        assert conn.closed_at is not None and conn.closed_at - dropped_at < 1.0
        assert result.closed_by == "abort"
        # Counted once the relay has finished closing, which may be just after the
        # simulator sees its socket close: wait for it rather than race it.
        await sim.wait_for(
            lambda: bridge.services.metrics.value(
                "bridge_calls_ended_total", {"reason": "caller_disconnected"}
            )
            == 1,
            timeout=1.0,
        )


async def test_concurrent_calls_keep_their_own_barge_in_accounting() -> None:
    """Ten calls at once, each interrupting at its own moment: every truncate matches
    what that call's caller heard, so no state leaks between calls."""
    sim = RealtimeSimulator(script=["agent_reply"], api_key=API_KEY)
    with tempfile.TemporaryDirectory() as tapes:
        env = {"OPENAI_API_KEY": API_KEY, "BRIDGE_TAPES_DIR": tapes}
        async with sim, LocalBridge(sim.url, env=env) as bridge:
            callers = [
                await bridge.place_call(
                    script=[(200, "caller_question"), (4200 + 250 * i, "caller_interrupt")],
                    hangup_at_ms=7500 + 250 * i,
                )
                for i in range(10)
            ]
            results = await asyncio.gather(*(c.run() for c in callers))
            await sim.wait_for(lambda: sim.open_connections == 0, timeout=2.0)
        tape_of = {r.call_sid: load_tape(next(Path(tapes).glob(f"*-{r.call_sid}.jsonl*")))
                   for r in results}
    by_item = {t.item_id: t for t in sim.truncations}
    assert len(by_item) == 10
    heard = []
    for result in results:
        assert not result.violations
        assert len(result.clears) == 1
        item = next(i for i in by_item if any(f":{i}:" in m.name for m in result.marks))
        ms = item_heard_ms(result, item, result.clears[0].played_position)
        # Exactly this caller's playback at the last echo its bridge call had (that call's
        # tape says which), and no more than it had played when the clear came.
        name = mark_before_truncate(tape_of[result.call_sid].records, item)
        echoed = next(m for m in result.marks if m.name == name)
        assert not echoed.cleared
        assert by_item[item].audio_end_ms == item_heard_ms(result, item, echoed.position)
        assert by_item[item].audio_end_ms <= ms + 5
        heard.append(ms)
    # The interruptions really happened at different points of the reply.
    assert max(heard) - min(heard) > 1500


async def test_oversized_frame_closes_only_that_call_with_a_clear_code() -> None:
    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    async with (
        sim,
        LocalBridge(
            sim.url,
            env={
                "OPENAI_API_KEY": API_KEY,
                "BRIDGE_MAX_MESSAGE_BYTES": "65536",
            },
        ) as bridge,
    ):
        hostile = await bridge.place_call(duration_ms=5000)
        # The good call hangs up once it has heard the whole answer, not at a fixed time
        # that a loaded host can beat (its 7 s used to leave 0.7 s after the answer).
        good = await bridge.place_call(script=[(300, "caller_question")], duration_ms=20_000)
        good_run = asyncio.create_task(good.run())
        hostile_run = asyncio.create_task(hostile.run())
        await asyncio.sleep(0.5)
        await hostile.send_raw('{"event": "media", "media": {"payload": "' + "A" * 100_000 + '"}}')
        hostile_result = await hostile_run
        await sim.wait_for(lambda: load_clip("agent_short") in good.result.heard, timeout=15)
        await good.hangup()
        good_result = await good_run
    assert (hostile_result.closed_by, hostile_result.close_code) == ("server", 1009), (
        hostile_result.error,
        hostile_result.close_reason,
        hostile_result.messages_sent,
    )
    assert good_result.closed_by == "caller"
    assert load_clip("agent_short") in good_result.heard
