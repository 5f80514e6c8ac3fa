"""One phone call's rules, as a sans-I/O state machine.

``Call.handle(event, now)`` is the only entry point: a typed event (from the
caller leg, the model backend or the driver) and the time in milliseconds go
in, the actions to carry out come out.  It never awaits, sleeps, reads a clock
or touches a socket, and it knows no wire format: the same rules run live
(``bridge.call.relay``), on a virtual clock from a recorded tape, and under unit
tests fed with the awkward event orders real networks produce.  Timers are
outputs too (``WakeAt``), so the lifecycle (start timeout, call length, key
entry pauses, slow-tool filler, hang-up after the goodbye, the grace period
after a REST hang-up) is all here and all on the tape.

The barge-in rule (see ``ledger.py`` for the accounting): on ``SpeechStarted``
with agent audio still queued at the caller's end, clear playback at once,
truncate each unsettled agent item at what the caller heard (per mark echoes,
clamped to what was sent), drop the late audio of the interrupted response, and
cancel the response only when the backend does not cancel by itself.  An item
that finished playing is never truncated.
"""

from __future__ import annotations

import json
import random
import zlib
from base64 import b64decode, b64encode
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any, Protocol

from bridge.core import events as ev
from bridge.core.actions import (
    Action,
    AddToolOutput,
    AddUserText,
    AppendAudio,
    AuthoriseStream,
    CancelResponse,
    ClearPlayback,
    ConfigureSession,
    ConnectModel,
    ControlCall,
    CreateResponse,
    DiscardStandby,
    EndCall,
    Notice,
    Observed,
    PlayAudio,
    PlayMark,
    PrepareStandby,
    RunTool,
    SwitchToStandby,
    ToStandby,
    TruncateItem,
    Usage,
    WakeAt,
)
from bridge.core.config import CallConfig, ControlRequest
from bridge.core.deadlines import Deadlines
from bridge.core.dtmf import Keypad, digit_text
from bridge.core.errors import DriverError
from bridge.core.ledger import ItemPlayback, MarkOutcome, PlaybackLedger
from bridge.core.outage import Outage, ToolRecord, backoff_ms, seed_items
from bridge.core.problems import ProblemLog
from bridge.core.responses import Responses
from bridge.core.stream import StreamInfo
from bridge.core.transcript import Transcript


class Phase(Enum):
    WAITING_START = "waiting_start"  # socket open, no stream start yet
    AUTHORISING = "authorising"  # start seen, the driver is checking its credentials
    CONNECTING = "connecting"  # model connection being opened
    ACTIVE = "active"  # both sides up
    RECONNECTING = "reconnecting"  # the model connection was lost; the call goes on
    ENDED = "ended"


class AudioCodec(Protocol):
    """Transcoding between the leg's μ-law 8 kHz and the model's format (pcm16 mode).

    Injected by the driver, so the core stays free of numpy; stateful (streaming
    filters), which is why a ``clear`` must reset the outbound direction."""

    def to_model(self, ulaw: bytes) -> bytes: ...
    def to_twilio(self, pcm: bytes) -> bytes: ...
    def flush_to_twilio(self) -> bytes: ...
    def reset_to_twilio(self) -> None: ...


@dataclass(slots=True)
class _ToolCall:
    name: str
    since: int
    response_id: str | None
    arguments: str = ""
    filler_sent: bool = False


@dataclass(slots=True)
class _PendingControl:
    request: ControlRequest
    since: int


#: Audio kept from before a caller turn's detected start (the VAD's prefix padding).
SPEECH_PREFIX_MS = 300

#: What the agent is asked after an outage cut its reply short.
RESUME_INSTRUCTIONS = (
    "The connection dropped while you were speaking. Continue your last answer briefly "
    "from where the caller stopped hearing it."
)

#: How often a slow tool's filler is re-checked while the agent is still busy.
FILLER_RECHECK_MS = 100

_STATS = (
    "caller_events",
    "media_in",
    "audio_in_bytes",
    "deltas_forwarded",
    "deltas_dropped",
    "bad_frames",
    "model_problems",
    "barge_ins",
    "truncates",
    "clears",
    "stale_marks",
    "preconnect_dropped",
    "reconnects",
    "model_gap_ms",
    "fallbacks",
    "rollovers",
)


