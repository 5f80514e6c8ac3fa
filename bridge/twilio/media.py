"""Twilio Media Streams messages: parse what Twilio sends, build what we send back.

Parsing is strict about the fields the bridge relies on and lenient about
everything else, because Twilio adds fields over time.  Every rejection is a
:class:`MediaProtocolError` whose message names the event and the missing or
malformed field, so a log line is enough to diagnose a bad peer.
"""

from __future__ import annotations

import json
from typing import Any

from bridge.core.stream import StreamInfo

__all__ = ["StreamInfo", "MediaProtocolError"]


class MediaProtocolError(ValueError):
    """A frame that does not follow the Media Streams protocol."""




def decode_frame(frame: str | bytes) -> dict[str, Any]:
    """Decode one WebSocket frame into a message dict with a string ``event``."""
    try:
        message = json.loads(frame)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MediaProtocolError(f"frame is not JSON ({exc.__class__.__name__})") from None
    if not isinstance(message, dict):
        raise MediaProtocolError("frame is JSON but not an object")
    event = message.get("event")
    if not isinstance(event, str):
        raise MediaProtocolError("message has no string 'event' field")
    return message


def _section(message: dict[str, Any], name: str) -> dict[str, Any]:
    section = message.get(name)
    if not isinstance(section, dict):
        raise MediaProtocolError(f"'{message.get('event')}' message has no '{name}' object")
    return section


def parse_start(message: dict[str, Any]) -> StreamInfo:
    start = _section(message, "start")
    stream_sid = start.get("streamSid") or message.get("streamSid")
    call_sid = start.get("callSid")
    if not isinstance(stream_sid, str) or not stream_sid:
        raise MediaProtocolError("'start' message has no streamSid")
    if not isinstance(call_sid, str) or not call_sid:
        raise MediaProtocolError("'start' message has no start.callSid")
    media_format = start.get("mediaFormat") or {}
    if not isinstance(media_format, dict):
        raise MediaProtocolError("'start' message has a malformed start.mediaFormat")
    encoding = str(media_format.get("encoding", "audio/x-mulaw"))
    try:
        sample_rate = int(media_format.get("sampleRate", 8000))
    except (TypeError, ValueError):
        raise MediaProtocolError("'start' message has a non-numeric sampleRate") from None
    if encoding != "audio/x-mulaw" or sample_rate != 8000:
        raise MediaProtocolError(
            f"unsupported media format {encoding} at {sample_rate} Hz "
            "(Twilio streams are audio/x-mulaw at 8000 Hz)"
        )
    params = start.get("customParameters") or {}
    if not isinstance(params, dict):
        raise MediaProtocolError("'start' message has malformed customParameters")
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


def media_payload(message: dict[str, Any]) -> str:
    """The base64 payload of an inbound ``media`` message (not decoded: passthrough)."""
    media = _section(message, "media")
    payload = media.get("payload")
    if not isinstance(payload, str):
        raise MediaProtocolError("'media' message has no string media.payload")
    track = media.get("track", "inbound")
    if track not in ("inbound", "inbound_track"):
        raise MediaProtocolError(f"'media' message on unexpected track {track!r}")
    return payload


def mark_name(message: dict[str, Any]) -> str:
    name = _section(message, "mark").get("name")
    if not isinstance(name, str):
        raise MediaProtocolError("'mark' message has no string mark.name")
    return name


def dtmf_digit(message: dict[str, Any]) -> str:
    digit = _section(message, "dtmf").get("digit")
    if not isinstance(digit, str) or len(digit) != 1 or digit not in "0123456789*#ABCD":
        raise MediaProtocolError(f"'dtmf' message has an invalid digit {digit!r}")
    return digit


# -- what we send ------------------------------------------------------------


def media_message(stream_sid: str, payload_b64: str) -> dict[str, Any]:
    return {"event": "media", "streamSid": stream_sid, "media": {"payload": payload_b64}}


def mark_message(stream_sid: str, name: str) -> dict[str, Any]:
    return {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}


def clear_message(stream_sid: str) -> dict[str, Any]:
    return {"event": "clear", "streamSid": stream_sid}
