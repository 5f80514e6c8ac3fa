"""No malformed Twilio frame ends a call, and none leaks to the model (issue 11, item 5).

A seeded generator (reproducible: the seed is in the test id) mutates valid Media
Streams frames thousands of ways: deep nesting, huge strings within
``BRIDGE_MAX_MESSAGE_BYTES``, wrong types, empty and invalid base64, unknown events,
non-object JSON, truncations, byte flips, forged marks, binary frames and bad UTF-8 (in
binary frames: a *text* frame with bad UTF-8 is a WebSocket protocol error that the
server must close with 1007, and Twilio never sends one).  They go into a live call over
a real socket while a second call holds a normal turn.  What the Realtime simulator
received is the judge: every event is a known client event, no append is empty or
invalid, and the simulator never had to answer with an ``error``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import random
from collections.abc import Callable
from typing import Any

import pytest

from bridge.core import events as ev
from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import ConnectionRecord, RealtimeSimulator
from bridge.realtime.dialects import dialect_for
from bridge.realtime.wire import RealtimeProtocol
from bridge.twilio.media import TwilioMediaProtocol

pytestmark = pytest.mark.e2e

API_KEY = "sk-hostile-frames-test"
MAX_BYTES = 65536
SID = "MZ" + "0" * 32
FRAMES = 3000
_CLIENT_TYPES = {
    "session.update", "input_audio_buffer.append", "input_audio_buffer.commit",
    "input_audio_buffer.clear", "conversation.item.create", "conversation.item.truncate",
    "response.create", "response.cancel",
}


def _valid_frames(rng: random.Random) -> list[dict[str, Any]]:
    audio = base64.b64encode(bytes(rng.randrange(256) for _ in range(160))).decode()
    return [
        {"event": "media", "sequenceNumber": "7", "streamSid": SID,
         "media": {"track": "inbound", "chunk": "3", "timestamp": "60", "payload": audio}},
        {"event": "mark", "sequenceNumber": "8", "streamSid": SID, "mark": {"name": "0:x:1"}},
        {"event": "dtmf", "streamSid": SID, "dtmf": {"track": "inbound_track", "digit": "5"}},
        {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    ]


_JUNK_VALUES: list[Any] = [None, True, 0, -1, 1e308, "", "x", [], {}, [[]], {"a": {}}]


def _nested(rng: random.Random) -> str:
    opener, closer = rng.choice([("[", "]"), ('{"a":', "}")])
    closed = rng.random() < 0.5
    most = (MAX_BYTES - 10) // (len(opener) + (len(closer) if closed else 0))
    depth = min(most, rng.choice([100, 1000, 5000, 20000, most]))
    return opener * depth + "1" + (closer * depth if closed else "")


def _huge_string(rng: random.Random) -> str:
    n = rng.randrange(1000, MAX_BYTES - 200)
    field = rng.choice(["event", "streamSid", "name", "payload"])
    if field == "event":
        return json.dumps({"event": "z" * n})
    if field == "name":
        return json.dumps({"event": "mark", "mark": {"name": "n" * n}})
    if field == "payload":  # not base64: a quote-free run of characters outside the alphabet
        return json.dumps({"event": "media", "media": {"payload": "!" * n}})
    return json.dumps({"event": "media", "streamSid": "S" * n, "media": {"payload": ""}})


def _wrong_types(rng: random.Random, frame: dict[str, Any]) -> str:
    mutated = json.loads(json.dumps(frame))
    path = rng.choice([("event",), ("media",), ("media", "payload"), ("media", "track"),
                       ("mark",), ("mark", "name"), ("dtmf", "digit"), ("streamSid",)])
    target = mutated
    for key in path[:-1]:
        if not isinstance(target.get(key), dict):
            target[key] = {}
        target = target[key]
    target[path[-1]] = rng.choice(_JUNK_VALUES)
    return json.dumps(mutated)


def _bad_base64(rng: random.Random) -> str:
    payload = rng.choice(["", "=", "====", "A", "AB", "abc", "!!!!", " ", "\n", "AAA\u00e9",
                          "A===", "//==x", base64.b64encode(b"\x00").decode()[:-1]])
    return json.dumps({"event": "media", "streamSid": SID,
                       "media": {"track": "inbound", "payload": payload}})


def _unknown_event(rng: random.Random) -> str:
    name = rng.choice(["", "STOP", "Stop", "start ", "medias", "clear", "closed", "\u0000",
                       "\ud7ff", "stop\u0000", "mark.", "🙂"])
    return json.dumps({"event": name, "streamSid": SID})


def _not_an_object(rng: random.Random) -> str:
    return rng.choice(["1", '"media"', "null", "true", "[]", '[{"event":"media"}]', "",
                       " ", "{", "}", '{"event":', "NaN", "-Infinity", "\ufeff{}"])


def _truncated(rng: random.Random, frame: dict[str, Any]) -> str:
    text = json.dumps(frame)
    return text[: rng.randrange(0, len(text))]


def _flipped(rng: random.Random, frame: dict[str, Any]) -> str:
    chars = list(json.dumps(frame))
    for _ in range(rng.randrange(1, 6)):
        chars[rng.randrange(len(chars))] = chr(rng.choice([0, 34, 44, 58, 91, 92, 93, 123, 125,
                                                           rng.randrange(32, 0x2FFF)]))
    return "".join(chars)


def _forged_mark(rng: random.Random) -> str:
    name = rng.choice(["", ":", "::", "0:item_x:99999999", "-1:a:b", "9" * 40 + ":i:1",
                       "1:item:-5", "x:y:z", "0:item:1e9", "0:" + "i" * 500 + ":1"])
    return json.dumps({"event": "mark", "streamSid": SID, "mark": {"name": name}})


def _binary(rng: random.Random, frame: dict[str, Any]) -> bytes:
    kind = rng.randrange(4)
    if kind == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randrange(0, 400)))
    if kind == 1:
        return b'{"event": "media", "media": {"payload": "\xff\xfe\xc3("}}'
    if kind == 2:
        return json.dumps(frame).encode()[: rng.randrange(1, 60)] + b"\x80\x80"
    return b"\xed\xa0\x80" + json.dumps(frame).encode()  # a UTF-8-encoded surrogate


def hostile_frames(seed: int, n: int) -> list[str | bytes]:
    rng = random.Random(seed)
    valid = _valid_frames(rng)
    makers: list[Callable[[], str | bytes]] = [
        lambda: _nested(rng),
        lambda: _wrong_types(rng, rng.choice(valid)),
        lambda: _bad_base64(rng),
        lambda: _unknown_event(rng),
        lambda: _not_an_object(rng),
        lambda: _truncated(rng, rng.choice(valid)),
        lambda: _flipped(rng, rng.choice(valid)),
        lambda: _forged_mark(rng),
        lambda: _binary(rng, rng.choice(valid)),
    ]
    frames: list[str | bytes] = []
    while len(frames) < n:
        # Huge strings are expensive to send: one in fifty.
        frame = _huge_string(rng) if rng.random() < 0.02 else rng.choice(makers)()
        if _is_a_real_stop(frame):
            continue  # a well-formed 'stop' legitimately ends the call
        frames.append(frame)
    return frames


def _is_a_real_stop(frame: str | bytes) -> bool:
    try:
        message = json.loads(frame)
    except (ValueError, RecursionError):
        return False
    return isinstance(message, dict) and message.get("event") == "stop"


def assert_model_got_only_valid_events(record: ConnectionRecord) -> int:
    appends = 0
    for event in record.received_events():
        kind = event.get("type")
        assert kind in _CLIENT_TYPES, f"unexpected event reached the model: {str(event)[:200]}"
        if kind == "input_audio_buffer.append":
            audio = event.get("audio")
            assert isinstance(audio, str) and audio, "an empty append reached the model"
            assert base64.b64decode(audio, validate=True), "an append with no audio"
            appends += 1
    errors = record.sent_events("error")
    assert not errors, f"the model had to reject events: {errors[:3]}"
    return appends


def test_parsers_turn_any_garbage_into_a_protocol_problem() -> None:
    """The defects the live test first found, at the parser level (both wire modules)."""
    twilio = TwilioMediaProtocol()
    for text in ("[" * 100_000, '{"a":' * 50_000 + "1" + "}" * 50_000):
        assert isinstance(twilio.parse(text), ev.ProtocolProblem)
    for payload in ("", "=", "AAA\u00e9", "!!!!"):
        frame = json.dumps({"event": "media", "streamSid": SID,
                            "media": {"track": "inbound", "payload": payload}})
        assert isinstance(twilio.parse(frame), ev.ProtocolProblem), payload
    model = RealtimeProtocol(dialect_for("ga"), "passthrough")
    for text in ("[" * 100_000, '{"type":' * 50_000, "\x00", '{"type": 7}'):
        assert isinstance(model.parse(text), ev.ProtocolProblem)


@pytest.mark.parametrize("seed", [11, 2027])
async def test_thousands_of_hostile_frames_never_end_a_live_call(seed: int) -> None:
    frames = hostile_frames(seed, FRAMES)
    assert sum(isinstance(f, bytes) for f in frames) > 100  # binary frames are in the mix
    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    env = {"OPENAI_API_KEY": API_KEY, "BRIDGE_MAX_MESSAGE_BYTES": str(MAX_BYTES)}
    async with sim, LocalBridge(sim.url, env=env) as bridge:
        # The hostile caller is a real, started call that asks a question after the
        # barrage and must get its answer; the good call runs a normal turn meanwhile.
        hostile = await bridge.place_call(script=[(6500, "caller_question")],
                                          hangup_at_ms=12500)
        good = await bridge.place_call(script=[(300, "caller_question")], hangup_at_ms=7000)
        hostile_run = asyncio.ensure_future(hostile.run())
        good_run = asyncio.ensure_future(good.run())
        await sim.wait_for(lambda: sim.connection_count == 2 and all(
            c.session is not None and c.received_events("session.update")
            for c in sim.connections), timeout=5)
        for i, frame in enumerate(frames):
            await hostile.send_raw(frame)
            if i % 50 == 0:
                await asyncio.sleep(0)  # let the callers' clocks tick
            assert not hostile.closed, (
                f"the call ended at hostile frame {i} ({len(frame)} bytes): {frame[:200]!r}",
                hostile.result.close_code, hostile.result.close_reason)
        good_result = await good_run
        hostile_result = await hostile_run
        status, _ = await bridge.post_webhook("/twiml", {}, signed=False)
        assert status == 403  # the process is up and still checking signatures
        metrics = bridge.services.metrics
        disconnected = metrics.value("bridge_calls_ended_total", {"reason": "caller_disconnected"})
        assert disconnected == 0

    assert good_result.closed_by == "caller", (good_result.close_code, good_result.close_reason)
    assert load_clip("agent_short") in good_result.heard
    assert hostile_result.closed_by == "caller", (
        hostile_result.close_code, hostile_result.close_reason)
    assert load_clip("agent_short") in hostile_result.heard  # answered after the barrage
    assert sim.connection_count == 2
    for record in sim.connections:
        assert assert_model_got_only_valid_events(record) > 100
    # The session counted the garbage it ignored.
    assert metrics.value("bridge_bad_frames_total") >= FRAMES // 2


def test_generator_is_deterministic_and_varied() -> None:
    a, b = hostile_frames(5, 500), hostile_frames(5, 500)
    assert a == b
    kinds = set()
    for frame in a:
        try:
            message = json.loads(frame)
        except (ValueError, RecursionError):
            kinds.add("unparseable")
            continue
        kinds.add(type(message).__name__)
    assert {"unparseable", "dict", "list"} <= kinds
    # Invalid base64 really is invalid.
    with pytest.raises(binascii.Error):
        base64.b64decode("!!!!", validate=True)
