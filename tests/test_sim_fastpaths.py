"""The simulators' cheap paths give exactly what the general paths give.

The load generator takes shortcuts (``audioop`` VAD levels, appends sliced out of the JSON
text and handled as they are parsed, writes through websockets' sans-I/O layer); these
tests pin each one to the plain computation it replaces, on the bundled clips and on audio
placed right at the thresholds.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import warnings

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.realtime_server import RealtimeSimulator, _plain_append, _Session
from bridge.devtools.sim.vad import EnergyVad
from bridge.devtools.sim.ws_fast import send_now

pytestmark = pytest.mark.e2e

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

CLIPS = ("caller_question", "caller_thanks", "caller_interrupt", "agent_short")


def _exact_level(window: bytes, n: int) -> float:
    """The measurement every window used to get: float32 mean square via numpy."""
    frame = np.frombuffer(window, dtype=np.int16).reshape(1, n).astype(np.float32)
    return float(np.einsum("ij,ij->i", frame, frame)[0] * (1.0 / (n * 32768.0 * 32768.0)))


def _windows(rate: int) -> list[bytes]:
    """Windows from the clips at many gains, plus noise a hair either side of thresholds."""
    n = rate // 50
    rng = random.Random(3)
    out: list[bytes] = []
    for name in CLIPS:
        pcm = np.frombuffer(audioop.ulaw2lin(load_clip(name), 2), dtype=np.int16)
        if rate != 8000:
            pcm = np.repeat(pcm, rate // 8000)
        for _ in range(4):
            gain = 10 ** (rng.uniform(-45.0, 0.0) / 20)
            scaled = np.clip(pcm * gain, -32768, 32767).astype(np.int16).tobytes()
            out += [scaled[i : i + 2 * n] for i in range(0, len(scaled) - 2 * n + 1, 2 * n)]
    noise = np.random.default_rng(5).standard_normal(n)
    noise /= np.sqrt(np.mean(noise**2))
    for dbfs in np.arange(-81.0, -9.0, 0.01):
        level = np.round(noise * 32768 * 10 ** (dbfs / 20))
        out.append(np.clip(level, -32768, 32767).astype(np.int16).tobytes())
    return out


@pytest.mark.parametrize("rate", [8000, 24000])
@pytest.mark.parametrize("threshold", [0.0, 0.37, 0.5, 1.0])
def test_vad_level_decides_like_the_exact_measurement(rate: int, threshold: float) -> None:
    vad = EnergyVad(sample_rate=rate, threshold=threshold)
    measured_exactly = 0
    for window in _windows(rate):
        exact = _exact_level(window, vad.window)
        level = vad._level(window)
        for limit in (vad._on_power, vad._cont_power):
            assert (level >= limit) == (exact >= limit)
        if audioop.rms(window, 2) in vad._rms_to_measure:
            measured_exactly += 1
            assert level == exact
    assert measured_exactly > 0  # the noise sweep reaches the thresholds


def test_vad_events_do_not_depend_on_how_audio_is_cut() -> None:
    """Partial windows carry over: odd-sized feeds find the same boundaries."""
    pcm = audioop.ulaw2lin(load_clip("caller_question") + b"\xff" * 8000, 2)
    whole = EnergyVad(sample_rate=8000).feed(pcm)
    cut = EnergyVad(sample_rate=8000)
    events = []
    sizes = [2, 98, 320, 1000, 6]
    pos = 0
    for i in range(10_000):
        if pos >= len(pcm):
            break
        step = sizes[i % len(sizes)]
        events += cut.feed(pcm[pos : pos + step])
        pos += step
    assert [e.kind for e in whole] == ["started", "stopped"]
    assert events == whole


def test_plain_append_matches_the_json_path() -> None:
    audio = bytes(range(256)) * 2
    payload = base64.b64encode(audio).decode()
    for text in (
        json.dumps({"type": "input_audio_buffer.append", "audio": payload}),
        json.dumps({"type": "input_audio_buffer.append", "audio": payload}, separators=(",", ":")),
        json.dumps({"type": "input_audio_buffer.append", "audio": ""}),
    ):
        got = _plain_append(text)
        ev = json.loads(text)
        assert got == (ev["audio"], base64.b64decode(ev["audio"], validate=True))


@pytest.mark.parametrize(
    "text",
    [
        '{"type": "input_audio_buffer.append", "audio": "AAAA", "event_id": "e1"}',
        '{"audio": "AAAA", "type": "input_audio_buffer.append"}',
        '{"type": "input_audio_buffer.append", "audio": "AA\\u0041A"}',
        '{"type": "input_audio_buffer.append", "audio": "not base64!"}',
        '{"type": "input_audio_buffer.append", "audio": "AAA"}',
        '{"type": "input_audio_buffer.append", "audio": "AA\nAA"}',
        '{"type": "input_audio_buffer.append", "audio": "AAAA"} ',
        b'{"type": "input_audio_buffer.append", "audio": "AAAA"}',
    ],
)
def test_anything_but_a_plain_append_takes_the_general_path(text: str | bytes) -> None:
    assert _plain_append(text) is None


async def test_send_now_keeps_order_with_send_and_declines_when_closing() -> None:
    received: list[str | bytes] = []
    done = asyncio.Event()

    async def handler(ws: ServerConnection) -> None:
        async for message in ws:
            received.append(message)
        done.set()

    async with serve(handler, "127.0.0.1", 0) as server:
        port = next(iter(server.sockets)).getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}") as ws:
            for i in range(50):
                if i % 3:
                    assert send_now(ws, f"m{i}")
                else:
                    await ws.send(f"m{i}")
            assert send_now(ws, b"\x00\x01")
            ws.paused = True  # as if the transport had asked to stop writing
            assert not send_now(ws, "held back")
            ws.paused = False
        assert not send_now(ws, "after close")
        await asyncio.wait_for(done.wait(), 5)
    assert received == [f"m{i}" for i in range(50)] + [b"\x00\x01"]


async def test_appends_handled_on_arrival_keep_message_order(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A burst of appends whose VAD events must be sent, then other events, sent without
    waiting: the simulator answers in the order the messages were sent."""
    taken = 0
    receive_now = _Session.receive_now

    def counting(self: _Session, text: str) -> bool:
        nonlocal taken
        handled = receive_now(self, text)
        taken += handled
        return handled

    monkeypatch.setattr(_Session, "receive_now", counting)
    session = {
        "type": "realtime",
        "audio": {"input": {"format": {"type": "audio/pcmu"}, "turn_detection": {
            "type": "server_vad", "silence_duration_ms": 200, "create_response": False}}},
    }
    speech = load_clip("caller_thanks") + b"\xff" * 4000
    sent: list[str] = []
    async with RealtimeSimulator() as sim, connect(sim.url) as ws:
        json.loads(await ws.recv())  # session.created
        await ws.send(json.dumps({"type": "session.update", "session": session}))
        assert json.loads(await ws.recv())["type"] == "session.updated"
        for _ in range(2):
            for i in range(0, len(speech), 160):
                chunk = base64.b64encode(speech[i : i + 160]).decode()
                await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
                sent.append("input_audio_buffer.append")
            await ws.send(json.dumps({"type": "conversation.item.retrieve", "item_id": "nope"}))
            sent.append("conversation.item.retrieve")
        types: list[str] = []
        while types.count("error") < 2:
            types.append(json.loads(await asyncio.wait_for(ws.recv(), 5))["type"])
        assert [r.event["type"] for r in sim.last_connection.received][1:] == sent
    turn = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped",
            "input_audio_buffer.committed", "conversation.item.added",
            "conversation.item.done"]
    first = types.index("error") + 1
    assert first > 1 and types[:first] == turn * (first // len(turn)) + ["error"]
    assert types[first:] == types[:first]  # each round: its turns, then the retrieve's error
    assert taken > 0
