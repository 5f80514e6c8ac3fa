"""TwiML documents the bridge answers Twilio with, built by the ``twilio`` library.

We never format TwiML by hand: the library escapes attribute values and text, so a
caller ID such as ``"<sip:x@y>"`` cannot break the document or inject verbs.  What the
library does *not* do is enforce Twilio's own limits, so this module adds them:

* ``<Stream url>`` must be a WebSocket URL and "does not support query string
  parameters" (PROTOCOLS.md A1); data travels in ``<Parameter>`` instead.
* each ``<Parameter>`` name + value must be under 500 characters combined; values that
  come from the outside world (``From``, ``To``) are truncated to fit rather than making
  Twilio reject the whole document and drop the call.
* characters that XML 1.0 cannot carry at all (most C0 control characters) are removed,
  since ElementTree would emit them verbatim and produce a document Twilio cannot parse.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from twilio.twiml.voice_response import VoiceResponse

__all__ = [
    "PARAM_AGENT",
    "PARAM_CALL_SID",
    "PARAM_FROM",
    "PARAM_TO",
    "PARAM_TOKEN",
    "MAX_PARAMETER_CHARS",
    "DEFAULT_BUSY_MESSAGE",
    "busy_twiml",
    "connect_stream_twiml",
    "dial_twiml",
    "hangup_twiml",
    "is_transfer_target",
]

# <Parameter> names shared by the webhook that writes them and the stream's ``start``
# handler that reads them from ``customParameters``.
PARAM_FROM = "From"
PARAM_TO = "To"
PARAM_CALL_SID = "CallSid"
PARAM_TOKEN = "streamToken"
PARAM_AGENT = "agent"

#: Twilio: "each name+value must be under 500 characters combined" -> at most 499.
MAX_PARAMETER_CHARS = 499

DEFAULT_BUSY_MESSAGE = (
    "Sorry, all of our lines are busy right now. Please call again in a few minutes. Goodbye."
)

# Characters not allowed in an XML 1.0 document (C0 controls except tab/LF/CR, lone
# surrogates, U+FFFE/U+FFFF).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
_E164 = re.compile(r"\+[1-9][0-9]{1,14}")
_SIP = re.compile(r"sips?:[^\s<>\"]+", re.IGNORECASE)


def _xml_safe(text: str) -> str:
    return _XML_INVALID.sub("", text)


def connect_stream_twiml(
    stream_url: str,
    parameters: Mapping[str, str],
    status_callback: str | None = None,
) -> str:
    """``<Connect><Stream>`` TwiML that opens the bidirectional Media Stream to the bridge.

    ``<Connect>`` (not ``<Start>``) because only a bidirectional stream lets us play the
    model's audio back and ``clear`` it on barge-in; the call stays on the stream until our
    WebSocket closes, after which Twilio ends the call (no verb follows).

    ``parameters`` (e.g. From, To, CallSid, the stream token, the agent name) arrive in
    the ``start`` message's ``customParameters``.  Values are truncated so that each
    name + value stays under Twilio's 500-character limit; a name that is empty or by
    itself too long is a programming error and raises :class:`ValueError`.  Keep the
    stream token short (it is ~100 chars), so truncation never reaches it in practice.

    ``status_callback`` receives ``stream-started`` / ``stream-stopped`` / ``stream-error``
    events by POST.
    """
    parts = urlsplit(stream_url)
    if parts.scheme not in ("wss", "ws") or not parts.netloc:
        # Twilio only connects to wss://; ws:// is accepted for local simulators.
        raise ValueError(f"stream URL must be an absolute wss:// URL, got {stream_url!r}")
    if parts.query or parts.fragment:
        raise ValueError(
            "stream URL must not carry a query string (Twilio drops it); "
            "pass data as <Parameter> instead"
        )
    response = VoiceResponse()
    connect = response.connect()
    stream = connect.stream(
        url=stream_url,
        status_callback=status_callback,
        status_callback_method="POST" if status_callback else None,
    )
    for name, value in parameters.items():
        clean_name = _xml_safe(name)
        if not clean_name or len(clean_name) >= MAX_PARAMETER_CHARS:
            raise ValueError(f"<Parameter> name must be 1..{MAX_PARAMETER_CHARS - 1} characters")
        room = MAX_PARAMETER_CHARS - len(clean_name)
        stream.parameter(name=clean_name, value=_xml_safe(value)[:room])
    return str(response)


def busy_twiml(message: str | None = DEFAULT_BUSY_MESSAGE) -> str:
    """TwiML that turns a caller away politely when the bridge is at capacity.

    Default: ``<Say>`` + ``<Hangup/>``.  We chose to answer and explain because a caller
    who hears a spoken "all lines are busy, call back in a few minutes" knows what
    happened and what to do, whereas a busy tone looks like a broken number.  The cost is a
    few seconds of billed call time, accepted for the better experience.

    ``message=None`` gives ``<Reject reason="busy"/>`` instead: the call is never answered
    (not billed; the caller hears a busy signal).  Prefer it under an overload or abuse
    spike, when every answered second counts.
    """
    response = VoiceResponse()
    if message is None:
        response.reject(reason="busy")
        return str(response)
    response.say(_xml_safe(message))
    response.hangup()
    return str(response)


def is_transfer_target(target: str) -> bool:
    """True for an E.164 number (``+15551234567``) or a ``sip:``/``sips:`` URI."""
    return bool(_E164.fullmatch(target) or _SIP.fullmatch(target))


def dial_twiml(target: str, *, caller_id: str | None = None) -> str:
    """``<Dial>`` TwiML that transfers the live call to a person or a PBX.

    Used with ``calls(sid).update(twiml=...)``: replacing the call's TwiML ends the Media
    Stream (Twilio sends ``stop`` and closes the socket) and bridges the caller to
    ``target``.  A SIP target needs the ``<Sip>`` noun -- a bare ``sip:`` URI as ``<Dial>``
    text would be dialled as a (garbage) phone number -- so we pick the noun here.
    ``caller_id`` must be a Twilio number or verified caller ID; by default Twilio uses the
    original caller's number for inbound calls.
    """
    if not is_transfer_target(target):
        raise ValueError(
            f"transfer target {target!r} is not an E.164 number (+15551234567) or sip: URI"
        )
    response = VoiceResponse()
    dial = response.dial(caller_id=caller_id)
    if _E164.fullmatch(target):
        dial.number(target)
    else:
        dial.sip(target)
    return str(response)


def hangup_twiml() -> str:
    """``<Response><Hangup/></Response>``: end the call, e.g. as the webhook answer when
    a call must not be bridged (bad signature in a lenient mode, unknown agent)."""
    response = VoiceResponse()
    response.hangup()
    return str(response)