class Call:
    """The per-call state machine.  ``handle`` returns the actions to carry out, in order."""

    def __init__(self, config: CallConfig, codec: AudioCodec | None = None) -> None:
        self.config = config
        self.phase = Phase.WAITING_START
        self.stream: StreamInfo | None = None
        self.started_at = 0
        self.end_reason: str | None = None
        self._passthrough = config.audio_mode == "passthrough"
        if not self._passthrough and codec is None:
            raise DriverError("pcm16 audio needs a codec (bridge.audio.transcoder)")
        self._codec = codec
        # Model-side samples per ms: 8 for pcmu (1 byte/sample), 24 for pcm16.
        self.ledger = PlaybackLedger(samples_per_ms=8 if self._passthrough else 24)
        self.transcript = Transcript()
        self.responses = Responses()
        self.keypad = Keypad(config.agent.dtmf_length)
        self.deadlines = Deadlines()
        self.problems = ProblemLog()
        self._preconnect: deque[tuple[str, int]] = deque()
        self._preconnect_bytes = 0
        self._digits_unsent: list[str] = []
        self._session_ready = False
        self._tools: dict[str, _ToolCall] = {}
        self._control: _PendingControl | None = None
        self._after_control = ""
        self._audio_in_reported = 0
        self._dtmf_played = 0
        self._entry_waiting = False  # a key entry finished before the model was connected
        # Call ms where the current session's audio timeline starts: speech timings from
        # the model are on that timeline (0 at its first append); after a reconnect the
        # new session's timeline starts at the held audio, not at the call's start.
        self._audio_origin_ms = 0
        # The last few seconds of caller audio sent to the model: if the session dies
        # while the caller is mid-sentence, the new session hears the whole sentence.
        self._recent: deque[tuple[int, str, int]] = deque()
        self._speech_stopped_at: int | None = None
        self._local_items: set[str] = set()  # audio the bridge played itself (tones, prompts)
        self._clips = 0
        self._tool_log: list[ToolRecord] = []
        self.outage: Outage | None = None
        self._resume = False  # a reply was cut by an outage: ask to continue it
        self._end_after_control = ""  # end reason once a fallback's control is done
        self.fallback: str | None = None  # the fallback taken, when the model was unreachable
        self._rng: random.Random | None = None
        self._standby = ""  # "", "opening", "seeded", "ready": the next session's state
        self._seeded = (0, 0)  # transcript lines and tool records the standby already has
        self.stats: dict[str, int] = dict.fromkeys(_STATS, 0)
        self._handlers: dict[type, Callable[[Any, int], list[Action]]] = {
            ev.CallerAudio: self._on_caller_audio,
            ev.AgentAudio: self._on_agent_audio,
            ev.MarkPlayed: self._on_mark,
            ev.AgentTextDelta: self._on_text_delta,
            ev.LegOpened: self._on_leg_opened,
            ev.StreamStarted: self._on_stream_started,
            ev.DigitPressed: self._on_digit,
            ev.StreamStopped: self._on_stream_stopped,
            ev.CallerGone: self._on_caller_gone,
            ev.LegIgnored: self._ignore,
            ev.ModelConnected: self._on_model_connected,
            ev.ModelUnavailable: self._on_model_unavailable,
            ev.ModelDisconnected: self._on_model_disconnected,
            ev.SessionConfigured: self._on_session_configured,
            ev.SpeechStarted: self._on_speech_started,
            ev.SpeechStopped: self._on_speech_stopped,
            ev.CallerTranscribed: self._on_caller_transcribed,
            ev.ResponseStarted: self._on_response_started,
            ev.AgentAudioDone: self._on_audio_done,
            ev.AgentTextDone: self._on_text_done,
            ev.AgentItemTruncated: self._on_item_truncated,
            ev.ToolCallRequested: self._on_tool_call,
            ev.ResponseFinished: self._on_response_finished,
            ev.ModelErrorReported: self._on_model_error,
            ev.ModelIgnored: self._ignore,
            ev.StreamAccepted: self._on_stream_accepted,
            ev.StreamRefused: self._on_stream_refused,
            ev.ToolFinished: self._on_tool_finished,
            ev.ControlFinished: self._on_control_finished,
            ev.TimerFired: self._on_timer,
            ev.StandbyConnected: self._on_standby_connected,
            ev.StandbyReady: self._on_standby_ready,
            ev.StandbyFailed: self._on_standby_failed,
            ev.EndRequested: self._on_end_requested,
            ev.ProtocolProblem: self._on_problem,
        }

    # ------------------------------------------------------------ entry point

    def handle(self, event: ev.Event, now: int) -> list[Action]:
        """Apply one event at time ``now`` (ms); return what to do, in order."""
        handler = self._handlers.get(type(event))
        if handler is None:
            raise DriverError(f"not a call event: {event!r}")
        if self.phase is Phase.ENDED:
            return []
        actions = handler(event, now)
        if self.phase is not Phase.ENDED:
            wake = self.deadlines.wake_change()
            if wake is not None:
                actions.append(WakeAt(wake))
        return actions

    def call_ms(self, now: int) -> int:
        """Milliseconds since the stream started: the timeline of transcripts."""
        return max(0, now - self.started_at)

    @staticmethod
    def _ignore(event: Any, now: int) -> list[Action]:
        return []

    # ------------------------------------------------------------- caller leg

    def _on_leg_opened(self, event: ev.LegOpened, now: int) -> list[Action]:
        if self.phase is Phase.WAITING_START:
            self.deadlines.set("start", now + self.config.start_timeout_ms)
        return []

    def _on_stream_started(self, event: ev.StreamStarted, now: int) -> list[Action]:
        self.stats["caller_events"] += 1
        if self.phase is not Phase.WAITING_START:
            return self._problem("caller_duplicate_start", "ignoring a second stream start")
        self.stream = event.info
        self.started_at = now
        self.phase = Phase.AUTHORISING
        self.deadlines.cancel("start")
        self.deadlines.set("max_call", now + self.config.max_call_ms)
        return [AuthoriseStream(event.info)]

    def _on_caller_audio(self, event: ev.CallerAudio, now: int) -> list[Action]:
        stats = self.stats
        stats["caller_events"] += 1
        phase = self.phase
        if phase is Phase.WAITING_START:
            stats["bad_frames"] += 1
            return self._problem("caller_media_before_start", "ignoring audio before the start")
        stats["media_in"] += 1
        stats["audio_in_bytes"] += event.nbytes
        payload = event.payload
        if not self._passthrough:
            assert self._codec is not None
            pcm = self._codec.to_model(b64decode(payload))
            if not pcm:
                return []
            payload = b64encode(pcm).decode("ascii")
        if phase is Phase.ACTIVE:
            if self.config.reconnect:
                # Kept for a reconnect mid-sentence: the VAD's prefix always, the whole
                # turn (up to reconnect_buffer_ms) while the caller is speaking.
                recent = self._recent
                recent.append((now, payload, event.nbytes))
                keep = (
                    self.config.reconnect_buffer_ms if self.transcript.speech else SPEECH_PREFIX_MS
                )
                horizon = now - keep
                while recent[0][0] < horizon:
                    recent.popleft()
            return [AppendAudio(payload)]
        return self._hold_audio(payload, event.nbytes)

    def _hold_audio(self, payload: str, nbytes: int) -> list[Action]:
        """Keep caller audio until the model is connected: the newest few seconds
        (``reconnect_buffer_ms`` during an outage, so a sentence spoken in the gap is
        not lost, and a long outage does not replay stale audio).

        ``nbytes`` counts μ-law bytes (8 per ms) whatever the audio mode."""
        self._preconnect.append((payload, nbytes))
        self._preconnect_bytes += nbytes
        held_ms = (
            self.config.reconnect_buffer_ms
            if self.phase is Phase.RECONNECTING
            else self.config.preconnect_buffer_ms
        )
        limit = held_ms * 8
        actions: list[Action] = []
        while self._preconnect_bytes > limit and len(self._preconnect) > 1:
            _, dropped = self._preconnect.popleft()
            self._preconnect_bytes -= dropped
            self.stats["preconnect_dropped"] += 1
            actions = self._problem(
                "preconnect_overflow",
                "model connection slow: dropping the oldest caller audio",
                count=False,
            )
        return actions

    def _on_mark(self, event: ev.MarkPlayed, now: int) -> list[Action]:
        self.stats["caller_events"] += 1
        outcome = self.ledger.on_mark(event.name)
        if outcome is MarkOutcome.STALE:
            self.stats["stale_marks"] += 1
            return []
        if outcome is MarkOutcome.UNKNOWN:
            return self._problem(
                "caller_unknown_mark", f"ignoring unknown mark {event.name[:80]!r}"
            )
        return self._settle(now) + self._maybe_control(now) + self._maybe_switch(now)

    def _on_digit(self, event: ev.DigitPressed, now: int) -> list[Action]:
        self.stats["caller_events"] += 1
        if self.phase not in (Phase.ACTIVE, Phase.CONNECTING, Phase.RECONNECTING):
            return []
        at = self.call_ms(now)
        actions: list[Action] = [Observed("dtmf", at, {"digit": event.digit})]
        complete = self.keypad.press(event.digit)
        if self.phase is Phase.ACTIVE:
            actions.append(AddUserText(digit_text(event.digit)))
        else:
            self._digits_unsent.append(event.digit)
        if complete:
            actions += self._finish_entry(now)
        else:
            self.deadlines.set("dtmf", now + self.config.dtmf_flush_ms)
        return actions

    def _finish_entry(self, now: int) -> list[Action]:
        """The keypad entry looks complete: note it, and let the agent answer it."""
        self.deadlines.cancel("dtmf")
        entry = self.keypad.take()
        if not entry:
            return []
        at = self.call_ms(now)
        actions: list[Action] = [self.transcript.system_line(f"caller pressed {entry}", at)]
        if self.phase is Phase.ACTIVE:
            actions += self.responses.request(None, blocked=bool(self._tools))
        else:
            self._entry_waiting = True
        return actions

    def _on_stream_stopped(self, event: ev.StreamStopped, now: int) -> list[Action]:
        if self._end_after_control and self._after_control:
            return self.end(self._end_after_control, "the stream stopped after the fallback", now)
        if self._after_control:
            return self.end(self._after_control, "the stream stopped after call control", now)
        return self.end("caller_hung_up", "the caller's leg sent stop", now)

    def _on_caller_gone(self, event: ev.CallerGone, now: int) -> list[Action]:
        if self._end_after_control and self._after_control:
            return self.end(self._end_after_control, "the stream closed after the fallback", now)
        if self._after_control:
            return self.end(self._after_control, "the stream closed after call control", now)
        return self.end("caller_disconnected", event.detail, now)

    # ------------------------------------------------------------ the driver

    def _on_stream_accepted(self, event: ev.StreamAccepted, now: int) -> list[Action]:
        """The driver authorised the stream: connect to the model.

        ``config`` lets the driver pick the agent only now, from the call's own
        parameters (the number called, a profile name in ``<Parameter>``)."""
        if self.phase is not Phase.AUTHORISING:
            return []
        config = event.config
        if config is not None:
            if not isinstance(config, CallConfig):
                raise DriverError(f"StreamAccepted.config must be a CallConfig, got {config!r}")
            if config.audio_mode != self.config.audio_mode:
                raise DriverError("the audio mode cannot change once the call started")
            self.config = config
            self.keypad.expected_length = config.agent.dtmf_length
            self.deadlines.set("max_call", self.started_at + config.max_call_ms)
        self.phase = Phase.CONNECTING
        return [ConnectModel()]

    def _on_stream_refused(self, event: ev.StreamRefused, now: int) -> list[Action]:
        return self.end("unauthorised", event.reason, now)

    def _on_end_requested(self, event: ev.EndRequested, now: int) -> list[Action]:
        return self.end(event.reason, event.detail, now)

    def _on_problem(self, event: ev.ProtocolProblem, now: int) -> list[Action]:
        if event.source == "caller":
            self.stats["caller_events"] += 1
            self.stats["bad_frames"] += 1
            if event.kind == "bad_start" and self.phase is Phase.WAITING_START:
                # Without a valid start there is no call to bridge: say why and hang up.
                return self.end("bad_start", event.detail, now)
        else:
            self.stats["model_problems"] += 1
        return self._problem(f"{event.source}_{event.kind}", event.detail, count=False)

    def _problem(self, code: str, message: str, *, count: bool = True) -> list[Action]:
        if count and code.startswith("caller_"):
            self.stats["bad_frames"] += 1
        return list(self.problems.report(code, message))

    # ---------------------------------------------------------- model backend

    def _on_model_connected(self, event: ev.ModelConnected, now: int) -> list[Action]:
        """The model is reachable: configure its session and flush what was held.

        After an outage the new session is also seeded with the conversation so far."""
        if self.phase is not Phase.CONNECTING and self.phase is not Phase.RECONNECTING:
            return []
        outage = self.outage
        if outage is not None and outage.gave_up:
            return []  # the fallback is under way; this late connection is not used
        config = self.config
        actions: list[Action] = [
            ConfigureSession(config.agent, config.audio_mode, config.model, config.tools)
        ]
        if self.phase is Phase.RECONNECTING:
            actions += self._reseed(now)
            self._audio_origin_ms = max(0, self.call_ms(now) - self._preconnect_bytes // 8)
        elif outage is not None:  # the first connection took retries
            actions += self._end_outage(now)
        self.phase = Phase.ACTIVE
        self.deadlines.set("rollover", now + config.rollover_after_ms)
        actions += [AppendAudio(payload) for payload, _ in self._preconnect]
        self._preconnect.clear()
        self._preconnect_bytes = 0
        actions += [AddUserText(digit_text(d)) for d in self._digits_unsent]
        self._digits_unsent.clear()
        if self._entry_waiting:
            self._entry_waiting = False
            actions += self.responses.request(None)
        return actions

    def _on_model_unavailable(self, event: ev.ModelUnavailable, now: int) -> list[Action]:
        """A connection attempt failed: try again on the schedule, or fall back."""
        if self.phase is not Phase.CONNECTING and self.phase is not Phase.RECONNECTING:
            return []
        if not self.config.reconnect:
            return self.end("model_unavailable", event.detail, now)
        outage = self.outage
        actions: list[Action] = []
        if outage is None:  # the very first connection of the call failed
            outage = self._start_outage(now, event.cause)
            actions.append(Notice("warning", "model_unreachable", event.detail[:300]))
        if outage.gave_up:
            return actions
        if event.retry == "never" or now >= outage.budget_until:
            return actions + self._give_up(now, event.cause, event.detail)
        return actions + self._attempt(now, event.retry)

    def _on_model_disconnected(self, event: ev.ModelDisconnected, now: int) -> list[Action]:
        detail = f"code={event.code} {event.detail}".strip()
        if not self.config.reconnect or self.phase is not Phase.ACTIVE:
            return self.end("model_closed", detail, now)
        actions: list[Action] = []
        if self._standby == "ready":
            # The cap came before a quiet moment: switch now, the next session is ready.
            was_speaking = self.responses.busy or self.ledger.outstanding
            actions = self._lose_playback(now) + self._switch(now, forced=True)
            if was_speaking:
                actions += self.responses.request(RESUME_INSTRUCTIONS)
            return actions
        if self._standby:
            self._standby = ""
            actions.append(DiscardStandby())
        return actions + self._lose_model(now, event.cause, event.retry, detail)

    def _on_session_configured(self, event: ev.SessionConfigured, now: int) -> list[Action]:
        if event.mismatch:
            return self.end("model_config_rejected", event.mismatch, now)
        if self._session_ready:
            if self._resume:
                self._resume = False
                return list(self.responses.request(RESUME_INSTRUCTIONS))
            return []
        self._session_ready = True
        greeting = self.config.agent.greeting
        if greeting:
            return list(
                self.responses.request(
                    "Greet the caller by saying exactly this, and nothing else: "
                    + json.dumps(greeting)
                )
            )
        return []

    def _on_call_clock(self, session_ms: int | None, now: int) -> int:
        """A time on the model session's audio timeline, on the call's (else: now)."""
        if session_ms is None:
            return self.call_ms(now)
        return session_ms + self._audio_origin_ms

    def _on_speech_started(self, event: ev.SpeechStarted, now: int) -> list[Action]:
        at = self._on_call_clock(event.audio_start_ms, now)
        self.transcript.speech_started(event.item_id, at)
        self._speech_stopped_at = None
        actions: list[Action] = [Observed("speech_started", self.call_ms(now))]
        return actions + self._barge_in(now)

    def _barge_in(self, now: int) -> list[Action]:
        """The caller started talking: stop the agent where the caller stopped hearing it."""
        actions: list[Action] = []
        interrupted = self.ledger.unsettled()
        if self.ledger.outstanding:
            actions.append(ClearPlayback())
            self.ledger.clear()
            self.stats["clears"] += 1
            if self._codec is not None:
                self._codec.reset_to_twilio()
        for playback in interrupted:
            if playback.item_id in self._local_items:
                # Our own tones or prompts: the model has no such item to truncate.
                playback.truncated = True
                actions.append(
                    self.transcript.agent_line(
                        self.ledger, playback, self._item_start(playback), interrupted=True
                    )
                )
                continue
            actions += self._truncate(playback, now)
        if self.responses.interrupt() is not None:
            if not self.config.agent.turn_detection.server_interrupts:
                actions.append(CancelResponse())
        if actions:
            self.stats["barge_ins"] += 1
        return actions

    def _truncate(self, playback: ItemPlayback, now: int) -> list[Action]:
        heard_ms = self.ledger.heard_ms(playback)
        playback.truncated = True
        self.transcript.dropped.add(playback.item_id)
        self.stats["truncates"] += 1
        item = self.transcript.agent_item(playback.item_id)
        start = self._item_start(playback)
        return [
            TruncateItem(playback.item_id, item.content_index, heard_ms),
            Observed(
                "barge_in",
                self.call_ms(now),
                {"item_id": playback.item_id, "heard_ms": heard_ms},
            ),
            self.transcript.truncated_line(self.ledger, playback, start),
        ]

    def _on_item_truncated(self, event: ev.AgentItemTruncated, now: int) -> list[Action]:
        """The backend says which words it kept: the stored line says the same."""
        line = self.transcript.heard_as(event.item_id, event.text)
        return [line] if line is not None else []

    def _on_speech_stopped(self, event: ev.SpeechStopped, now: int) -> list[Action]:
        at = self._on_call_clock(event.audio_end_ms, now)
        self.transcript.speech_stopped(event.item_id, at)
        self._speech_stopped_at = now
        return [Observed("speech_stopped", self.call_ms(now))]

    def _on_caller_transcribed(self, event: ev.CallerTranscribed, now: int) -> list[Action]:
        return [self.transcript.caller_line(event.item_id, event.text, self.call_ms(now))]

    def _on_response_started(self, event: ev.ResponseStarted, now: int) -> list[Action]:
        self.responses.started(event.response_id)
        return []

    def _on_agent_audio(self, event: ev.AgentAudio, now: int) -> list[Action]:
        item_id = event.item_id
        response_id = event.response_id
        if item_id in self.transcript.dropped or response_id in self.responses.interrupted:
            self.stats["deltas_dropped"] += 1
            return []
        if self.stream is None or event.samples <= 0:
            return []
        payload = event.payload
        if not self._passthrough:
            assert self._codec is not None
            payload = b64encode(self._codec.to_twilio(b64decode(payload))).decode("ascii")
        self.transcript.agent_item(item_id).content_index = event.content_index
        self.stats["deltas_forwarded"] += 1
        self.responses.count_audio(response_id, event.samples)
        actions: list[Action] = []
        if item_id not in self.ledger.items:
            at = self.call_ms(now)
            actions.append(Observed("agent_audio", at, {"item_id": item_id}))
            if self._speech_stopped_at is not None:
                latency = now - self._speech_stopped_at
                self._speech_stopped_at = None
                actions.append(Observed("turn_latency", at, {"ms": latency}))
        return actions + self._play(item_id, response_id, event.samples, payload, now)

    def _play(
        self, item_id: str, response_id: str, samples: int, payload: str, now: int
    ) -> list[Action]:
        """Queue agent audio at the caller's end, with the mark that tells when it played.

        ``samples`` is the model-timeline length the ledger accounts for this audio."""
        name = self.ledger.record_chunk(item_id, response_id, samples, now)
        if payload:
            return [PlayAudio(payload), PlayMark(name)]
        return [PlayMark(name)]

    def _item_start(self, playback: ItemPlayback) -> int:
        """Where an agent item starts on the call timeline: its first audio sent."""
        return self.call_ms(playback.first_sent_at or self.started_at)

    def _on_audio_done(self, event: ev.AgentAudioDone, now: int) -> list[Action]:
        playback = self.ledger.items.get(event.item_id)
        if playback is None or playback.truncated:
            return []
        actions: list[Action] = []
        if self._codec is not None and self.stream is not None:
            tail = self._codec.flush_to_twilio()
            if tail:
                # The resampler's last few ms belong to this item; send them before its
                # final mark so that mark really means "the whole item played".
                actions += self._play(
                    event.item_id, playback.response_id, 0, b64encode(tail).decode("ascii"), now
                )
        playback.audio_done = True
        return actions + self._settle(now)

    def _on_text_delta(self, event: ev.AgentTextDelta, now: int) -> list[Action]:
        if event.item_id in self.transcript.dropped:
            return []
        self.transcript.agent_delta(event.item_id, event.delta)
        return [
            Observed(
                "agent_text", self.call_ms(now), {"item_id": event.item_id, "delta": event.delta}
            )
        ]

    def _on_text_done(self, event: ev.AgentTextDone, now: int) -> list[Action]:
        if event.item_id in self.transcript.dropped:
            return []
        self.transcript.agent_done(event.item_id, event.text)
        return self._settle(now)

    def _on_tool_call(self, event: ev.ToolCallRequested, now: int) -> list[Action]:
        if event.call_id in self._tools:
            return []
        self._tools[event.call_id] = _ToolCall(
            event.name, now, event.response_id, event.arguments
        )
        filler = self.config.tool_filler_after_ms
        if filler is not None:
            self.deadlines.set(f"filler:{event.call_id}", now + filler)
        return [
            RunTool(event.call_id, event.name, event.arguments),
            Observed(
                "tool_call",
                self.call_ms(now),
                {"call_id": event.call_id, "name": event.name, "arguments": event.arguments[:500]},
            ),
        ]

    def _on_response_finished(self, event: ev.ResponseFinished, now: int) -> list[Action]:
        response_id = event.response_id
        samples = self.responses.finished(response_id)
        # A finished (or cancelled) response produces no more audio or text for its items,
        # even when the server skipped the per-item ``.done`` events.
        for playback in self.ledger.items.values():
            if playback.response_id == response_id:
                playback.audio_done = True
                item = self.transcript.agent.get(playback.item_id)
                if item is not None:
                    item.done = True
        actions: list[Action] = [
            Usage(
                response_id,
                event.status,
                event.usage,
                samples // self.ledger.samples_per_ms,
                self._take_audio_in_ms(),
            )
        ]
        actions += self._settle(now)
        if not self._tools:
            actions += self.responses.take_pending()
        return actions + self._maybe_control(now) + self._maybe_switch(now)

    def _take_audio_in_ms(self) -> int:
        total = self.stats["audio_in_bytes"]
        since, self._audio_in_reported = total - self._audio_in_reported, total
        return since // 8

    def _on_model_error(self, event: ev.ModelErrorReported, now: int) -> list[Action]:
        code, message = event.code, event.message[:300]
        if code == "conversation_already_has_active_response":
            self.responses.refused_busy()
            return [Notice("info", "model_busy", "response already active; will retry after it")]
        if event.event_id == "bridge_session_update" and not self._session_ready:
            return self.end("model_config_rejected", f"{code}: {message}", now)
        notice: list[Action] = [Notice("warning", f"model_error:{code}", message)]
        if code == "session_expired":
            return notice  # the close that follows starts the reconnect
        if event.fatal:  # the backend classifies its own errors (bridge.realtime.failures)
            if self.config.reconnect and self.phase is Phase.ACTIVE:
                return notice + self._lose_model(now, code, "never", f"{code}: {message}")
            return self.end("model_error", f"{code}: {message}", now)
        return notice

    # ----------------------------------------------------------------- tools

    def _on_tool_finished(self, event: ev.ToolFinished, now: int) -> list[Action]:
        """A tool finished: give the model its output, then let it speak again.

        During an outage the result is kept, and reaches the new session with the
        rest of the conversation."""
        if self.phase is not Phase.ACTIVE and self.phase is not Phase.RECONNECTING:
            return []
        call = self._tools.pop(event.call_id, None)
        if call is None:
            return [
                Notice("warning", "tool_unknown_call", f"result for unknown call {event.call_id!r}")
            ]
        self.deadlines.cancel(f"filler:{event.call_id}")
        self._tool_log.append(
            ToolRecord(
                len(self.transcript.history), event.call_id, call.name, call.arguments, event.output
            )
        )
        if self.phase is Phase.RECONNECTING:
            return [Observed("tool_result", self.call_ms(now), {"call_id": event.call_id,
                                                                 "name": call.name})]
        actions: list[Action] = [
            AddToolOutput(event.call_id, event.output),
            Observed(
                "tool_result",
                self.call_ms(now),
                {"call_id": event.call_id, "name": call.name, "output": event.output[:500]},
            ),
        ]
        control = event.control
        if control is not None and not isinstance(control, ControlRequest):
            raise DriverError(f"ToolFinished.control must be a ControlRequest, got {control!r}")
        if control is not None and control.kind == "send_dtmf":
            actions += self._play_dtmf(control.digits or "", now)
            control = None
        if control is not None:
            return actions + self._request_control(control, call, now)
        if not self._tools:
            actions += self.responses.request(None)
        return actions

    def _request_control(
        self, control: ControlRequest, call: _ToolCall, now: int
    ) -> list[Action]:
        """A tool asked to hang up or transfer: say goodbye first, then do it."""
        if control.kind == "transfer" and not self.config.rest_control:
            refused: list[Action] = [
                Notice(
                    "error",
                    "transfer_unavailable",
                    "transfer needs Twilio REST credentials (TWILIO_ACCOUNT_SID and "
                    "TWILIO_AUTH_TOKEN or an API key pair)",
                )
            ]
            return refused + self.responses.request(
                "The transfer is not possible right now. Apologise briefly and offer to help."
            )
        actions: list[Action] = []
        if self._control is None:
            self._control = _PendingControl(control, now)
            self.deadlines.set("control_grace", now + self.config.control_grace_ms)
            if not self._response_spoke(call.response_id):
                farewell = (
                    "Say a brief goodbye to the caller now."
                    if control.kind == "hang_up"
                    else "Tell the caller in one short sentence that you are transferring "
                    "them now."
                )
                actions += self.responses.request(farewell)
        return actions + self._maybe_control(now)

    def _response_spoke(self, response_id: str | None) -> bool:
        return any(p.response_id == response_id and p.sent > 0 for p in self.ledger.items.values())

    def _play_dtmf(self, digits: str, now: int) -> list[Action]:
        from bridge.audio.dtmf import dtmf_ulaw

        if not digits or self.stream is None:
            return []
        audio = dtmf_ulaw(digits)
        self._dtmf_played += 1
        item_id = f"dtmf_{self._dtmf_played}"
        self._local_items.add(item_id)
        samples = len(audio) * (1 if self._passthrough else 3)
        actions = self._play(item_id, "", samples, b64encode(audio).decode("ascii"), now)
        self.ledger.items[item_id].audio_done = True
        self.transcript.agent_done(item_id, f"[DTMF {digits}]")
        return actions

    # ---------------------------------------------------------- call control

    def _maybe_control(self, now: int) -> list[Action]:
        """Carry out a pending hang-up/transfer once the agent's last words have played."""
        pending = self._control
        if pending is None or self.stream is None:
            return []
        overdue = now - pending.since >= self.config.control_grace_ms
        busy = (
            self.responses.busy or self.responses.pending is not None or self.ledger.outstanding
        )
        if busy and not overdue:
            return []
        self._control = None
        self.deadlines.cancel("control_grace")
        request = pending.request
        kind = "hang_up" if request.kind == "hang_up" else "transfer"
        actions: list[Action] = []
        if overdue and busy:
            actions.append(
                Notice("warning", "control_overdue", f"{kind}: playback did not drain in time")
            )
        if not self.config.rest_control:
            # Closing the stream ends the call: <Connect> has no verb after it.
            return actions + self.end(
                self._end_after_control or "agent_hung_up",
                "closed the stream (no REST credentials)",
                now,
            )
        # Once asked, the phone network ends (or moves) the call: the stream stopping from
        # now on is the hang-up or transfer taking effect, not the caller leaving.
        self._after_control = "agent_hung_up" if kind == "hang_up" else "transferred"
        actions.append(ControlCall(kind, self.stream.call_sid, request.target, request.reason))  # type: ignore[arg-type]
        return actions

    def _on_control_finished(self, event: ev.ControlFinished, now: int) -> list[Action]:
        if event.ok:
            # Twilio will send stop; end anyway soon after, so the model socket closes
            # promptly even if the stop never comes.
            self.deadlines.set("after_control", now + self.config.after_control_ms)
            return []
        self._after_control = ""
        actions: list[Action] = [Notice("error", f"{event.kind}_failed", event.detail[:300])]
        if event.kind == "hang_up" or self._end_after_control:
            detail = f"REST {event.kind} failed; closed the stream"
            return actions + self.end(self._end_after_control or "agent_hung_up", detail, now)
        return actions + self.responses.request(
            "The transfer did not go through. Apologise briefly and offer to help."
        )

    # ----------------------------------------------------------- transcripts

    def _settle(self, now: int) -> list[Action]:
        """Transcript lines for agent items the caller has now heard in full."""
        if not self.ledger.items:
            return []
        return list(self.transcript.settled(self.ledger, self._item_start))

    # ---------------------------------------------------------------- timers

    def _on_timer(self, event: ev.TimerFired, now: int) -> list[Action]:
        """Time passed: whichever deadlines are due, in a fixed order."""
        deadlines = self.deadlines
        deadlines.fired()
        if deadlines.due("start", now):
            if self.phase is Phase.WAITING_START:
                return self.end(
                    "no_start",
                    f"no stream start within {self.config.start_timeout_ms} ms",
                    now,
                )
        if deadlines.due("max_call", now):
            return self.end("max_duration", f"call reached {self.config.max_call_ms} ms", now)
        if deadlines.due("after_control", now):
            reason = self._end_after_control or self._after_control
            return self.end(reason, "after call control", now)
        actions: list[Action] = []
        if deadlines.due("rollover", now):
            actions += self._prepare_rollover(now)
        if deadlines.due("rollover_check", now):
            actions += self._maybe_switch(now)
        if deadlines.due("reconnect", now):
            actions += self._retry_now(now)
        if deadlines.due("outage_filler", now):
            actions += self._outage_filler(now)
        if deadlines.due("outage_budget", now):
            outage = self.outage
            if outage is not None and not outage.gave_up and self.phase is not Phase.ACTIVE:
                actions += self._give_up(now, outage.cause, "no model within the retry budget")
        if deadlines.due("dtmf", now):
            actions += self._finish_entry(now)
        for call_id, call in list(self._tools.items()):
            if deadlines.due(f"filler:{call_id}", now):
                actions += self._filler(call_id, call, now)
        if deadlines.due("control_grace", now):
            actions += self._maybe_control(now)
        return actions

    def _filler(self, call_id: str, call: _ToolCall, now: int) -> list[Action]:
        """A tool is slow: have the agent say it is still working (once per tool call)."""
        if call.filler_sent or self.phase is not Phase.ACTIVE:
            return []
        if self.responses.busy or self.ledger.outstanding:
            self.deadlines.set(f"filler:{call_id}", now + FILLER_RECHECK_MS)
            return []
        call.filler_sent = True
        return [self.responses.send(CreateResponse(self.config.tool_filler_instructions))]

    # --------------------------------------------------------------- rollover

    def _prepare_rollover(self, now: int) -> list[Action]:
        """The session nears the API's maximum age: open and seed the next one now, and
        switch at a quiet moment, so the caller hears no gap at the cap."""
        if self.phase is not Phase.ACTIVE or self._standby:
            return []
        self._standby = "opening"
        return [PrepareStandby(), Observed("rollover_started", self.call_ms(now))]

    def _on_standby_connected(self, event: ev.StandbyConnected, now: int) -> list[Action]:
        if self._standby != "opening":
            return [DiscardStandby()]
        config = self.config
        # A line whose truncate is still unanswered waits for the switch's delta, with
        # everything after it, so the standby never keeps an estimate the answer fixes.
        lines = self.transcript.confirmed_lines()
        tools = sum(1 for tool in self._tool_log if tool.after_lines <= lines)
        items, _ = seed_items(
            self.transcript.history[:lines], self._tool_log[:tools], config.seed_max_chars
        )
        self._seeded = (lines, tools)
        self._standby = "seeded"
        configure = ConfigureSession(config.agent, config.audio_mode, config.model, config.tools)
        return [ToStandby((configure, *items))]

    def _on_standby_ready(self, event: ev.StandbyReady, now: int) -> list[Action]:
        if self._standby != "seeded":
            return []
        if event.mismatch:
            self._standby = ""
            self.deadlines.set("rollover", now + 30_000)
            return [
                DiscardStandby(),
                Notice("warning", "rollover_failed", event.mismatch[:200]),
            ]
        self._standby = "ready"
        return self._maybe_switch(now)

    def _on_standby_failed(self, event: ev.StandbyFailed, now: int) -> list[Action]:
        if not self._standby:
            return []
        self._standby = ""
        if self.phase is Phase.ACTIVE:
            self.deadlines.set("rollover", now + 30_000)  # try again, well before the cap
        return [Notice("warning", "rollover_failed", event.detail[:200])]

    def _quiet(self) -> bool:
        """No response in flight or wanted, nothing playing, the caller not mid-turn
        (speaking, or spoken but not yet transcribed), no tool or hang-up pending."""
        return not (
            self.responses.busy
            or self.responses.pending is not None
            or self.ledger.outstanding
            or self.transcript.speech
            or self._tools
            or self._control is not None
        )

    def _maybe_switch(self, now: int) -> list[Action]:
        if self._standby != "ready" or self.phase is not Phase.ACTIVE:
            return []
        if not self._quiet():
            self.deadlines.set("rollover_check", now + 1_000)
            return []
        return self._switch(now, forced=False)

    def _switch(self, now: int, *, forced: bool) -> list[Action]:
        """Move to the standby: first what it missed since it was seeded, then the swap."""
        lines, tools = self._seeded
        delta, _ = seed_items(
            self.transcript.history[lines:],
            [
                ToolRecord(t.after_lines - lines, t.call_id, t.name, t.arguments, t.output)
                for t in self._tool_log[tools:]
            ],
            self.config.seed_max_chars,
        )
        self._standby = ""
        self.transcript.stop_awaiting_truncations()
        self.deadlines.cancel("rollover_check")
        self.responses.reset_connection()
        self.responses.pending = None
        self.stats["rollovers"] += 1
        self.deadlines.set("rollover", now + self.config.rollover_after_ms)
        actions: list[Action] = []
        if delta:
            actions.append(ToStandby(tuple(delta)))
        actions += [
            SwitchToStandby(),
            Observed("rollover", self.call_ms(now), {"forced": forced}),
        ]
        return actions

    def _lose_playback(self, now: int) -> list[Action]:
        """The old session died with audio still queued: it is cut where it was heard."""
        actions: list[Action] = []
        if self.ledger.outstanding:
            actions.append(ClearPlayback())
            self.ledger.clear()
            self.stats["clears"] += 1
            if self._codec is not None:
                self._codec.reset_to_twilio()
        for playback in self.ledger.unsettled():
            playback.truncated = True
            self.transcript.dropped.add(playback.item_id)
            actions.append(
                self.transcript.agent_line(
                    self.ledger, playback, self._item_start(playback), interrupted=True
                )
            )
        return actions

    # ---------------------------------------------------------------- outages

    def _start_outage(self, now: int, cause: str) -> Outage:
        agent = self.config.agent
        budget = (
            agent.model_retry_s * 1000
            if agent.on_model_failure == "retry"
            else self.config.reconnect_budget_ms
        )
        self.outage = Outage(now, cause, now + budget)
        self.deadlines.set("outage_budget", now + budget)
        if self.config.filler_audio:
            self.deadlines.set("outage_filler", now + self.config.filler_after_ms)
        return self.outage

    def _lose_model(self, now: int, cause: str, retry: str, detail: str) -> list[Action]:
        """The model connection is gone mid-call: keep the caller, get a new one.

        Agent audio still playing is treated as interrupted where the caller stopped
        hearing it (the dead session cannot be truncated, and the new one is seeded
        with the heard text instead)."""
        self.phase = Phase.RECONNECTING
        self.deadlines.cancel("rollover")
        was_speaking = self.responses.busy or self.ledger.outstanding
        actions: list[Action] = [
            Notice("warning", "model_lost", f"model connection lost ({cause}): {detail[:200]}"),
            Observed("model_lost", self.call_ms(now), {"cause": cause}),
        ]
        actions += self._lose_playback(now)
        self._replay_open_turn()
        self.responses.reset_connection()
        self.responses.pending = None
        self._speech_stopped_at = None
        outage = self._start_outage(now, cause)
        outage.agent_was_speaking = was_speaking
        if retry == "never":
            return actions + self._give_up(now, cause, detail)
        return actions + self._attempt(now, retry)

    def _replay_open_turn(self) -> None:
        """Hold again the audio of a caller turn the dead session heard begin but not end
        (its input buffer died with it), from just before the turn started."""
        starts = [start for start, end in self.transcript.speech.values() if end < 0]
        recent, self._recent = self._recent, deque()
        if not starts:
            return
        since = self.started_at + min(starts) - SPEECH_PREFIX_MS  # starts are call ms
        for at, payload, nbytes in recent:
            if at >= since:
                self._preconnect.append((payload, nbytes))
                self._preconnect_bytes += nbytes

    def _attempt(self, now: int, retry: str) -> list[Action]:
        """Open a connection now (the first retry, or a planned close), or after a backoff."""
        outage = self.outage
        assert outage is not None
        outage.attempts += 1
        if self._rng is None:
            sid = self.stream.call_sid if self.stream else ""
            self._rng = random.Random(zlib.crc32(sid.encode()))  # replays identically
        delay = 0 if retry == "now" else backoff_ms(outage.attempts, self._rng)
        if delay <= 0:
            return [ConnectModel()]
        self.deadlines.set("reconnect", now + delay)
        return []

    def _retry_now(self, now: int) -> list[Action]:
        outage = self.outage
        if outage is None or outage.gave_up or self.phase is Phase.ACTIVE:
            return []
        return [ConnectModel()]

    def _outage_filler(self, now: int) -> list[Action]:
        """The gap is long enough to notice: tell the caller to hold on."""
        if self.phase is Phase.ACTIVE or self.ledger.outstanding:
            return []
        outage = self.outage
        if outage is None or outage.gave_up:
            return []
        return self._play_clip(self.config.filler_audio, "[one moment, please]", now)

    def _play_clip(self, audio: bytes, label: str, now: int) -> list[Action]:
        """Play a prompt of our own (μ-law), tracked like agent audio so the caller
        hears it in full before anything that waits for playback (a hang-up)."""
        if not audio or self.stream is None:
            return []
        self._clips += 1
        item_id = f"prompt_{self._clips}"
        self._local_items.add(item_id)
        actions: list[Action] = []
        step = 1600  # 200 ms chunks, each with its mark
        ratio = 1 if self._passthrough else 3
        for start in range(0, len(audio), step):
            chunk = audio[start : start + step]
            actions += self._play(
                item_id, "", len(chunk) * ratio, b64encode(chunk).decode("ascii"), now
            )
        self.ledger.items[item_id].audio_done = True
        self.transcript.agent_done(item_id, label)
        return actions

    def _give_up(self, now: int, cause: str, detail: str) -> list[Action]:
        """The model cannot be reached: do what the agent profile says, politely."""
        outage = self.outage
        if outage is None:
            outage = self._start_outage(now, cause)
        outage.gave_up = True
        for name in ("reconnect", "outage_filler", "outage_budget"):
            self.deadlines.cancel(name)
        self.stats["fallbacks"] += 1
        agent = self.config.agent
        transfer = agent.on_model_failure == "transfer" and bool(agent.fallback_number)
        action = "transfer" if transfer else "hang_up"
        self.fallback = action
        actions: list[Action] = [
            Notice("error", "model_fallback", f"model unreachable ({cause}): {action}"),
            Observed("fallback", self.call_ms(now), {"action": action, "cause": cause}),
        ]
        if self.stream is None:
            return actions + self.end("model_unavailable", detail, now)
        actions += self._play_clip(self.config.apology_audio, "[apology: model unavailable]", now)
        self._end_after_control = "model_unavailable"
        request = ControlRequest(
            action, agent.fallback_number if transfer else None, reason=f"model {cause}"
        )
        if transfer and not self.config.rest_control:
            request = ControlRequest("hang_up", reason=f"model {cause}")
        self._control = _PendingControl(request, now)
        self.deadlines.set("control_grace", now + self.config.control_grace_ms)
        return actions + self._maybe_control(now)

    def _reseed(self, now: int) -> list[Action]:
        """A new session after an outage: the conversation so far, then held audio."""
        self.transcript.stop_awaiting_truncations()
        items, dropped = seed_items(
            self.transcript.history, self._tool_log, self.config.seed_max_chars
        )
        actions: list[Action] = list(items)
        if dropped:
            note = f"{dropped} oldest turns left out of the new session"
            actions.append(Notice("info", "seed_trimmed", note))
        outage = self.outage
        if outage is not None:
            self._resume = outage.agent_was_speaking
            actions += self._end_outage(now)
        return actions

    def _end_outage(self, now: int) -> list[Action]:
        outage, self.outage = self.outage, None
        for name in ("reconnect", "outage_filler", "outage_budget"):
            self.deadlines.cancel(name)
        if outage is None:
            return []
        gap = now - outage.since
        self.stats["reconnects"] += 1
        self.stats["model_gap_ms"] += gap
        return [
            Observed(
                "reconnected",
                self.call_ms(now),
                {"gap_ms": gap, "attempts": outage.attempts, "cause": outage.cause},
            )
        ]

    # ------------------------------------------------------------- lifecycle

    def end(self, reason: str, detail: str, now: int) -> list[Action]:
        """End the call once; settle what the caller heard into the transcript."""
        if self.phase is Phase.ENDED:
            return []
        self.phase = Phase.ENDED
        self.end_reason = reason
        actions: list[Action] = []
        for playback in list(self.ledger.items.values()):
            if playback.truncated or playback.sent == 0:
                continue
            start = self._item_start(playback)
            actions.append(
                self.transcript.agent_line(
                    self.ledger, playback, start, interrupted=not playback.finished_playing
                )
            )
        actions.append(EndCall(reason, detail))
        return actions
