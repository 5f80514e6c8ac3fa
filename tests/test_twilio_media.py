"""The Media Streams parser and serialiser: every message we handle, and garbage.

Whatever arrives, ``parse`` returns a value; a frame that breaks the protocol is
a ``ProtocolProblem`` with a stable kind, never an exception.
"""

from __future__ import annotations

import base64
import json

import pytest

from bridge.core import events as ev
from bridge.core.actions import ClearPlayback, PlayAudio, PlayMark
from bridge.twilio.media import TwilioMediaProtocol

SID = "MZ00000000000000000000000000000001"
START = {
    "event": "start",
    "sequenceNumber": "1",
    "start": {
        "accountSid": "AC1",
        "streamSid": SID,
        "callSid": "CA1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
        "customParameters": {"To": "+15550001111", "token": "secret-value"},
    },
    "streamSid": SID,
}
AUDIO = base64.b64encode(b"\xff" * 160).decode()


def parse(message: object) -> ev.Event:
    frame = message if isinstance(message, str | bytes) else json.dumps(message)
    return TwilioMediaProtocol().parse(frame)


def test_every_handled_message() -> None:
    assert parse({"event": "connected", "protocol": "Call", "version": "1.0.0"}) == ev.LegIgnored(
        "connected"
    )
    started = parse(START)
    assert isinstance(started, ev.StreamStarted)
    assert started.info.stream_sid == SID and started.info.call_sid == "CA1"
    assert started.info.custom_parameters == {"To": "+15550001111", "token": "secret-value"}
    media = {"event": "media", "streamSid": SID, "media": {"track": "inbound", "payload": AUDIO}}
    assert parse(media) == ev.CallerAudio(AUDIO, 160)
    assert parse({"event": "mark", "streamSid": SID, "mark": {"name": "g0.1:a:20"}}) == (
        ev.MarkPlayed("g0.1:a:20")
    )
    assert parse({"event": "dtmf", "dtmf": {"track": "inbound_track", "digit": "#"}}) == (
        ev.DigitPressed("#")
    )
    assert parse({"event": "stop", "stop": {"callSid": "CA1"}}) == ev.StreamStopped()


def _start(**fields: object) -> str:
    return json.dumps({"event": "start", "start": {"streamSid": SID, "callSid": "CA1", **fields}})


def _nested(depth: int) -> str:
    return "[" * depth + "]" * depth


@pytest.mark.parametrize(
    ("frame", "kind"),
    [
        ("not json", "bad_json"),
        (b"\xff\xfe", "bad_json"),
        (_nested(100_000), "bad_json"),
        ('{"event": "media", "media": {"payload": "' + "A" * 200_000 + '!"}}', "bad_base64"),
        ("[1, 2]", "bad_json"),
        ("null", "bad_json"),
        (json.dumps({"no_event": 1}), "missing_field"),
        (json.dumps({"event": 7}), "missing_field"),
        (json.dumps({"event": "teleport"}), "unknown_event"),
        (json.dumps({"event": "media"}), "missing_field"),
        (json.dumps({"event": "media", "media": []}), "missing_field"),
        (json.dumps({"event": "media", "media": {"payload": 5}}), "missing_field"),
        (json.dumps({"event": "media", "media": {"payload": ""}}), "empty_audio"),
        (json.dumps({"event": "media", "media": {"payload": "@@@"}}), "bad_base64"),
        (json.dumps({"event": "media", "media": {"payload": "QUJ"}}), "bad_base64"),
        (json.dumps({"event": "media", "media": {"payload": AUDIO, "track": "outbound"}}),
         "bad_track"),
        (json.dumps({"event": "mark", "mark": {"name": None}}), "missing_field"),
        (json.dumps({"event": "mark"}), "missing_field"),
        (json.dumps({"event": "dtmf", "dtmf": {"digit": "xx"}}), "bad_digit"),
        (json.dumps({"event": "dtmf", "dtmf": {"digit": 5}}), "bad_digit"),
        (json.dumps({"event": "start", "start": {"streamSid": SID}}), "bad_start"),
        (json.dumps({"event": "start", "start": {"callSid": "CA1"}}), "bad_start"),
        (_start(mediaFormat={"sampleRate": "x"}), "bad_start"),
        (_start(mediaFormat={"sampleRate": 1e400}), "bad_start"),
        (_start(mediaFormat={"encoding": "audio/L16"}), "bad_start"),
        (_start(customParameters=[1]), "bad_start"),
        (json.dumps({"event": "start", "start": "nope"}), "missing_field"),
    ],
)
def test_garbage_is_a_problem_value_never_an_exception(frame: str | bytes, kind: str) -> None:
    result = TwilioMediaProtocol().parse(frame)
    assert isinstance(result, ev.ProtocolProblem), result
    assert result.source == "caller" and result.kind == kind


def test_problems_never_quote_the_frame() -> None:
    """A bad start may still carry the stream token: details name fields, not values."""
    bad = dict(START, start={**START["start"], "mediaFormat": {"encoding": "x"}})  # type: ignore[dict-item]
    result = parse(bad)
    assert isinstance(result, ev.ProtocolProblem) and "secret-value" not in result.detail


def test_serialised_messages_are_the_documented_shapes() -> None:
    leg = TwilioMediaProtocol()
    weird = 'MZ"quoted\\sid'
    leg.parse(json.dumps({"event": "start", "start": {"streamSid": weird, "callSid": "CA1"}}))
    assert json.loads(leg.serialise(PlayAudio(AUDIO))) == {
        "event": "media", "streamSid": weird, "media": {"payload": AUDIO}
    }
    assert json.loads(leg.serialise(PlayMark('g1.2:item"x:40'))) == {
        "event": "mark", "streamSid": weird, "mark": {"name": 'g1.2:item"x:40'}
    }
    assert json.loads(leg.serialise(ClearPlayback())) == {"event": "clear", "streamSid": weird}
    assert leg.observe(PlayAudio(AUDIO)) is None
    with pytest.raises(TypeError):
        leg.serialise(ev.TimerFired())  # type: ignore[arg-type]


def test_orjson_decoder_gives_the_same_events() -> None:
    orjson = pytest.importorskip("orjson", reason="orjson is an optional codec")
    fast = TwilioMediaProtocol(orjson.loads)
    for frame in (json.dumps(START), _nested(100_000), "garbage"):
        assert type(fast.parse(frame)) is type(TwilioMediaProtocol().parse(frame))
