"""PCM16 on the softphone leg: negotiation, and the leg's transcoding at its boundary.

The leg turns the page's PCM16 24 kHz into the core's μ-law 8 kHz and back with the
project's streaming resampler; these tests check it through the real parser and
serialiser (no mocks), and the handshake through the real bridge.
"""

from __future__ import annotations

import json
import math
import secrets
import warnings
from base64 import b64decode, b64encode
from pathlib import Path

import httpx
import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.core import events as ev
from bridge.core.actions import ClearPlayback, PlayAudio, PlayMark
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.operator.access import COOKIE_NAME
from bridge.operator.softphone import ENCODINGS, SoftphoneProtocol, choose_encoding

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop


def _tone(hz: float, samples: int, rate: int, amplitude: float = 8000) -> np.ndarray:
    t = np.arange(samples) / rate
    return (amplitude * np.sin(2 * math.pi * hz * t)).astype("<i2")


def _start(fmt: dict) -> str:
    return json.dumps({"event": "start", "streamSid": "MZ1", "start": {
        "streamSid": "MZ1", "callSid": "BR1", "mediaFormat": fmt, "customParameters": {}}})


def test_choose_encoding_prefers_the_setting_among_what_the_page_offers() -> None:
    both = ["softphone.pcm16", "softphone.mulaw"]
    assert choose_encoding(both, "mulaw") == ("mulaw", "softphone.mulaw")
    assert choose_encoding(both, "pcm16") == ("pcm16", "softphone.pcm16")
    assert choose_encoding(["softphone.mulaw"], "pcm16") == ("mulaw", "softphone.mulaw")
    assert choose_encoding(["softphone.pcm16"], "mulaw") == ("pcm16", "softphone.pcm16")
    assert choose_encoding([], "pcm16") == ("mulaw", None)  # Twilio's format, no subprotocol
    assert choose_encoding(["opus"], "mulaw") is None


def test_pcm16_page_audio_reaches_the_core_as_mulaw_8k() -> None:
    leg = SoftphoneProtocol(encoding="pcm16")
    started = leg.parse(_start(ENCODINGS["pcm16"][1]))
    assert isinstance(started, ev.StreamStarted)
    assert (started.info.encoding, started.info.sample_rate) == ("audio/x-mulaw", 8000)
    tone = _tone(440, 480 * 50, 24000)  # one second in 20 ms frames
    got = bytearray()
    for i in range(50):
        frame = tone[480 * i : 480 * (i + 1)].tobytes()
        event = leg.parse(json.dumps({"event": "media", "media": {
            "payload": b64encode(frame).decode(), "timestamp": str(20 * i)}}))
        assert isinstance(event, ev.CallerAudio)
        assert event.nbytes == 160 and event.timestamp_ms == 20 * i  # 20 ms in, 20 ms out
        got += b64decode(event.payload)
    # The same tone at 8 kHz, μ-law: 440 Hz at the level sent (the filter's passband).
    pcm8 = np.frombuffer(audioop.ulaw2lin(bytes(got), 2), dtype="<i2").astype(float)[400:]
    spectrum = np.abs(np.fft.rfft(pcm8 * np.hanning(len(pcm8))))
    assert abs(np.argmax(spectrum) * 8000 / len(pcm8) - 440) < 3
    level_db = 20 * math.log10(np.sqrt(np.mean(pcm8**2)) / (8000 / math.sqrt(2)))
    assert abs(level_db) < 0.5, level_db


def test_pcm16_start_must_state_the_negotiated_format() -> None:
    leg = SoftphoneProtocol(encoding="pcm16")
    problem = leg.parse(_start(ENCODINGS["mulaw"][1]))
    assert isinstance(problem, ev.ProtocolProblem) and problem.kind == "bad_start"
    mulaw_leg = SoftphoneProtocol(encoding="mulaw")
    problem = mulaw_leg.parse(_start(ENCODINGS["pcm16"][1]))
    assert isinstance(problem, ev.ProtocolProblem) and problem.kind == "bad_start"


def test_pcm16_playback_is_three_times_each_chunk_and_clear_resets_the_filter() -> None:
    leg = SoftphoneProtocol(encoding="pcm16")
    leg.parse(_start(ENCODINGS["pcm16"][1]))
    loud = audioop.lin2ulaw(_tone(1000, 160, 8000, 20000).tobytes(), 2)
    for size in (160, 37, 400):
        frame = json.loads(leg.serialise(PlayAudio(b64encode((loud * 3)[:size]).decode())))
        assert frame["event"] == "media"
        assert len(b64decode(frame["media"]["payload"])) == 2 * 3 * size
    mark = json.loads(leg.serialise(PlayMark("m1")))
    assert mark == {"event": "mark", "streamSid": "MZ1", "mark": {"name": "m1"}}
    # Without the reset the interpolator's tail of the loud reply would open the next
    # (silent) one; after a clear the next reply starts clean.
    assert json.loads(leg.serialise(ClearPlayback()))["event"] == "clear"
    silence = b64encode(b"\xff" * 160).decode()
    after = b64decode(json.loads(leg.serialise(PlayAudio(silence)))["media"]["payload"])
    assert np.abs(np.frombuffer(after, dtype="<i2")).max() < 8
    leaky = SoftphoneProtocol(encoding="pcm16")
    leaky.parse(_start(ENCODINGS["pcm16"][1]))
    leaky.serialise(PlayAudio(b64encode(loud).decode()))
    tail = b64decode(json.loads(leaky.serialise(PlayAudio(silence)))["media"]["payload"])
    assert np.abs(np.frombuffer(tail, dtype="<i2")).max() > 1000  # what the reset removes


@pytest.mark.e2e
async def test_the_handshake_negotiates_the_encoding(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    env = {"OPENAI_API_KEY": "sk-neg", "BRIDGE_OPERATOR_TOKEN": token,
           "BRIDGE_SOFTPHONE_AUDIO": "pcm16"}
    async with RealtimeSimulator(script=["agent_short"], api_key="sk-neg") as sim:
        async with LocalBridge(sim.url, env=env) as bridge:
            async with httpx.AsyncClient(base_url=bridge.base_url) as client:
                await client.post("/login", data={"token": token})
                grants = [(await client.post("/softphone/ticket")).json() for _ in range(3)]
                cookie = {"Cookie": f"{COOKIE_NAME}={client.cookies[COOKIE_NAME]}"}
            base = f"ws://127.0.0.1:{bridge.port}/softphone/ws?ticket="
            picked = []
            for grant, offer in zip(grants[:2], (["softphone.mulaw", "softphone.pcm16"],
                                                  ["softphone.mulaw"]), strict=True):
                async with connect(base + grant["ticket"], additional_headers=cookie,
                                   subprotocols=offer) as ws:  # type: ignore[arg-type]
                    picked.append(ws.subprotocol)
            with pytest.raises(InvalidStatus) as refused:
                async with connect(base + grants[2]["ticket"], additional_headers=cookie,
                                   subprotocols=["opus"]):  # type: ignore[list-item]
                    pass
    # The setting wins when offered; otherwise what the page can do; else refused.
    assert picked == ["softphone.pcm16", "softphone.mulaw"]
    assert refused.value.response.status_code == 403
