"""Twilio Media Streams on the wire: frames to core events, core actions to frames.

This is the only module that knows the Media Streams message shapes.  Parsing
is strict about the fields the bridge relies on and lenient about everything
else, because Twilio adds fields over time.  Nothing here raises on a bad
frame: garbage becomes a :class:`~bridge.core.events.ProtocolProblem` whose
detail names the event and the missing or malformed field (never the frame's
content, which may hold a stream token), and the call goes on.

The browser softphone speaks the same messages, so it uses this protocol too.
"""

from __future__ import annotations

import binascii
import json
from typing import Any

from bridge.core import events as ev
from bridge.core.actions import Action, ClearPlayback, PlayAudio, PlayMark, ToCaller
from bridge.core.stream import StreamInfo
from bridge.jsoncodec import JsonLoads

__all__ = ["StreamInfo", "TwilioMediaProtocol", "parse_start"]

_DIGITS = frozenset("0123456789*#ABCD")
_IGNORED = ev.LegIgnored("connected")


class _Malformed(Exception):
    """Internal: one field is wrong; becomes a ProtocolProblem."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind
        self.detail = detail


def _problem(kind: str, detail: str) -> ev.ProtocolProblem:
    return ev.ProtocolProblem("caller", kind, detail)


def _section(message: dict[str, Any], name: str) -> dict[str, Any]:
    section = message.get(name)
    if not isinstance(section, dict):
        event = str(message.get("event"))[:40]
        raise _Malformed("missing_field", f"'{event}' message has no '{name}' object")
    return section


def parse_start(message: dict[str, Any]) -> StreamInfo:
    """The call a ``start`` message describes; raises ``_Malformed`` when it cannot."""
    start = _section(message, "start")
    stream_sid = start.get("streamSid") or message.get("streamSid")
    call_sid = start.get("callSid")
    if not isinstance(stream_sid, str) or not stream_sid:
        raise _Malformed("bad_start", "'start' message has no streamSid")
    if not isinstance(call_sid, str) or not call_sid:
        raise _Malformed("bad_start", "'start' message has no start.callSid")
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise _Malformed("bad_start", "'start' message has a malformed start.mediaFormat")
    encoding = str(media_format.get("encoding", "audio/x-mulaw"))
    try:
        sample_rate = int(media_format.get("sampleRate", 8000))
    except (TypeError, ValueError, OverflowError):
        raise _Malformed("bad_start", "'start' message has a non-numeric sampleRate") from None
    if encoding != "audio/x-mulaw" or sample_rate != 8000:
        raise _Malformed(
            "bad_start",
            f"unsupported media format {encoding[:40]} at {sample_rate} Hz "
            "(Twilio streams are audio/x-mulaw at 8000 Hz)",
        )
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise _Malformed("bad_start", "'start' message has malformed customParameters")
    tracks = start.get("tracks") or ["inbound"]
    return StreamInfo(
        stream_sid=stream_sid,
        call_sid=call_sid,
        account_sid=str(start.get("accountSid", "")),
        tracks=tuple(str(t) for t in tracks) if isinstance(tracks, list) else ("inbound",),
        encoding=encoding,
        sample_rate=sample_rate,
        custom_parameters={str(k): str(v) for k, v in params.items()},
    )


def _media(message: dict[str, Any]) -> ev.CallerAudio | ev.ProtocolProblem:
    media = _section(message, "media")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise _Malformed("missing_field", "'media' message has no string media.payload")
    track = media.get("track", "inbound")
    if track not in ("inbound", "inbound_track"):
        raise _Malformed("bad_track", f"'media' message on unexpected track {str(track)[:40]!r}")
    try:
        # strict_mode: the alphabet, padding only at the end, nothing after it, in C;
        # b64decode(validate=True) checks the same with a regex first, per frame.
        nbytes = len(binascii.a2b_base64(payload, strict_mode=True))
    except (binascii.Error, ValueError):
        raise _Malformed("bad_base64", "'media' message with invalid base64") from None
    if nbytes == 0:
        # Forwarding it would be an empty input_audio_buffer.append, which the API rejects.
        raise _Malformed("empty_audio", "'media' message with an empty payload")
    stamp = media.get("timestamp")
    if isinstance(stamp, str) and stamp.isdigit() and len(stamp) <= 12:
        return ev.CallerAudio(payload, nbytes, int(stamp))
    return ev.CallerAudio(payload, nbytes)


def _mark(message: dict[str, Any]) -> ev.MarkPlayed:
    name = _section(message, "mark").get("name")
    if not isinstance(name, str):
        raise _Malformed("missing_field", "'mark' message has no string mark.name")
    return ev.MarkPlayed(name)


def _dtmf(message: dict[str, Any]) -> ev.DigitPressed:
    digit = _section(message, "dtmf").get("digit")
    if not isinstance(digit, str) or len(digit) != 1 or digit not in _DIGITS:
        raise _Malformed("bad_digit", f"'dtmf' message has an invalid digit {str(digit)[:8]!r}")
    return ev.DigitPressed(digit)


class TwilioMediaProtocol:
    """One Media Stream's wire protocol (parse in, serialise out).

    Per stream because outbound messages carry the ``streamSid`` that the
    stream's own ``start`` announced."""

    name = "twilio"

    def __init__(self, loads: JsonLoads = json.loads) -> None:
        self.stream_sid = ""
        self._sid_json = '""'
        self._loads = loads

    def parse(self, frame: str | bytes) -> ev.CallerEvent | ev.ProtocolProblem:
        """One frame as a core event; never raises."""
        try:
            message = self._loads(frame)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            # RecursionError: thousands of nested brackets; within the frame size limit,
            # still garbage rather than a reason to drop the call.
            return _problem("bad_json", f"frame is not JSON ({exc.__class__.__name__})")
        if not isinstance(message, dict):
            return _problem("bad_json", "frame is JSON but not an object")
        event = message.get("event")
        try:
            if event == "media":
                return _media(message)
            if event == "mark":
                return _mark(message)
            if event == "start":
                info = parse_start(message)
                self.stream_sid = info.stream_sid
                self._sid_json = json.dumps(info.stream_sid)
                return ev.StreamStarted(info)
            if event == "dtmf":
                return _dtmf(message)
            if event == "stop":
                return ev.StreamStopped()
            if event == "connected":
                return _IGNORED
        except _Malformed as bad:
            return _problem(bad.kind, bad.detail)
        if not isinstance(event, str):
            return _problem("missing_field", "message has no string 'event' field")
        return _problem("unknown_event", f"ignoring unknown event {event[:40]!r}")

    def serialise(self, action: ToCaller) -> str:
        """The frame for one caller action.

        Audio is written directly: it goes out fifty times a second per call, the
        base64 payload needs no escaping, and the stream SID is JSON-encoded once."""
        kind = type(action)
        if kind is PlayAudio:
            return (
                '{"event": "media", "streamSid": '
                + self._sid_json
                + ', "media": {"payload": "'
                + action.payload  # type: ignore[union-attr]
                + '"}}'
            )
        if kind is PlayMark:
            name = json.dumps(action.name)  # type: ignore[union-attr]
            sid = self._sid_json
            return '{"event": "mark", "streamSid": ' + sid + ', "mark": {"name": ' + name + "}}"
        if kind is ClearPlayback:
            return '{"event": "clear", "streamSid": ' + self._sid_json + "}"
        raise TypeError(f"not a caller action: {action!r}")

    def observe(self, action: Action) -> str | None:
        """Twilio gets nothing but audio, marks and clears."""
        return None
