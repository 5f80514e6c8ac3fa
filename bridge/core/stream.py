"""What a caller leg tells the core about the call when its stream starts."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class StreamInfo:
    """The call a stream belongs to, in leg-neutral terms.

    Twilio fills it from the ``start`` message; a browser leg from its own
    session.  ``custom_parameters`` are the TwiML ``<Parameter>`` values (the
    called number, an agent name, the stream token), which the driver uses to
    choose the agent and to check the stream's credentials."""

    stream_sid: str
    call_sid: str
    account_sid: str = ""
    tracks: tuple[str, ...] = ("inbound",)
    encoding: str = "audio/x-mulaw"
    sample_rate: int = 8000
    custom_parameters: dict[str, str] = field(default_factory=dict)
