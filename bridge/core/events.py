"""Everything that can happen to a call, as small frozen values.

The core has one entry point, ``CallSession.handle(event, now)``.  The edges turn
what arrives on the wire into these values: the caller leg's parser (Twilio Media
Streams today, a browser next) produces the *caller* events, the model backend's
parser (the Realtime API today, a cascade pipeline next) produces the *model*
events, and the driver produces the rest (authorisation, tool results, timers).

The split mirrors ``h11`` and ``wsproto``: a peer that sends garbage is not an
error of ours, so a parser never raises into the core.  It returns a
:class:`ProtocolProblem` value, which the core counts, logs (throttled) and
survives.  A *driver* that misuses the core (feeds an event the core cannot
accept at all) is a bug in our code, and raises :class:`~bridge.core.errors.DriverError`.

Audio travels as base64 text, exactly as both wire protocols carry it, so the
passthrough path never decodes it; ``nbytes``/``samples`` carry its length so the
core can account for it without decoding either.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.core.stream import StreamInfo

# ------------------------------------------------------------------ caller leg


@dataclass(frozen=True, slots=True)
class LegOpened:
    """The caller's socket was accepted: its stream must start soon (``start_timeout_ms``)."""


@dataclass(frozen=True, slots=True)
class StreamStarted:
    """The caller leg's stream began (Twilio ``start``): who is calling, with what."""

    info: StreamInfo


@dataclass(frozen=True, slots=True)
class CallerAudio:
    """One chunk of caller audio: base64 μ-law 8 kHz, never empty (the parser drops those).

    ``timestamp_ms`` is the leg's own clock for the chunk (Twilio's ``media.timestamp``,
    ms since the stream began) when it has one: recordings place audio by it, since
    arrival times jitter."""

    payload: str
    nbytes: int
    timestamp_ms: int | None = None


@dataclass(frozen=True, slots=True)
class MarkPlayed:
    """The leg echoed a mark: the audio queued before it has played (or was cleared)."""

    name: str


@dataclass(frozen=True, slots=True)
class DigitPressed:
    """The caller pressed a key (``0-9 * # A-D``)."""

    digit: str


@dataclass(frozen=True, slots=True)
class StreamStopped:
    """The leg ended the stream on purpose (Twilio ``stop``: the caller hung up)."""


@dataclass(frozen=True, slots=True)
class CallerGone:
    """The caller's socket closed without a ``stop`` (network loss, abrupt hang-up)."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class LegIgnored:
    """A well-formed message the core has no use for (Twilio ``connected``)."""

    kind: str


# --------------------------------------------------------------- model backend


@dataclass(frozen=True, slots=True)
class ModelConnected:
    """The backend's connection is open and will accept actions."""


@dataclass(frozen=True, slots=True)
class ModelUnavailable:
    """Opening the backend failed.  ``retry`` is the backend's classification."""

    detail: str
    retry: Literal["now", "backoff", "never"] = "never"
    cause: str = "unreachable"


@dataclass(frozen=True, slots=True)
class ModelDisconnected:
    """The backend's connection closed under the call.

    ``retry`` is the backend's classification of the close (``now`` for the session
    cap or a restart, ``backoff`` for a fault, ``never`` for a fatal error);
    ``cause`` a short label for metrics and records."""

    code: int | None = None
    detail: str = ""
    retry: Literal["now", "backoff", "never"] = "backoff"
    cause: str = "closed"


