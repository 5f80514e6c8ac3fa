"""What the call core asks its driver to do.

The core never performs I/O: every effect is one of these values, returned in
order from ``CallSession.handle``.  A driver (the live relay, the tape replayer,
a unit test) carries them out in that order.

Actions addressed to a peer are typed, not JSON: each wire protocol has one
serialiser (``bridge.twilio.wire`` for Media Streams, ``bridge.realtime.wire``
for the Realtime API), so the core knows no field names of either protocol
and a new caller leg or model backend is one new serialiser, not a change here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.core.stream import StreamInfo

# ------------------------------------------------------------ to the caller leg


@dataclass(frozen=True, slots=True)
class PlayAudio:
    """Queue agent audio for playback: base64 μ-law 8 kHz."""

    payload: str


@dataclass(frozen=True, slots=True)
class PlayMark:
    """Queue a mark: the leg echoes it back when the audio queued before it has played."""

    name: str


@dataclass(frozen=True, slots=True)
class ClearPlayback:
    """Drop everything queued; the leg echoes the pending marks at once (discarded)."""


# --------------------------------------------------------- to the model backend


@dataclass(frozen=True, slots=True)
class ConfigureSession:
    """Set up (or re-send) the model session for this call's agent."""

    agent: Any  # bridge.config.AgentConfig
    audio_mode: str
    model: str
    tools: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class AppendAudio:
    """Caller audio for the model's input buffer, base64 in the model's format."""

    payload: str


@dataclass(frozen=True, slots=True)
class AddUserText:
    """A user text item in the conversation (key presses, re-seeded caller turns)."""

    text: str


@dataclass(frozen=True, slots=True)
class AddAgentText:
    """An assistant text item (re-seeding what the agent said on a new session)."""

    text: str


@dataclass(frozen=True, slots=True)
class AddToolCall:
    """A past function call, re-seeded on a new session so its output has a home."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class AddToolOutput:
    call_id: str
    output: str


@dataclass(frozen=True, slots=True)
class TruncateItem:
    """Cut an agent item to what the caller heard."""

    item_id: str
    content_index: int
    audio_end_ms: int


@dataclass(frozen=True, slots=True)
class CreateResponse:
    """Ask the model to speak, optionally with one-off instructions."""

    instructions: str | None = None


@dataclass(frozen=True, slots=True)
class CancelResponse:
    pass


# ------------------------------------------------------------------ the driver


@dataclass(frozen=True, slots=True)
class AuthoriseStream:
    """The stream started: check its credentials, then feed back ``StreamAccepted``
    or ``StreamRefused``.  No model connection is made before."""

    info: StreamInfo


@dataclass(frozen=True, slots=True)
class ConnectModel:
    """Open (or adopt an already open) connection to the model backend."""


@dataclass(frozen=True, slots=True)
class PrepareStandby:
    """Open the next model session in the background (rollover before the session cap);
    report ``StandbyConnected``, then ``StandbyReady`` when it confirms its
    configuration, or ``StandbyFailed``."""


@dataclass(frozen=True, slots=True)
class ToStandby:
    """Send these model actions to the standby session (seeding it), in order."""

    actions: tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class SwitchToStandby:
    """Make the standby the model connection from now on; close the old one after."""


@dataclass(frozen=True, slots=True)
class DiscardStandby:
    """Close the standby unused."""


@dataclass(frozen=True, slots=True)
class RunTool:
    """Run a function tool the model called; report back with ``ToolFinished``."""

    call_id: str
    name: str
    arguments: str


@dataclass(frozen=True, slots=True)
class ControlCall:
    """Hang up or redirect the phone call through the phone network (Twilio REST).

    Emitted only once the agent's last words have actually played (their last
    mark echoed), so the caller never loses the end of a sentence.  The driver
    reports back with ``ControlFinished``."""

    kind: Literal["hang_up", "transfer"]
    call_sid: str
    target: str | None = None
    reason: str = ""


@dataclass(frozen=True, slots=True)
class TranscriptLine:
    """One settled turn: what the caller said, or what the caller *heard* the agent say.

    ``seq`` numbers the call's lines from 1, in the order they settled."""

    speaker: Literal["caller", "agent", "system"]
    text: str
    start_ms: int
    end_ms: int
    interrupted: bool = False
    item_id: str | None = None
    seq: int = 0


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
class Observed:
    """A moment on the call's timeline an operator wants to see live.

    ``kind`` is one of ``speech_started``, ``speech_stopped``, ``barge_in``
    (``heard_ms``, ``item_id``), ``agent_audio`` (first chunk of an item), ``tool_call``,
    ``tool_result``, ``dtmf``, ``turn_latency`` (``ms``: caller stopped → first agent
    audio sent).  Derived from the events, so tapes do not record it."""

    kind: str
    call_ms: int
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class WakeAt:
    """Feed ``TimerFired`` at ``at`` (the core's clock, ms) or soon after.

    Each one replaces the previous request: a driver keeps a single timer per call."""

    at: int


@dataclass(frozen=True, slots=True)
class EndCall:
    """Close both sides (each exactly once) for ``reason``; the call is over."""

    reason: str
    detail: str = ""


ToCaller = PlayAudio | PlayMark | ClearPlayback
ToModel = (
    ConfigureSession
    | AppendAudio
    | AddUserText
    | AddAgentText
    | AddToolCall
    | AddToolOutput
    | TruncateItem
    | CreateResponse
    | CancelResponse
)
ForDriver = (
    AuthoriseStream
    | ConnectModel
    | PrepareStandby
    | ToStandby
    | SwitchToStandby
    | DiscardStandby
    | RunTool
    | ControlCall
    | TranscriptLine
    | Usage
    | Notice
    | Observed
    | WakeAt
    | EndCall
)
Action = ToCaller | ToModel | ForDriver

TO_CALLER: tuple[type, ...] = (PlayAudio, PlayMark, ClearPlayback)
TO_MODEL: tuple[type, ...] = (
    ConfigureSession,
    AppendAudio,
    AddUserText,
    AddAgentText,
    AddToolCall,
    AddToolOutput,
    TruncateItem,
    CreateResponse,
    CancelResponse,
)
