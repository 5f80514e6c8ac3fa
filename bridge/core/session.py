"""One phone call's rules, as a sans-I/O state machine.

``CallSession`` takes what arrives from Twilio and from the Realtime server
(raw text frames), tool results, and the current time in milliseconds, and
returns the actions to carry out.  It never awaits, sleeps, reads a clock or
touches a socket, so the very same logic runs live (``bridge.relay``), on a
virtual clock from a recorded tape (``bridge.tapes``) and under unit tests fed
with the awkward event orders real networks produce.

The barge-in rule it implements (see ``ledger.py`` for the accounting):
on ``input_audio_buffer.speech_started`` with agent audio still buffered at
Twilio, send ``clear`` at once, truncate each unsettled agent item at what the
caller heard (per mark echoes, clamped to what was sent), drop the late deltas
of the interrupted response, and send ``response.cancel`` only when the server
is not configured to cancel by itself.  An item that finished playing is never
truncated.
"""

from __future__ import annotations

import binascii
import json
from base64 import b64decode, b64encode
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from bridge.config import AgentConfig, AudioMode
from bridge.core.actions import (
    Action,
    CallControl,
    ConnectModel,
    EndCall,
    Notice,
    RunTool,
    SendModel,
    SendTwilio,
    StreamStarted,
    TranscriptLine,
    Usage,
)
from bridge.core.ledger import ItemPlayback, MarkOutcome, PlaybackLedger
from bridge.realtime.dialects import DialectSpec
from bridge.twilio.media import (
    MediaProtocolError,
    StreamInfo,
    clear_message,
    decode_frame,
    dtmf_digit,
    mark_message,
    mark_name,
    media_message,
    media_payload,
    parse_start,
)


class Phase(Enum):
    WAITING_START = "waiting_start"  # socket open, no ``start`` yet
    AUTHORISING = "authorising"  # ``start`` seen, driver checking the stream token
    CONNECTING = "connecting"  # model connection being opened
    ACTIVE = "active"  # both sides up
    ENDED = "ended"


