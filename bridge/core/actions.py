"""What the call core asks its driver to do.

The core never performs I/O: every effect is one of these values, returned in
order from each call into :class:`~bridge.core.session.CallSession`.  A driver
(the live relay, the tape replayer, a unit test) carries them out in that
order.  Keeping them plain data is what makes a call replayable bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.twilio.media import StreamInfo


@dataclass(frozen=True, slots=True)
class SendTwilio:
    """Send this message to Twilio (JSON text frame).

    ``wire`` is the frame already serialised, for the per-frame audio messages whose
    JSON the core can write more cheaply than a generic encoder; drivers send it as is.
    """

    message: dict[str, Any]
    wire: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class SendModel:
    """Send this client event to the Realtime server (JSON text frame); see ``SendTwilio.wire``."""

    event: dict[str, Any]
    wire: str | None = field(default=None, compare=False)


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """Twilio's ``start`` arrived.  The driver must authorise it (stream token) and
    then call ``accept_stream`` or ``end``: no model connection is made before."""

    info: StreamInfo


@dataclass(frozen=True, slots=True)
class ConnectModel:
    """Open (or adopt an already open) connection to the Realtime server."""


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run a function tool the model called; report back with ``tool_result``."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class CallControl:
    """End or redirect the phone call through Twilio's REST API.

    Emitted only once the agent's last words have actually played (their last
    mark echoed), so the caller never loses the end of a sentence."""

    kind: Literal["hang_up", "transfer"]
    call_sid: str
    target: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One settled turn: what the caller said, or what the caller *heard* the agent say."""

    speaker: Literal["caller", "agent", "system"]
    text: str
    start_ms: int
    end_ms: int
    interrupted: bool = False
    item_id: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage and audio time of one finished response."""

    response_id: str
    status: str
    usage: dict[str, Any] = field(default_factory=dict)
    audio_out_ms: int = 0
    audio_in_ms: int = 0  # caller audio forwarded since the previous response finished


@dataclass(frozen=True, slots=True)
class Notice:
    """Something worth logging: a protocol problem survived, a model error, a decision."""

    level: Literal["debug", "info", "warning", "error"]
    code: str
    message: str


@dataclass(frozen=True, slots=True)
class EndCall:
    """Close both sockets (each exactly once) for ``reason``; the call is over."""

    reason: str
    detail: str = ""


Action = (
    SendTwilio
    | SendModel
    | StreamStarted
    | ConnectModel
    | RunTool
    | CallControl
    | TranscriptLine
    | Usage
    | Notice
    | EndCall
)
