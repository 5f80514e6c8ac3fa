"""The simulated Twilio caller, checked against a tiny fake bridge on 127.0.0.1.

The fake bridge is written here on purpose (not the project's server): these tests pin the
simulator's own wire behaviour and playback model, so the bridge's tests can trust it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import wave
from collections.abc import Callable, Coroutine
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
from twilio.request_validator import RequestValidator
from websockets.asyncio.server import Request, Response, ServerConnection, serve
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.playback import FRAME_BYTES, MAX_BUFFERED_BYTES, SILENCE_FRAME, Playback
from bridge.devtools.sim.twilio_caller import CallerPool, TwilioCaller

pytestmark = pytest.mark.e2e

TOKEN = "test-auth-token-not-a-secret"
Behaviour = Callable[["FakeBridge", ServerConnection], Coroutine[Any, Any, None]]


def media(stream_sid: str, audio: bytes) -> str:
    payload = base64.b64encode(audio).decode()
    return json.dumps({"event": "media", "streamSid": stream_sid, "media": {"payload": payload}})


def mark(stream_sid: str, name: str) -> str:
    return json.dumps({"event": "mark", "streamSid": stream_sid, "mark": {"name": name}})


def clear(stream_sid: str) -> str:
    return json.dumps({"event": "clear", "streamSid": stream_sid})


class FakeBridge:
    """Records every frame the caller sends (with loop time) and runs a scripted behaviour."""

    def __init__(
        self,
        behaviour: Behaviour | None = None,
        process_request: Callable[[ServerConnection, Request], Response | None] | None = None,
    ) -> None:
        self.behaviour = behaviour
        self.process_request = process_request
        self.received: list[tuple[float, Any]] = []
        self.headers: Any = None
        self.close_code: int | None = None
        self.errors: list[BaseException] = []
        self._changed = asyncio.Condition()

    async def __aenter__(self) -> FakeBridge:
        self._server = await serve(
            self._handler,
            "127.0.0.1",
            0,
            compression=None,
            process_request=self.process_request,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()
        assert not self.errors, self.errors

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/media-stream"

    def events(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.received if isinstance(m, dict) and m["event"] == name]

    async def wait_for(self, pred: Callable[[], bool], timeout: float = 3.0) -> None:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(pred)

    async def _handler(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        self.headers = ws.request.headers
        loop = asyncio.get_running_loop()
        task: asyncio.Task[None] | None = None
        if self.behaviour is not None:
            task = asyncio.create_task(self.behaviour(self, ws))
        try:
            async for raw in ws:
                t = loop.time()
                msg = json.loads(raw) if isinstance(raw, str) and raw.startswith("{") else raw
                async with self._changed:
                    self.received.append((t, msg))
                    self._changed.notify_all()
        except ConnectionClosed:
            pass
        finally:
            self.close_code = ws.close_code
            if task is not None:
                done, _ = await asyncio.wait([task], timeout=2)
                if not done:
                    task.cancel()
                elif task.exception() is not None:
                    self.errors.append(task.exception())  # type: ignore[arg-type]


def has_event(bridge: FakeBridge, name: str, count: int = 1) -> Callable[[], bool]:
    return lambda: len(bridge.events(name)) >= count


# --------------------------------------------------------------------------- wire format


async def test_frames_paced_numbered_signed_and_stopped() -> None:
    async with FakeBridge() as bridge:
        caller = TwilioCaller(
            url=bridge.url,
            auth_token=TOKEN,
            custom_parameters={"tenant": "abc", "token": "t0k"},
            script=[(200, "caller_question")],
            dtmf=[(500, "5")],
            hangup_at_ms=1000,
        )
        result = await caller.run()

    sig = bridge.headers["x-twilio-signature"]
    assert RequestValidator(TOKEN).validate(bridge.url, {}, sig)
    assert not RequestValidator("other-token").validate(bridge.url, {}, sig)

    msgs = [m for _, m in bridge.received]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert start["streamSid"] == caller.stream_sid
    assert start["start"] == {
        "accountSid": caller.account_sid,
        "streamSid": caller.stream_sid,
        "callSid": caller.call_sid,
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"tenant": "abc", "token": "t0k"},
    }
    seqs = [m["sequenceNumber"] for m in msgs[1:]]
    assert all(isinstance(s, str) for s in seqs)
    assert [int(s) for s in seqs] == list(range(1, len(seqs) + 1))

    media_msgs = bridge.events("media")
    assert len(media_msgs) == 50
    assert [m["media"]["chunk"] for _, m in media_msgs] == [str(i) for i in range(1, 51)]
    assert [m["media"]["timestamp"] for _, m in media_msgs] == [str(20 * i) for i in range(50)]
    assert {m["media"]["track"] for _, m in media_msgs} == {"inbound"}
    audio = [base64.b64decode(m["media"]["payload"]) for _, m in media_msgs]
    assert {len(a) for a in audio} == {FRAME_BYTES}
    assert audio[0] == SILENCE_FRAME  # caller silent until 200 ms
    assert audio[10] == load_clip("caller_question")[:FRAME_BYTES]
    assert b"".join(audio) == result.spoken

    # Absolute 20 ms schedule: ~1 s for 50 frames, and no frame far from its slot.
    t_first = media_msgs[0][0]
    assert 0.98 - 0.15 < media_msgs[-1][0] - t_first < 0.98 + 0.15
    assert max(abs(t - t_first - 0.02 * i) for i, (t, _) in enumerate(media_msgs)) < 0.1

    (_, dtmf), = bridge.events("dtmf")
    assert dtmf["dtmf"] == {"track": "inbound_track", "digit": "5"}
    assert dtmf["streamSid"] == caller.stream_sid
    dtmf_index = msgs.index(dtmf)
    assert msgs[dtmf_index - 1]["media"]["timestamp"] == "500"

    stop = msgs[-1]
    assert stop["event"] == "stop"
    assert stop["stop"] == {"accountSid": caller.account_sid, "callSid": caller.call_sid}
    assert result.closed_by == "caller" and result.close_code == 1000
    assert result.frames_sent == 50 and result.stop_sent_ms is not None
    assert len(result.heard) == 50 * FRAME_BYTES and set(result.heard) == {0xFF}
    assert len(result.inbound_sent_ms) == 50
    assert result.inbound_sent_ms_at(160 * 25) == pytest.approx(500, abs=30)


async def test_server_rejecting_the_signature_fails_the_handshake() -> None:
    def check(conn: ServerConnection, request: Request) -> Response | None:
        sig = request.headers.get("x-twilio-signature", "")
        url = f"ws://127.0.0.1:{conn.local_address[1]}{request.path}"
        if RequestValidator(TOKEN).validate(url, {}, sig):
            return None
        return conn.respond(HTTPStatus.FORBIDDEN, "bad signature\n")

    async with FakeBridge(process_request=check) as bridge:
        with pytest.raises(InvalidStatus):
            await TwilioCaller(url=bridge.url, auth_token="wrong").run()
        ok = TwilioCaller(url=bridge.url, auth_token=TOKEN, hangup_at_ms=40)
        assert (await ok.run()).frames_sent == 2


# --------------------------------------------------------------------------- playback


async def test_marks_echo_only_after_their_audio_has_played() -> None:
    audio = load_clip("agent_greeting")[:3200]  # 400 ms
    tail = load_clip("agent_short")[:160]  # 20 ms, sent in two halves
    sent: dict[str, float] = {}

    async def behaviour(bridge: FakeBridge, ws: ServerConnection) -> None:
        await bridge.wait_for(has_event(bridge, "start"))
        sid = bridge.events("start")[0][1]["streamSid"]
        loop = asyncio.get_running_loop()
        sent["audio"] = loop.time()
        await ws.send(media(sid, audio))
        await ws.send(mark(sid, "a"))
        await ws.send(media(sid, tail[:80]))
        await ws.send(media(sid, tail[80:]))
        await ws.send(mark(sid, "b"))
        await bridge.wait_for(has_event(bridge, "mark", 2))
        await asyncio.sleep(0.1)
        sent["c"] = loop.time()
        await ws.send(mark(sid, "c"))  # nothing buffered: echoed at once
        await bridge.wait_for(has_event(bridge, "mark", 3))
        await ws.close(1000, "bye")

    async with FakeBridge(behaviour) as bridge:
        caller = TwilioCaller(url=bridge.url, duration_ms=5000)
        result = await caller.run()

    echoes = bridge.events("mark")
    assert [m["mark"]["name"] for _, m in echoes] == ["a", "b", "c"]
    for _, m in echoes:
        assert m["streamSid"] == caller.stream_sid and isinstance(m["sequenceNumber"], str)
    (ta, _), (tb, _), (tc, _) = echoes
    # Audio starts at the next tick (<20 ms) and a mark comes back when its frame ends.
    assert 0.400 - 0.005 <= ta - sent["audio"] <= 0.400 + 0.040
    assert 0.420 - 0.005 <= tb - sent["audio"] <= 0.420 + 0.040
    assert tc - sent["c"] < 0.015

    assert result.mark_positions == {"a": 3200, "b": 3360, "c": 3360}
    assert [(m.position, m.size) for m in result.media] == [(0, 3200), (3200, 80), (3280, 80)]
    assert result.outbound_received_ms(3300) == result.media[2].at_ms
    assert not any(m.cleared for m in result.marks)
    at = result.heard.find(audio + tail)
    assert at > 0 and at % FRAME_BYTES == 0  # played whole, from a tick boundary
    assert result.mark("a").echoed_ms == pytest.approx(at / 8 + 400, abs=1)
    assert result.closed_by == "server"
    assert (result.close_code, result.close_reason) == (1000, "bye")
    assert result.closed_ms is not None and result.closed_ms < 1500
    assert not result.violations
    assert result.stop_sent_ms is None  # the server hung up: nothing more goes out


async def test_clear_flushes_audio_and_returns_pending_marks_at_once(tmp_path: Path) -> None:
    reply = load_clip("agent_reply")[:16000]  # 2 s in 8 chunks, a mark after each
    sent: dict[str, float] = {}

    async def behaviour(bridge: FakeBridge, ws: ServerConnection) -> None:
        await bridge.wait_for(has_event(bridge, "start"))
        sid = bridge.events("start")[0][1]["streamSid"]
        loop = asyncio.get_running_loop()
        sent["audio"] = loop.time()
        for i in range(8):
            await ws.send(media(sid, reply[i * 2000 : (i + 1) * 2000]))
            await ws.send(mark(sid, f"m{i}"))
        await asyncio.sleep(0.3)
        sent["clear"] = loop.time()
        await ws.send(clear(sid))
        await bridge.wait_for(has_event(bridge, "mark", 8))
        await asyncio.sleep(0.06)  # leave a gap the caller hears as silence
        await ws.send(media(sid, reply[:800]))
        await ws.send(mark(sid, "after"))
        await bridge.wait_for(has_event(bridge, "mark", 9))
        await ws.close()

    async with FakeBridge(behaviour) as bridge:
        result = await TwilioCaller(url=bridge.url, duration_ms=5000).run()

    echoes = bridge.events("mark")
    names = [m["mark"]["name"] for _, m in echoes]
    assert names == [f"m{i}" for i in range(8)] + ["after"]
    assert 0.250 - 0.005 <= echoes[0][0] - sent["audio"] <= 0.250 + 0.040  # m0 really played
    for t, _ in echoes[1:8]:
        assert 0 <= t - sent["clear"] < 0.040  # flushed together by the clear
    assert [m.cleared for m in result.marks] == [False] + [True] * 7 + [False]

    (c,) = result.clears
    played = result.played_bytes_at_clear(0)
    assert abs(played - 2400) <= 2 * FRAME_BYTES
    assert c.discarded_bytes == 16000 - played
    assert c.marks_flushed == tuple(f"m{i}" for i in range(1, 8))
    assert result.played_bytes_in(0, 16000) == played
    assert result.played_bytes_in(16000, 16800) == 800
    assert result.mark_positions["after"] == 16800

    heard = result.heard
    start = heard.find(reply[:160])
    assert start % FRAME_BYTES == 0
    assert heard[start : start + played] == reply[:played]
    assert heard[start + played : start + played + 160] == SILENCE_FRAME  # cut off, then a gap
    assert heard.count(reply[:800]) == 2  # once before the clear, once after

    mono, stereo = tmp_path / "heard.wav", tmp_path / "both.wav"
    result.save_wav(mono)
    result.save_wav(stereo, stereo=True)
    with wave.open(str(mono)) as w:
        assert (w.getnchannels(), w.getsampwidth(), w.getframerate()) == (1, 2, 8000)
        assert w.getnframes() == len(heard)
    with wave.open(str(stereo)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 8000, len(heard))


# --------------------------------------------------------------------------- hostile frames


async def test_protocol_violations_are_recorded_and_raw_frames_pass_through() -> None:
    async def behaviour(bridge: FakeBridge, ws: ServerConnection) -> None:
        await ws.send(clear("MZ-guessed"))  # before start
        await bridge.wait_for(has_event(bridge, "start"))
        sid = bridge.events("start")[0][1]["streamSid"]
        await ws.send(media("MZ" + "0" * 32, b"\xff" * 160))
        await ws.send(json.dumps({"event": "media", "streamSid": sid, "media": {"payload": "@@"}}))
        await ws.send(media(sid, b"RIFF\x24\x00\x00\x00WAVEfmt "))
        await ws.send(json.dumps({"event": "mark", "streamSid": sid, "mark": {}}))
        await ws.send(json.dumps({"event": "hello", "streamSid": sid}))
        await ws.send("not json")
        await ws.send(b"\x00\x01")
        await ws.send(json.dumps({"event": "clear", "streamSid": sid}))  # valid
        await bridge.wait_for(has_event(bridge, "bogus"))
        await ws.close()

    async with FakeBridge(behaviour) as bridge:
        caller = TwilioCaller(url=bridge.url, auto_start=False)
        await caller.connect()
        await asyncio.sleep(0.05)
        caller.start_stream()
        await bridge.wait_for(has_event(bridge, "start"))
        await caller.send_raw('{"event":"bogus","sequenceNumber":"x"}')
        result = await caller.run()

    reasons = [v.reason for v in result.violations]
    assert reasons[0] == "clear before start"
    assert any("streamSid" in r for r in reasons)
    assert any("base64" in r for r in reasons)
    assert any("file header" in r for r in reasons)
    assert any("mark.name" in r for r in reasons)
    assert any("unknown event 'hello'" in r for r in reasons)
    assert "not JSON" in reasons and any("binary" in r for r in reasons)
    assert len(reasons) == 8
    assert result.outbound_bytes == 16  # only the (flagged) WAV-header payload was queued
    assert len(result.clears) == 1


async def test_abrupt_hangup_drops_the_connection_without_stop() -> None:
    async with FakeBridge() as bridge:
        result = await TwilioCaller(url=bridge.url, hangup_at_ms=200, abrupt_hangup=True).run()
    assert len(bridge.events("media")) == 10
    assert not bridge.events("stop")
    assert bridge.close_code == 1006  # no close frame: the TCP connection just went away
    assert result.closed_by == "abort" and result.stop_sent_ms is None


async def test_context_manager_hangs_up_politely() -> None:
    async with FakeBridge() as bridge:
        async with TwilioCaller(url=bridge.url, auto_start=False) as caller:
            caller.start_stream()
            await bridge.wait_for(has_event(bridge, "media", 3))
        assert caller.closed and caller.result.closed_by == "caller"
        await bridge.wait_for(has_event(bridge, "stop"))
    last_seq = int(bridge.events("stop")[0][1]["sequenceNumber"])
    assert last_seq == 1 + caller.result.frames_sent + 1  # start, media..., stop


async def test_caller_pool_drives_many_calls_from_one_clock() -> None:
    pool = CallerPool()
    seen_clients: list[int] = []

    async def behaviour(bridge: FakeBridge, ws: ServerConnection) -> None:
        await bridge.wait_for(has_event(bridge, "start", 5))
        seen_clients.append(pool.ticker.clients)

    async with FakeBridge(behaviour) as bridge:
        callers = [
            pool.caller(url=bridge.url, hangup_at_ms=300, record_audio=False, record_timing=False)
            for _ in range(5)
        ]
        results = await pool.run(callers)
    assert all(not isinstance(r, BaseException) and r.frames_sent == 15 for r in results)
    assert len(bridge.events("media")) == 75 and len(bridge.events("stop")) == 5
    assert max(seen_clients) == 5  # all five calls on the one clock at once
    assert pool.ticker.ticks < 30  # one shared grid, not one per call
    assert not pool.ticker.running and pool.ticker.clients == 0


# --------------------------------------------------------------------------- playback model


def test_playback_echoes_a_mark_when_the_frame_before_it_has_finished() -> None:
    pb = Playback()
    pb.push_media(b"\x01" * 400, 0)
    m = pb.push_mark("x", 0)
    assert m.echoed_ms is None and m.position == 400
    assert pb.tick(0) == [] and pb.tick(20) == [] and pb.tick(40) == []  # 160+160+80
    assert pb.heard[-80:] == SILENCE_FRAME[:80]  # short frame padded with silence
    assert pb.tick(60) == [m] and m.echoed_ms == 60
    assert pb.push_mark("now", 61).echoed_ms == 61  # nothing buffered or sounding


def test_playback_clear_keeps_the_sounding_frame_and_skips_the_rest() -> None:
    pb = Playback()
    pb.push_media(b"\x02" * 1000, 0)
    a = pb.push_mark("a", 0)
    pb.tick(0)
    pb.tick(20)  # 320 bytes started
    rec, flushed = pb.clear(25)
    assert (rec.played_position, rec.discarded_bytes) == (320, 680) and flushed == [a]
    late = pb.push_mark("late", 26)
    assert late.echoed_ms is None  # the frame started at 20 ms is still sounding
    assert pb.tick(40) == [late]
    pb.push_media(b"\x03" * 100, 41)
    pb.tick(60)
    assert pb.played_ranges() == [(0, 320), (1000, 1100)]
    assert pb.played_bytes_in(900, 1050) == 50
    assert pb.heard == bytearray(b"\x02" * 320 + SILENCE_FRAME + b"\x03" * 100 + b"\xff" * 60)


def test_playback_drops_media_beyond_ten_minutes() -> None:
    pb = Playback(record_heard=False)
    assert pb.push_media(b"\xff" * MAX_BUFFERED_BYTES, 0) is not None
    assert pb.push_media(b"\xff", 1) is None and pb.overflow_bytes == 1
    pb.tick(2)
    assert pb.push_media(b"\xff" * 160, 3) is not None and not pb.heard