@dataclass(frozen=True)
class SessionConfig:
    """Everything that shapes one call's behaviour."""

    agent: AgentConfig
    dialect: DialectSpec
    audio_mode: AudioMode = "passthrough"
    model: str = "gpt-realtime"
    tools: tuple[dict[str, Any], ...] = ()
    max_call_ms: int = 3_600_000
    preconnect_buffer_ms: int = 5_000
    dtmf_flush_ms: int = 1_200
    control_grace_ms: int = 15_000
    tool_filler_after_ms: int | None = 3_000
    tool_filler_instructions: str = (
        "Briefly tell the caller you are still working on it and it will take a moment more. "
        "Do not call any tool."
    )


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A call-control request from a tool, carried out once playback drains."""

    kind: str  # "hang_up" | "transfer" | "send_dtmf"
    target: str | None = None
    digits: str | None = None
    reason: str = ""


@dataclass(slots=True)
class _AgentItem:
    """Transcript text of an agent item, kept until the caller has heard it (or not)."""

    text: str = ""
    text_done: bool = False
    content_index: int = 0


@dataclass(slots=True)
class _PendingControl:
    request: ControlRequest
    since: int


Transcoder = Any  # bridge.audio.transcoder.Pcm16Transcoder (imported lazily)

_FATAL_MODEL_ERRORS = {"session_expired", "beta_api_shape_disabled", "invalid_api_key"}


def _b64_len(payload: str) -> int:
    """Decoded length of a base64 string without decoding it."""
    n = len(payload)
    if n == 0:
        return 0
    pad = 2 if payload.endswith("==") else 1 if payload.endswith("=") else 0
    return n * 3 // 4 - pad


def _append(payload: str) -> SendModel:
    """``input_audio_buffer.append`` with its JSON written directly.

    ``payload`` is validated (or freshly encoded) base64, so it needs no escaping; this
    runs 50 times a second per call, where a generic encoder is measurable."""
    return SendModel(
        {"type": "input_audio_buffer.append", "audio": payload},
        '{"type": "input_audio_buffer.append", "audio": "' + payload + '"}',
    )


def _media(stream_sid: str, payload: str) -> SendTwilio:
    """A Twilio ``media`` message with its JSON written directly (see ``_append``).

    The stream SID comes from a parsed ``start`` message and may in principle hold any
    character, so it is JSON-encoded; the base64 payload needs no escaping."""
    return SendTwilio(
        media_message(stream_sid, payload),
        '{"event": "media", "streamSid": '
        + json.dumps(stream_sid)
        + ', "media": {"payload": "'
        + payload
        + '"}}',
    )


class CallSession:
    """The per-call state machine.  Every public method returns a list of actions."""

    def __init__(self, config: SessionConfig, transcoder: Transcoder | None = None) -> None:
        self.config = config
        self.dialect = config.dialect
        self.phase = Phase.WAITING_START
        self.stream: StreamInfo | None = None
        self.started_at = 0
        self.end_reason: str | None = None
        self._passthrough = config.audio_mode == "passthrough"
        # Model-side samples per ms: 8 for pcmu (1 byte/sample), 24 for pcm16 (2 bytes/sample).
        self.ledger = PlaybackLedger(samples_per_ms=8 if self._passthrough else 24)
        self._transcoder = transcoder
        if not self._passthrough and transcoder is None:
            from bridge.audio.transcoder import Pcm16Transcoder

            self._transcoder = Pcm16Transcoder()
        self._preconnect: deque[tuple[str, int]] = deque()
        self._preconnect_bytes = 0
        self._session_ready = False
        self._active_response: str | None = None
        self._awaiting_created = False
        self._pending_response: dict[str, Any] | None = None
        self._last_request: dict[str, Any] = {}
        self._response_samples: dict[str, int] = {}
        self._interrupted_responses: set[str] = set()
        self._dropped_items: set[str] = set()
        self._agent_items: dict[str, _AgentItem] = {}
        self._speech: dict[str, list[int]] = {}  # caller item -> [start_ms, end_ms]
        self._tools: dict[str, tuple[str, int, str | None]] = {}  # call_id -> (name, since, resp)
        self._filler_sent: set[str] = set()
        self._control: _PendingControl | None = None
        self._dtmf: list[str] = []
        self._dtmf_last = 0
        self._warned: dict[str, int] = {}
        self._audio_in_reported = 0
        self._dtmf_played = 0
        self.stats: dict[str, int] = {
            "twilio_frames": 0,
            "media_in": 0,
            "audio_in_bytes": 0,
            "deltas_forwarded": 0,
            "deltas_dropped": 0,
            "bad_frames": 0,
            "barge_ins": 0,
            "truncates": 0,
            "clears": 0,
            "stale_marks": 0,
            "preconnect_dropped": 0,
        }
        self._model_handlers: dict[str, Callable[[dict[str, Any], int], list[Action]]] = {
            "session.updated": self._on_session_updated,
            "input_audio_buffer.speech_started": self._on_speech_started,
            "input_audio_buffer.speech_stopped": self._on_speech_stopped,
            "conversation.item.input_audio_transcription.completed": self._on_caller_transcript,
            "response.created": self._on_response_created,
            "response.output_audio.delta": self._on_audio_delta,
            "response.output_audio.done": self._on_audio_done,
            "response.output_audio_transcript.delta": self._on_transcript_delta,
            "response.output_audio_transcript.done": self._on_transcript_done,
            "response.function_call_arguments.done": self._on_function_call,
            "response.done": self._on_response_done,
            "error": self._on_model_error,
        }

    # ------------------------------------------------------------------ utils

    @property
    def ended(self) -> bool:
        return self.phase is Phase.ENDED

    def call_ms(self, now: int) -> int:
        """Milliseconds since Twilio's ``start``: the timeline of transcripts."""
        return max(0, now - self.started_at)

    def _warn_once(self, code: str, message: str, level: str = "warning") -> list[Action]:
        """A notice the first time ``code`` happens, then one per 500 repeats.

        A misbehaving peer can send garbage 50 times a second; the log should say so
        without becoming a flood (the counters in ``stats`` keep the exact numbers)."""
        seen = self._warned.get(code, 0) + 1
        self._warned[code] = seen
        if seen == 1:
            return [Notice(level, code, message)]  # type: ignore[arg-type]
        if seen % 500 == 0:
            return [Notice(level, code, f"{message} ({seen} times so far)")]  # type: ignore[arg-type]
        return []

    # ------------------------------------------------------------ Twilio side

    def twilio_frame(self, frame: str | bytes, now: int) -> list[Action]:
        """Handle one text frame from Twilio's Media Streams WebSocket."""
        if self.phase is Phase.ENDED:
            return []
        self.stats["twilio_frames"] += 1
        try:
            message = decode_frame(frame)
            event = message["event"]
            if event == "media":
                return self._on_media(message)
            if event == "mark":
                return self._on_mark(mark_name(message), now)
            if event == "start":
                return self._on_start(message, now)
            if event == "dtmf":
                return self._on_dtmf(dtmf_digit(message), now)
            if event == "stop":
                return self.end("caller_hung_up", "Twilio sent stop", now)
            if event == "connected":
                return []
            self.stats["bad_frames"] += 1
            return self._warn_once(
                f"twilio_unknown_event:{event[:40]}", f"ignoring unknown Twilio event {event!r}"
            )
        except MediaProtocolError as exc:
            self.stats["bad_frames"] += 1
            return self._warn_once("twilio_bad_frame", f"ignoring malformed Twilio frame: {exc}")

    def _on_start(self, message: dict[str, Any], now: int) -> list[Action]:
        if self.phase is not Phase.WAITING_START:
            return self._warn_once("twilio_duplicate_start", "ignoring a second 'start' message")
        try:
            info = parse_start(message)
        except MediaProtocolError as exc:
            # Without a valid start there is no call to bridge: say why and hang up.
            self.stats["bad_frames"] += 1
            return self.end("bad_start", str(exc), now)
        self.stream = info
        self.started_at = now
        self.phase = Phase.AUTHORISING
        return [StreamStarted(info)]

    def accept_stream(self, now: int, config: SessionConfig | None = None) -> list[Action]:
        """The driver authorised the stream: connect to the model.

        ``config`` lets the driver pick the agent only now, from the call's own
        parameters (the number called, a profile name in ``<Parameter>``)."""
        if self.phase is not Phase.AUTHORISING:
            return []
        if config is not None:
            if config.audio_mode != self.config.audio_mode:
                raise ValueError("the audio mode cannot change once the call started")
            self.config = config
            self.dialect = config.dialect
        self.phase = Phase.CONNECTING
        return [ConnectModel()]

    def _on_media(self, message: dict[str, Any]) -> list[Action]:
        if self.phase is Phase.WAITING_START:
            self.stats["bad_frames"] += 1
            return self._warn_once("twilio_media_before_start", "ignoring 'media' before 'start'")
        payload = media_payload(message)
        try:
            audio = b64decode(payload, validate=True)
        except binascii.Error:
            self.stats["bad_frames"] += 1
            return self._warn_once("twilio_bad_base64", "ignoring media with invalid base64")
        self.stats["media_in"] += 1
        self.stats["audio_in_bytes"] += len(audio)
        if not self._passthrough:
            assert self._transcoder is not None
            payload = b64encode(self._transcoder.to_model(audio)).decode("ascii")
        if self.phase is Phase.ACTIVE:
            return [_append(payload)]
        return self._buffer_preconnect(payload, len(audio))

    def _buffer_preconnect(self, payload: str, nbytes: int) -> list[Action]:
        """Hold caller audio until the model is connected, keeping the newest few seconds.

        ``nbytes`` counts μ-law bytes (8 per ms) whatever the audio mode."""
        self._preconnect.append((payload, nbytes))
        self._preconnect_bytes += nbytes
        limit = self.config.preconnect_buffer_ms * 8
        actions: list[Action] = []
        while self._preconnect_bytes > limit and len(self._preconnect) > 1:
            _, dropped = self._preconnect.popleft()
            self._preconnect_bytes -= dropped
            self.stats["preconnect_dropped"] += 1
            actions = self._warn_once(
                "preconnect_overflow", "model connection slow: dropping oldest caller audio"
            )
        return actions

    def _on_mark(self, name: str, now: int) -> list[Action]:
        outcome = self.ledger.on_mark(name)
        if outcome is MarkOutcome.STALE:
            self.stats["stale_marks"] += 1
            return []
        if outcome is MarkOutcome.UNKNOWN:
            return self._warn_once("twilio_unknown_mark", f"ignoring unknown mark {name[:80]!r}")
        actions = self._settle_played(now)
        actions += self._maybe_control(now)
        return actions

    def _on_dtmf(self, digit: str, now: int) -> list[Action]:
        if self.phase is not Phase.ACTIVE and self.phase is not Phase.CONNECTING:
            return []
        self._dtmf.append(digit)
        self._dtmf_last = now
        if digit == "#":
            return self._flush_dtmf(now)
        return []

    def _flush_dtmf(self, now: int) -> list[Action]:
        digits = "".join(self._dtmf)
        self._dtmf.clear()
        if not digits or self.phase is not Phase.ACTIVE:
            return []
        text = f"[The caller pressed on their phone keypad: {' '.join(digits)}]"
        at = self.call_ms(now)
        actions: list[Action] = [
            SendModel(
                {
                    "type": "conversation.item.create",
                    "item": {
                        "type": "message",
                        "role": "user",
                        "content": [{"type": "input_text", "text": text}],
                    },
                }
            ),
            TranscriptLine("system", f"caller pressed {digits}", at, at),
        ]
        return actions + self._request_response(None)

    # ------------------------------------------------------------- model side

    def model_connected(self, now: int) -> list[Action]:
        """The Realtime socket is open: configure the session and flush held audio."""
        if self.phase is not Phase.CONNECTING:
            return []
        self.phase = Phase.ACTIVE
        actions: list[Action] = [
            SendModel(
                self.dialect.session_update(
                    self.config.agent,
                    self.config.audio_mode,
                    self.config.model,
                    list(self.config.tools),
                )
            )
        ]
        for payload, _ in self._preconnect:
            actions.append(_append(payload))
        self._preconnect.clear()
        self._preconnect_bytes = 0
        if self._dtmf:
            actions += self._flush_dtmf(now)
        return actions

    def model_failed(self, detail: str, now: int) -> list[Action]:
        """The model connection could not be opened."""
        return self.end("model_unavailable", detail, now)

    def model_frame(self, frame: str | bytes, now: int) -> list[Action]:
        """Handle one text frame from the Realtime server."""
        if self.phase is Phase.ENDED:
            return []
        try:
            event = json.loads(frame)
            kind = self.dialect.rename(event["type"])
        except (ValueError, TypeError, KeyError):
            return self._warn_once("model_bad_frame", "ignoring a malformed frame from the model")
        handler = self._model_handlers.get(kind)
        if handler is None:
            return []
        try:
            return handler(event, now)
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            return self._warn_once(
                "model_bad_event",
                f"ignoring malformed {kind!r} from the model ({exc.__class__.__name__}: {exc})",
            )

    def _on_session_updated(self, event: dict[str, Any], now: int) -> list[Action]:
        session = event.get("session") or {}
        got = self.dialect.confirmed_formats(session)
        want = self.dialect.expected_formats(self.config.audio_mode)
        if got != want:
            return self.end(
                "model_config_rejected",
                f"model reports audio formats {got}, the bridge needs {want}",
                now,
            )
        if self._session_ready:
            return []
        self._session_ready = True
        greeting = self.config.agent.greeting
        if greeting:
            return self._request_response(
                {
                    "instructions": "Greet the caller by saying exactly this, and nothing else: "
                    + json.dumps(greeting)
                }
            )
        return []

    def _on_speech_started(self, event: dict[str, Any], now: int) -> list[Action]:
        item_id = event.get("item_id")
        if isinstance(item_id, str):
            self._speech[item_id] = [int(event.get("audio_start_ms", self.call_ms(now))), -1]
        return self._barge_in(now)

    def _barge_in(self, now: int) -> list[Action]:
        """The caller started talking: stop the agent where the caller stopped hearing it."""
        actions: list[Action] = []
        interrupted = self.ledger.unsettled()
        if self.ledger.outstanding:
            assert self.stream is not None
            actions.append(SendTwilio(clear_message(self.stream.stream_sid)))
            self.ledger.clear()
            self.stats["clears"] += 1
            if self._transcoder is not None:
                self._transcoder.reset_to_twilio()
        for playback in interrupted:
            actions += self._truncate(playback, now)
        if self._active_response is not None:
            self._interrupted_responses.add(self._active_response)
            if not self.config.agent.turn_detection.server_interrupts:
                actions.append(SendModel({"type": "response.cancel"}))
        if actions:
            self.stats["barge_ins"] += 1
        return actions

    def _truncate(self, playback: ItemPlayback, now: int) -> list[Action]:
        heard_ms = self.ledger.heard_ms(playback)
        playback.truncated = True
        self._dropped_items.add(playback.item_id)
        self.stats["truncates"] += 1
        item = self._agent_items.get(playback.item_id) or _AgentItem()
        actions: list[Action] = [
            SendModel(
                {
                    "type": "conversation.item.truncate",
                    "item_id": playback.item_id,
                    "content_index": item.content_index,
                    "audio_end_ms": heard_ms,
                }
            )
        ]
        actions.append(self._agent_line(playback, item, interrupted=True))
        return actions

    def _on_speech_stopped(self, event: dict[str, Any], now: int) -> list[Action]:
        item_id = event.get("item_id")
        if isinstance(item_id, str) and item_id in self._speech:
            self._speech[item_id][1] = int(event.get("audio_end_ms", self.call_ms(now)))
        return []

    def _on_caller_transcript(self, event: dict[str, Any], now: int) -> list[Action]:
        text = str(event.get("transcript", "")).strip()
        start, end = self._speech.pop(str(event.get("item_id")), [-1, -1])
        at = self.call_ms(now)
        start = start if start >= 0 else at
        end = end if end >= 0 else max(start, at)
        return [TranscriptLine("caller", text, start, end, item_id=event.get("item_id"))]

    def _on_response_created(self, event: dict[str, Any], now: int) -> list[Action]:
        response_id = event["response"]["id"]
        self._active_response = response_id
        self._awaiting_created = False
        self._response_samples[response_id] = 0
        return []

    def _on_audio_delta(self, event: dict[str, Any], now: int) -> list[Action]:
        item_id = event["item_id"]
        response_id = event.get("response_id", "")
        if item_id in self._dropped_items or response_id in self._interrupted_responses:
            self.stats["deltas_dropped"] += 1
            return []
        assert self.stream is not None
        delta: str = event["delta"]
        if self._passthrough:
            samples = _b64_len(delta)
            payload = delta
        else:
            pcm = b64decode(delta)
            samples = len(pcm) // 2
            assert self._transcoder is not None
            payload = b64encode(self._transcoder.to_twilio(pcm)).decode("ascii")
        if samples <= 0:
            return []
        agent_item = self._agent_items.get(item_id)
        if agent_item is None:
            agent_item = self._agent_items[item_id] = _AgentItem()
        agent_item.content_index = int(event.get("content_index", 0))
        self.stats["deltas_forwarded"] += 1
        if response_id in self._response_samples:
            self._response_samples[response_id] += samples
        return self._play(item_id, response_id, samples, payload, now)

    def _play(
        self, item_id: str, response_id: str, samples: int, payload: str, now: int
    ) -> list[Action]:
        """Send agent audio to Twilio, followed by the mark that will tell when it played.

        ``samples`` is the model-timeline length the ledger accounts for this audio."""
        assert self.stream is not None
        sid = self.stream.stream_sid
        name = self.ledger.record_chunk(item_id, response_id, samples, now)
        actions: list[Action] = [_media(sid, payload)] if payload else []
        actions.append(SendTwilio(mark_message(sid, name)))
        return actions

    def _on_audio_done(self, event: dict[str, Any], now: int) -> list[Action]:
        item_id = event["item_id"]
        playback = self.ledger.items.get(item_id)
        if playback is None or playback.truncated:
            return []
        actions: list[Action] = []
        if self._transcoder is not None and self.stream is not None:
            tail = self._transcoder.flush_to_twilio()
            if tail:
                # The resampler's last few ms belong to this item; send them before its
                # final mark so that mark really means "the whole item played".
                actions += self._play(
                    item_id, playback.response_id, 0, b64encode(tail).decode("ascii"), now
                )
        playback.audio_done = True
        return actions + self._settle_played(now)

    def _on_transcript_delta(self, event: dict[str, Any], now: int) -> list[Action]:
        item_id = event["item_id"]
        if item_id in self._dropped_items:
            return []
        item = self._agent_items.setdefault(item_id, _AgentItem())
        item.text += str(event.get("delta", ""))
        return []

    def _on_transcript_done(self, event: dict[str, Any], now: int) -> list[Action]:
        item_id = event["item_id"]
        if item_id in self._dropped_items:
            return []
        item = self._agent_items.setdefault(item_id, _AgentItem())
        if isinstance(event.get("transcript"), str):
            item.text = event["transcript"]
        item.text_done = True
        return self._settle_played(now)

    def _on_function_call(self, event: dict[str, Any], now: int) -> list[Action]:
        call_id = str(event["call_id"])
        if call_id in self._tools:
            return []
        name = str(event.get("name", ""))
        self._tools[call_id] = (name, now, event.get("response_id"))
        return [RunTool(call_id, name, str(event.get("arguments", "")))]

    def _on_response_done(self, event: dict[str, Any], now: int) -> list[Action]:
        response = event.get("response") or {}
        response_id = str(response.get("id", ""))
        status = str(response.get("status", ""))
        if self._active_response == response_id or self._active_response is None:
            self._active_response = None
        self._awaiting_created = False
        # A finished (or cancelled) response produces no more audio or text for its items,
        # even when the server skipped the per-item ``.done`` events.
        for playback in self.ledger.items.values():
            if playback.response_id == response_id:
                playback.audio_done = True
                item = self._agent_items.get(playback.item_id)
                if item is not None:
                    item.text_done = True
        actions: list[Action] = [
            Usage(
                response_id,
                status,
                response.get("usage") or {},
                self._response_samples.pop(response_id, 0) // self.ledger.samples_per_ms,
                self._take_audio_in_ms(),
            )
        ]
        self._interrupted_responses.discard(response_id)
        actions += self._settle_played(now)
        if self._pending_response is not None and not self._tools:
            request, self._pending_response = self._pending_response, None
            actions += self._send_response_create(request)
        actions += self._maybe_control(now)
        return actions

    def _take_audio_in_ms(self) -> int:
        total = self.stats["audio_in_bytes"]
        since, self._audio_in_reported = total - self._audio_in_reported, total
        return since // 8

    def _on_model_error(self, event: dict[str, Any], now: int) -> list[Action]:
        error = event.get("error") or {}
        code = str(error.get("code") or error.get("type") or "unknown")
        message = str(error.get("message", ""))[:300]
        if code == "conversation_already_has_active_response":
            self._awaiting_created = False
            if self._pending_response is None:
                self._pending_response = self._last_request
            return [Notice("info", "model_busy", "response already active; will retry after it")]
        if error.get("event_id") == "bridge_session_update" and not self._session_ready:
            return self.end("model_config_rejected", f"{code}: {message}", now)
        if code in _FATAL_MODEL_ERRORS:
            return self.end("model_error", f"{code}: {message}", now)
        return [Notice("warning", f"model_error:{code}", message)]

    # ------------------------------------------------------------ responses

    def _request_response(self, request: dict[str, Any] | None) -> list[Action]:
        """Ask for a response now, or as soon as the current one is done."""
        if self._active_response is not None or self._awaiting_created or self._tools:
            self._pending_response = request or self._pending_response or {}
            return []
        return self._send_response_create(request or {})

    def _send_response_create(self, request: dict[str, Any]) -> list[Action]:
        self._awaiting_created = True
        self._last_request = request
        event: dict[str, Any] = {"type": "response.create"}
        if request:
            event["response"] = request
        return [SendModel(event)]

    # ---------------------------------------------------------------- tools

    def tool_result(
        self, call_id: str, output: str, now: int, control: ControlRequest | None = None
    ) -> list[Action]:
        """A tool finished: give the model its output, then let it speak again."""
        if self.phase is not Phase.ACTIVE:
            return []
        entry = self._tools.pop(call_id, None)
        if entry is None:
            return [Notice("warning", "tool_unknown_call", f"result for unknown call {call_id!r}")]
        self._filler_sent.discard(call_id)
        actions: list[Action] = [
            SendModel(
                {
                    "type": "conversation.item.create",
                    "item": {"type": "function_call_output", "call_id": call_id, "output": output},
                }
            )
        ]
        if control is not None and control.kind == "send_dtmf":
            actions += self._play_dtmf(control.digits or "", now)
            control = None
        if control is not None:
            if self._control is None:
                self._control = _PendingControl(control, now)
                _, _, response_id = entry
                if not self._response_spoke(response_id):
                    farewell = (
                        "Say a brief goodbye to the caller now."
                        if control.kind == "hang_up"
                        else "Tell the caller in one short sentence that you are transferring "
                        "them now."
                    )
                    actions += self._request_response({"instructions": farewell})
            return actions + self._maybe_control(now)
        if not self._tools:
            actions += self._request_response(None)
        return actions

    def _response_spoke(self, response_id: str | None) -> bool:
        return any(p.response_id == response_id and p.sent > 0 for p in self.ledger.items.values())

    def _play_dtmf(self, digits: str, now: int) -> list[Action]:
        from bridge.audio.dtmf import dtmf_ulaw

        if not digits or self.stream is None:
            return []
        audio = dtmf_ulaw(digits)
        self._dtmf_played += 1
        item_id = f"dtmf_{self._dtmf_played}"
        samples = len(audio) * (3 if not self._passthrough else 1)
        actions = self._play(item_id, "", samples, b64encode(audio).decode("ascii"), now)
        self.ledger.items[item_id].audio_done = True
        self._agent_items[item_id] = _AgentItem(text=f"[DTMF {digits}]", text_done=True)
        return actions

    def _maybe_control(self, now: int) -> list[Action]:
        """Carry out a pending hang-up/transfer once the agent's last words have played."""
        pending = self._control
        if pending is None or self.stream is None:
            return []
        overdue = now - pending.since >= self.config.control_grace_ms
        busy = (
            self._active_response is not None
            or self._awaiting_created
            or self._pending_response is not None
            or self.ledger.outstanding
        )
        if busy and not overdue:
            return []
        self._control = None
        request = pending.request
        kind = "hang_up" if request.kind == "hang_up" else "transfer"
        actions: list[Action] = []
        if overdue and busy:
            actions.append(
                Notice("warning", "control_overdue", f"{kind}: playback did not drain in time")
            )
        actions.append(CallControl(kind, self.stream.call_sid, request.target, request.reason))  # type: ignore[arg-type]
        return actions

    # --------------------------------------------------------- transcripts

    def _agent_line(self, playback: ItemPlayback, item: _AgentItem, interrupted: bool) -> Action:
        heard_ms = self.ledger.heard_ms(playback)
        sent_ms = max(1, self.ledger.sent_ms(playback))
        text = item.text.strip()
        if interrupted:
            words = text.split()
            keep = round(len(words) * min(1.0, heard_ms / sent_ms))
            text = " ".join(words[:keep])
        start = self.call_ms(playback.first_sent_at or self.started_at)
        self._agent_items.pop(playback.item_id, None)
        self.ledger.forget(playback.item_id)
        return TranscriptLine(
            "agent", text, start, start + heard_ms, interrupted, item_id=playback.item_id
        )

    def _settle_played(self, now: int) -> list[Action]:
        """Emit transcript lines for agent items the caller has now heard in full."""
        actions: list[Action] = []
        for playback in list(self.ledger.items.values()):
            if playback.truncated or not playback.finished_playing:
                continue
            item = self._agent_items.get(playback.item_id)
            if item is not None and not item.text_done:
                continue
            actions.append(self._agent_line(playback, item or _AgentItem(), interrupted=False))
        return actions

    # ----------------------------------------------------------- lifecycle

    def tick(self, now: int) -> list[Action]:
        """Time passed: DTMF debounce, slow-tool filler, control grace, call duration cap."""
        if self.phase is Phase.ENDED or self.phase is Phase.WAITING_START:
            return []
        if now - self.started_at >= self.config.max_call_ms:
            return self.end("max_duration", f"call reached {self.config.max_call_ms} ms", now)
        actions: list[Action] = []
        if self._dtmf and now - self._dtmf_last >= self.config.dtmf_flush_ms:
            actions += self._flush_dtmf(now)
        filler_after = self.config.tool_filler_after_ms
        if filler_after is not None and self._tools and self.phase is Phase.ACTIVE:
            for call_id, (_name, since, _resp) in self._tools.items():
                if call_id in self._filler_sent or now - since < filler_after:
                    continue
                if self._active_response or self._awaiting_created or self.ledger.outstanding:
                    continue
                self._filler_sent.add(call_id)
                actions += self._send_response_create(
                    {"instructions": self.config.tool_filler_instructions}
                )
        if self._control is not None:
            actions += self._maybe_control(now)
        return actions

    def twilio_closed(self, now: int, detail: str = "") -> list[Action]:
        """Twilio's socket closed (caller hung up, network loss)."""
        return self.end("caller_disconnected", detail, now)

    def model_closed(self, now: int, code: int | None = None, detail: str = "") -> list[Action]:
        """The Realtime socket closed under us."""
        return self.end("model_closed", f"code={code} {detail}".strip(), now)

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
            item = self._agent_items.get(playback.item_id) or _AgentItem()
            actions.append(
                self._agent_line(playback, item, interrupted=not playback.finished_playing)
            )
        actions.append(EndCall(reason, detail))
        return actions
