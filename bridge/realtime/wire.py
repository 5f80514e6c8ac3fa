"""The Realtime API on the wire: server events to core events, core actions to client events.

The only module that reads or writes Realtime JSON.  Dialect differences (GA,
beta, Azure) come from the table in ``dialects.py``: beta names are renamed to
GA names on arrival and ``session.update`` takes the dialect's shape; the other
client events are the same on the wire in every dialect.

A malformed server event never raises: it becomes a
:class:`~bridge.core.events.ProtocolProblem`, and the call goes on.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable
from typing import Any

from bridge.config import AudioMode
from bridge.core import events as ev
from bridge.core.actions import (
    AddAgentText,
    AddToolCall,
    AddToolOutput,
    AddUserText,
    AppendAudio,
    CancelResponse,
    ConfigureSession,
    CreateResponse,
    ToModel,
    TruncateItem,
)
from bridge.jsoncodec import JsonLoads
from bridge.realtime.dialects import DialectSpec
from bridge.realtime.failures import Action as FailureAction
from bridge.realtime.failures import classify_error_event


class _Malformed(Exception):
    pass


def _str(event: dict[str, Any], key: str) -> str:
    value = event.get(key)
    if not isinstance(value, str):
        raise _Malformed(f"{event.get('type')!s:.60} has no string {key!r}")
    return value


def _opt_str(event: dict[str, Any], key: str) -> str | None:
    value = event.get(key)
    return value if isinstance(value, str) else None


def _opt_int(event: dict[str, Any], key: str) -> int | None:
    value = event.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return int(value)


def _b64_len(payload: str) -> int:
    """Decoded length of a base64 string without decoding it (validated by shape)."""
    n = len(payload)
    if n % 4:
        raise _Malformed("audio delta is not valid base64")
    pad = 2 if payload.endswith("==") else 1 if payload.endswith("=") else 0
    return n * 3 // 4 - pad


def _item(kind: str, role: str, text: str) -> dict[str, Any]:
    return {"type": "message", "role": role, "content": [{"type": kind, "text": text}]}


class RealtimeProtocol:
    """One call's Realtime session on the wire."""

    def __init__(
        self, dialect: DialectSpec, audio_mode: AudioMode, loads: JsonLoads = json.loads
    ) -> None:
        self.dialect = dialect
        self._loads = loads
        self.audio_mode = audio_mode
        self._bytes_per_sample = 1 if audio_mode == "passthrough" else 2
        self._parsers: dict[str, Callable[[dict[str, Any]], ev.ModelEvent]] = {
            "response.output_audio.delta": self._audio_delta,
            "response.output_audio_transcript.delta": self._text_delta,
            "session.updated": self._session_updated,
            "input_audio_buffer.speech_started": self._speech_started,
            "input_audio_buffer.speech_stopped": self._speech_stopped,
            "conversation.item.input_audio_transcription.completed": self._transcribed,
            "response.created": self._response_created,
            "response.output_audio.done": self._audio_done,
            "response.output_audio_transcript.done": self._text_done,
            "response.function_call_arguments.done": self._function_call,
            "conversation.item.truncated": self._truncated,
            "response.done": self._response_done,
            "error": self._error,
        }

    # ------------------------------------------------------------------ parse

    def parse(self, frame: str | bytes) -> ev.ModelEvent | ev.ProtocolProblem:
        try:
            event = self._loads(frame)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return ev.ProtocolProblem("model", "bad_json", f"not JSON ({exc.__class__.__name__})")
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            return ev.ProtocolProblem("model", "bad_event", "event without a string 'type'")
        kind = self.dialect.rename(event["type"])
        parser = self._parsers.get(kind)
        if parser is None:
            return ev.ModelIgnored(kind[:60])
        try:
            return parser(event)
        except (_Malformed, binascii.Error) as exc:
            return ev.ProtocolProblem("model", f"bad:{kind[:60]}", str(exc)[:200])

    def _audio_delta(self, event: dict[str, Any]) -> ev.AgentAudio:
        delta = _str(event, "delta")
        return ev.AgentAudio(
            _str(event, "item_id"),
            _opt_str(event, "response_id") or "",
            delta,
            _b64_len(delta) // self._bytes_per_sample,
            _opt_int(event, "content_index") or 0,
        )

    def _text_delta(self, event: dict[str, Any]) -> ev.AgentTextDelta:
        return ev.AgentTextDelta(_str(event, "item_id"), _opt_str(event, "delta") or "")

    def _session_updated(self, event: dict[str, Any]) -> ev.SessionConfigured:
        session = event.get("session")
        if not isinstance(session, dict):
            raise _Malformed("session.updated has no 'session' object")
        got = self.dialect.confirmed_formats(session)
        want = self.dialect.expected_formats(self.audio_mode)
        mismatch = None
        if got != want:
            mismatch = f"model reports audio formats {got}, the bridge needs {want}"
        return ev.SessionConfigured(got[0], got[1], mismatch)

    def _speech_started(self, event: dict[str, Any]) -> ev.SpeechStarted:
        return ev.SpeechStarted(_opt_str(event, "item_id"), _opt_int(event, "audio_start_ms"))

    def _speech_stopped(self, event: dict[str, Any]) -> ev.SpeechStopped:
        return ev.SpeechStopped(_opt_str(event, "item_id"), _opt_int(event, "audio_end_ms"))

    def _transcribed(self, event: dict[str, Any]) -> ev.CallerTranscribed:
        return ev.CallerTranscribed(_opt_str(event, "item_id"), _opt_str(event, "transcript") or "")

    def _response_created(self, event: dict[str, Any]) -> ev.ResponseStarted:
        response = event.get("response")
        if not isinstance(response, dict):
            raise _Malformed("response.created has no 'response' object")
        return ev.ResponseStarted(_str(response, "id"))

    def _audio_done(self, event: dict[str, Any]) -> ev.AgentAudioDone:
        return ev.AgentAudioDone(_str(event, "item_id"))

    def _text_done(self, event: dict[str, Any]) -> ev.AgentTextDone:
        return ev.AgentTextDone(_str(event, "item_id"), _opt_str(event, "transcript"))

    def _truncated(self, event: dict[str, Any]) -> ev.AgentItemTruncated:
        # The GA event names no text (the server cuts its own transcript): it confirms.
        return ev.AgentItemTruncated(_str(event, "item_id"))

    def _function_call(self, event: dict[str, Any]) -> ev.ToolCallRequested:
        call_id = event.get("call_id")
        if not isinstance(call_id, str | int) or isinstance(call_id, bool):
            raise _Malformed("function call without a call_id")
        arguments = event.get("arguments", "")
        return ev.ToolCallRequested(
            str(call_id),
            _opt_str(event, "name") or "",
            arguments if isinstance(arguments, str) else json.dumps(arguments),
            _opt_str(event, "response_id"),
        )

    def _response_done(self, event: dict[str, Any]) -> ev.ResponseFinished:
        response = event.get("response")
        if not isinstance(response, dict):
            response = {}
        usage = response.get("usage")
        return ev.ResponseFinished(
            str(response.get("id", "")),
            str(response.get("status", "")),
            usage if isinstance(usage, dict) else {},
        )

    def _error(self, event: dict[str, Any]) -> ev.ModelErrorReported:
        error = event.get("error")
        if not isinstance(error, dict):
            error = {}
        verdict = classify_error_event(event)
        return ev.ModelErrorReported(
            str(error.get("code") or error.get("type") or "unknown")[:80],
            str(error.get("message", ""))[:300],
            _opt_str(error, "event_id"),
            fatal=verdict.action is FailureAction.FATAL,
        )

    # -------------------------------------------------------------- serialise

    def serialise(self, action: ToModel) -> str:
        """The client event for one model action."""
        kind = type(action)
        if kind is AppendAudio:
            # Fifty times a second per call: base64 needs no escaping, so no encoder.
            return (
                '{"type": "input_audio_buffer.append", "audio": "'
                + action.payload  # type: ignore[union-attr]
                + '"}'
            )
        return json.dumps(self.client_event(action))

    def client_event(self, action: ToModel) -> dict[str, Any]:
        """The client event for ``action`` as a dict (tapes and tests compare these)."""
        if isinstance(action, AppendAudio):
            return {"type": "input_audio_buffer.append", "audio": action.payload}
        if isinstance(action, ConfigureSession):
            return self.dialect.session_update(
                action.agent, action.audio_mode, action.model, list(action.tools)  # type: ignore[arg-type]
            )
        if isinstance(action, AddUserText):
            return {
                "type": "conversation.item.create",
                "item": _item("input_text", "user", action.text),
            }
        if isinstance(action, AddAgentText):
            return {
                "type": "conversation.item.create",
                "item": _item(self.dialect.assistant_text_type, "assistant", action.text),
            }
        if isinstance(action, AddToolCall):
            return {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call",
                    "call_id": action.call_id,
                    "name": action.name,
                    "arguments": action.arguments,
                },
            }
        if isinstance(action, AddToolOutput):
            return {
                "type": "conversation.item.create",
                "item": {
                    "type": "function_call_output",
                    "call_id": action.call_id,
                    "output": action.output,
                },
            }
        if isinstance(action, TruncateItem):
            return {
                "type": "conversation.item.truncate",
                "item_id": action.item_id,
                "content_index": action.content_index,
                "audio_end_ms": action.audio_end_ms,
            }
        if isinstance(action, CreateResponse):
            event: dict[str, Any] = {"type": "response.create"}
            if action.instructions is not None:
                event["response"] = {"instructions": action.instructions}
            return event
        if isinstance(action, CancelResponse):
            return {"type": "response.cancel"}
        raise TypeError(f"not a model action: {action!r}")