@dataclass(frozen=True, slots=True)
class SessionConfigured:
    """The backend confirmed the session, with the audio formats it will use.

    ``mismatch`` is set by the backend when what it confirmed is not what the call
    needs (it knows what it asked for); the core then ends the call rather than
    play noise."""

    input_format: Any = None
    output_format: Any = None
    mismatch: str | None = None


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The backend heard the caller start speaking (the barge-in trigger)."""

    item_id: str | None = None
    audio_start_ms: int | None = None


@dataclass(frozen=True, slots=True)
class SpeechStopped:
    item_id: str | None = None
    audio_end_ms: int | None = None


@dataclass(frozen=True, slots=True)
class CallerTranscribed:
    """The final transcript of one caller turn."""

    item_id: str | None
    text: str


@dataclass(frozen=True, slots=True)
class ResponseStarted:
    response_id: str


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """A chunk of agent speech, base64 in the model's format.

    ``samples`` is its length on the model's timeline (8 kHz μ-law or 24 kHz PCM16),
    which is the unit ``conversation.item.truncate`` is measured in."""

    item_id: str
    response_id: str
    payload: str
    samples: int
    content_index: int = 0


@dataclass(frozen=True, slots=True)
class AgentAudioDone:
    item_id: str


@dataclass(frozen=True, slots=True)
class AgentTextDelta:
    """A piece of the transcript of what the agent is saying."""

    item_id: str
    delta: str


@dataclass(frozen=True, slots=True)
class AgentTextDone:
    item_id: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class AgentItemTruncated:
    """The backend cut an agent item after ``TruncateItem`` (the Realtime GA API answers
    with ``conversation.item.truncated``).

    ``text`` is the item's text as the backend now keeps it, i.e. what it takes the
    caller to have heard, when the backend knows that better than the core's estimate
    (the cascade maps heard milliseconds to words through each sentence's own audio
    length); None when it does not (the core's heard-share cut stands)."""

    item_id: str
    text: str | None = None


@dataclass(frozen=True, slots=True)
class ToolCallRequested:
    call_id: str
    name: str
    arguments: str
    response_id: str | None = None


@dataclass(frozen=True, slots=True)
class ResponseFinished:
    response_id: str
    status: str = ""
    usage: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelErrorReported:
    """An ``error`` event: ``code`` is the API's code (or type), ``event_id`` what it answers.

    ``fatal`` is set when the backend says the session cannot go on (a bad key, no
    quota): the core then stops using the model rather than reconnecting."""

    code: str
    message: str = ""
    event_id: str | None = None
    fatal: bool = False


@dataclass(frozen=True, slots=True)
class ModelIgnored:
    """A well-formed server event the core has no use for (``rate_limits.updated``...)."""

    kind: str


# ---------------------------------------------------------------------- driver


@dataclass(frozen=True, slots=True)
class StreamAccepted:
    """The driver checked the stream's credentials: go ahead, with this config if given."""

    config: Any = None  # bridge.core.config.SessionConfig


@dataclass(frozen=True, slots=True)
class StreamRefused:
    reason: str


@dataclass(frozen=True, slots=True)
class ToolFinished:
    """A tool returned.  ``control`` is a call-control request the tool made, if any."""

    call_id: str
    output: str
    control: Any = None  # bridge.core.config.ControlRequest


@dataclass(frozen=True, slots=True)
class ControlFinished:
    """A hang-up or transfer request to the phone network came back."""

    kind: Literal["hang_up", "transfer"]
    ok: bool
    detail: str = ""


@dataclass(frozen=True, slots=True)
class StandbyConnected:
    """The next session (asked for with ``PrepareStandby``) is open, not yet in use."""


@dataclass(frozen=True, slots=True)
class StandbyReady:
    """The next session confirmed its configuration; ``mismatch`` as for
    ``SessionConfigured``."""

    mismatch: str | None = None


@dataclass(frozen=True, slots=True)
class StandbyFailed:
    """The next session could not be opened, or closed before the switch."""

    detail: str = ""


@dataclass(frozen=True, slots=True)
class TimerFired:
    """A wake-up the core asked for (``WakeAt``) is due; spurious wake-ups are harmless."""


@dataclass(frozen=True, slots=True)
class EndRequested:
    """End the call from outside: shutdown, an operator, a driver-level limit."""

    reason: str
    detail: str = ""


# --------------------------------------------------------------------- problems


@dataclass(frozen=True, slots=True)
class ProtocolProblem:
    """The peer sent something that does not follow its protocol.

    ``source`` says which peer; ``kind`` is a short stable code for counting and
    throttling (``bad_json``, ``missing_field``, ``bad_base64``...); ``detail`` says
    what exactly, for the log.  Never contains the frame itself (it may hold secrets)."""

    source: Literal["caller", "model"]
    kind: str
    detail: str


CallerEvent = (
    LegOpened
    | StreamStarted
    | CallerAudio
    | MarkPlayed
    | DigitPressed
    | StreamStopped
    | CallerGone
    | LegIgnored
)
ModelEvent = (
    ModelConnected
    | ModelUnavailable
    | ModelDisconnected
    | SessionConfigured
    | SpeechStarted
    | SpeechStopped
    | CallerTranscribed
    | ResponseStarted
    | AgentAudio
    | AgentAudioDone
    | AgentTextDelta
    | AgentTextDone
    | AgentItemTruncated
    | ToolCallRequested
    | ResponseFinished
    | ModelErrorReported
    | ModelIgnored
)
DriverEvent = (
    StandbyConnected
    | StandbyReady
    | StandbyFailed
    | StreamAccepted
    | StreamRefused
    | ToolFinished
    | ControlFinished
    | TimerFired
    | EndRequested
)
Event = CallerEvent | ModelEvent | DriverEvent | ProtocolProblem
