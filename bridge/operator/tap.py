"""A call's timeline for the operator, tapped off the live relay.

The relay already hands every input and every action to a ``TapeSink`` (that is how
tapes are recorded), so the console, the softphone's extra frames and the recording all
hang off that same seam with no new code in the audio path.  ``CallTap`` turns what it
sees into the core's own vocabulary (:class:`~bridge.core.actions.Observed` and
:class:`~bridge.core.actions.TranscriptLine`) and hands those to three consumers:

* the console's :class:`~bridge.operator.bus.EventBus`;
* the browser leg's page, as the extra ``transcript`` / ``observed`` frames only the
  softphone gets (``PageChannel``);
* a :class:`~bridge.recordings.playout.PlayoutRecorder`, when recordings are on.

Deriving ``Observed`` here is a bridge for today's core: the new core emits ``Observed``
itself, and then this class only forwards it.  Cheapness matters because it runs for
every call: media frames are looked at only when recording, and model frames are
parsed only when short (speech boundaries and transcript deltas are; audio is not).
"""

from __future__ import annotations

import asyncio
import binascii
import contextlib
import json
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge.core.actions import (
    Action,
    EndCall,
    Observed,
    RunTool,
    SendModel,
    SendTwilio,
    StreamStarted,
    TranscriptLine,
)
from bridge.operator.bus import EventBus, LiveCall
from bridge.recordings.playout import PlayoutRecorder

if TYPE_CHECKING:
    from starlette.websockets import WebSocket

    from bridge.core.inputs import CallInput
    from bridge.relay import TapeSink

log = logging.getLogger("bridge.operator")

_SMALL_FRAME = 4096
_PAYLOAD = re.compile(r'"payload"\s*:\s*"([A-Za-z0-9+/=]*)"')
_TIMESTAMP = re.compile(r'"timestamp"\s*:\s*"([0-9]{1,12})"')
_TEXT_DELTAS = ("response.output_audio_transcript.delta", "response.audio_transcript.delta")
_CALLER_DELTAS = ("conversation.item.input_audio_transcription.delta",)


def observed_frame(action: Observed | TranscriptLine) -> str:
    """The page frame for one timeline or transcript value (what ``observe()`` returns)."""
    if isinstance(action, TranscriptLine):
        return json.dumps(
            {
                "event": "transcript",
                "transcript": {
                    "speaker": action.speaker,
                    "text": action.text,
                    "start_ms": action.start_ms,
                    "end_ms": action.end_ms,
                    "interrupted": action.interrupted,
                    "item_id": action.item_id,
                    "final": True,
                },
            }
        )
    return json.dumps(
        {"event": "observed", "observed": {"kind": action.kind, "call_ms": action.call_ms,
                                           **action.data}}
    )


class PageChannel:
    """Extra frames to the softphone page, written in order by one task.

    The relay's sink interface is synchronous, so frames are queued here and a single
    writer sends them; a page that stops reading loses these extras, never the call."""

    def __init__(self, websocket: WebSocket, limit: int = 500) -> None:
        self.websocket = websocket
        self._queue: asyncio.Queue[str | None] = asyncio.Queue(limit)
        self._task = asyncio.get_running_loop().create_task(self._write(), name="page-extras")

    def send(self, frame: str) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(frame)

    async def _write(self) -> None:
        while (frame := await self._queue.get()) is not None:
            try:
                await self.websocket.send_text(frame)
            except Exception:  # noqa: BLE001 - the call's reader sees the close
                return

    def close(self) -> None:
        with contextlib.suppress(asyncio.QueueFull):
            self._queue.put_nowait(None)


class CallTap:
    """One call's observer: implements the relay's ``TapeSink``."""

    def __init__(
        self,
        bus: EventBus | None,
        *,
        leg: str = "twilio",
        page: PageChannel | None = None,
        recorder: PlayoutRecorder | None = None,
        describe: Callable[[StreamStarted], tuple[str | None, str | None]] | None = None,
        on_close: Callable[[CallTap], None] | None = None,
    ) -> None:
        self.bus = bus
        self.leg = leg
        self.page = page
        self.recorder = recorder
        self.describe = describe
        self.on_close = on_close
        self.call_id: str | None = None
        self.started_wall = time.time()
        self._t0: int | None = None
        self._media_t0: float | None = None
        self._items: set[str] = set()
        self._speech_stopped_at: int | None = None
        self._connects = 0
        self._closed = False
        self.end_reason: str | None = None

    # ------------------------------------------------------------- emitting

    def _ms(self, now: int) -> int:
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    def emit(self, value: Observed | TranscriptLine) -> None:
        if self.page is not None:
            self.page.send(observed_frame(value))
        if self.bus is not None and self.call_id is not None:
            if isinstance(value, TranscriptLine):
                self.bus.moment(
                    self.call_id,
                    {"type": "transcript", "speaker": value.speaker, "text": value.text,
                     "start_ms": value.start_ms, "end_ms": value.end_ms,
                     "interrupted": value.interrupted},
                )
            else:
                self.bus.moment(
                    self.call_id,
                    {"type": "observed", "kind": value.kind, "call_ms": value.call_ms,
                     "data": value.data},
                )

    def _observe(self, kind: str, now: int, **data: Any) -> None:
        self.emit(Observed(kind, self._ms(now), data))

    # -------------------------------------------------------------- inputs

    def input(self, now: int, item: CallInput) -> None:
        try:
            self._input(now, item)
        except Exception:  # noqa: BLE001 - observing must never break a call
            log.exception("call %s: operator tap failed on an input", self.call_id)

    def _input(self, now: int, item: CallInput) -> None:
        self._ms(now)
        kind = item.kind
        if kind == "twilio":
            frame = item.frame or ""
            if isinstance(frame, bytes):
                frame = frame.decode("utf-8", "replace")
            if '"dtmf"' in frame and len(frame) < _SMALL_FRAME:
                message = json.loads(frame)
                if message.get("event") == "dtmf":
                    self._observe("dtmf", now, digit=(message.get("dtmf") or {}).get("digit"))
            elif self.recorder is not None and '"media"' in frame:
                self._caller_media(now, frame)
        elif kind == "model":
            frame = item.frame or ""
            if len(frame) >= _SMALL_FRAME:
                return
            text = frame.decode() if isinstance(frame, bytes) else frame
            if "speech_st" in text:
                event = json.loads(text)
                if event.get("type") == "input_audio_buffer.speech_started":
                    self._observe("speech_started", now,
                                  audio_start_ms=event.get("audio_start_ms"))
                elif event.get("type") == "input_audio_buffer.speech_stopped":
                    self._speech_stopped_at = now
                    self._observe("speech_stopped", now, audio_end_ms=event.get("audio_end_ms"))
            elif "transcript" in text and "delta" in text:
                event = json.loads(text)
                if event.get("type") in _TEXT_DELTAS:
                    self._observe("agent_text", now, item_id=event.get("item_id"),
                                  delta=event.get("delta", ""))
                elif event.get("type") in _CALLER_DELTAS:
                    self._observe("caller_text", now, item_id=event.get("item_id"),
                                  delta=event.get("delta", ""))
        elif kind == "model_connected":
            self._connects += 1
            if self._connects > 1:
                self._observe("reconnected", now, connects=self._connects)
        elif kind == "tool_result":
            output = str(item.data.get("output", ""))
            self._observe("tool_result", now, call_id=item.data.get("call_id"),
                          output=output[:500])

    def _caller_media(self, now: int, frame: str) -> None:
        """Caller audio for the recording, pulled out with two regexes: fifty frames a
        second per call, where ``json.loads`` cost twice as much (the core parses the
        frame too; the new core hands the tap its ``CallerAudio`` event instead)."""
        assert self.recorder is not None
        payload = _PAYLOAD.search(frame)
        if payload is None or '"media"' not in frame[: payload.start()]:
            return
        try:
            audio = binascii.a2b_base64(payload.group(1))
        except (binascii.Error, ValueError):
            return
        at = float(self._ms(now)) - len(audio) / 8
        stamp = _TIMESTAMP.search(frame)
        if stamp is not None:
            stamp_ms = float(stamp.group(1))
            if self._media_t0 is None:  # anchor the leg's clock on the call timeline
                self._media_t0 = max(0.0, at - stamp_ms)
            at = self._media_t0 + stamp_ms
        self.recorder.caller_audio(at, audio)

    # ------------------------------------------------------------- outputs

    def output(self, now: int, action: Action, wire: str | None) -> None:
        try:
            self._output(now, action)
        except Exception:  # noqa: BLE001
            log.exception("call %s: operator tap failed on an action", self.call_id)

    def _output(self, now: int, action: Action) -> None:
        if isinstance(action, SendTwilio):
            self._to_caller(now, action.message)
        elif isinstance(action, SendModel):
            event = action.event
            if event.get("type") == "conversation.item.truncate":
                self._observe("barge_in", now, item_id=event.get("item_id"),
                              heard_ms=event.get("audio_end_ms"))
        elif isinstance(action, TranscriptLine):
            self.emit(action)
        elif isinstance(action, RunTool):
            self._observe("tool_call", now, name=action.name, arguments=action.arguments[:500])
        elif isinstance(action, StreamStarted):
            info = action.info
            self.call_id = info.call_sid
            caller, agent = self.describe(action) if self.describe else (None, None)
            if self.bus is not None:
                self.bus.call_started(
                    LiveCall(info.call_sid, self.leg, caller, agent, self.started_wall)
                )
        elif isinstance(action, EndCall):
            self.end_reason = action.reason
            self._observe("ended", now, reason=action.reason)

    def _to_caller(self, now: int, message: dict[str, Any]) -> None:
        event = message.get("event")
        if event == "media":
            if self.recorder is not None:
                payload = message["media"]["payload"]
                self.recorder.play(self._ms(now), binascii.a2b_base64(payload))
        elif event == "mark":
            # The ledger names marks g<generation>.<seq>:<item>:<end_ms>.
            parts = str(message.get("mark", {}).get("name", "")).split(":")
            if len(parts) >= 3 and parts[1] not in self._items:
                self._items.add(parts[1])
                self._observe("agent_audio", now, item_id=parts[1])
                if self._speech_stopped_at is not None:
                    self._observe("turn_latency", now, ms=now - self._speech_stopped_at)
                    self._speech_stopped_at = None
        elif event == "clear":
            if self.recorder is not None:
                self.recorder.clear(self._ms(now))
            self._observe("clear", now)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.bus is not None and self.call_id is not None:
            self.bus.call_ended(self.call_id, self.end_reason or "unknown")
        if self.page is not None:
            self.page.close()
        if self.on_close is not None:
            self.on_close(self)


class TeeSink:
    """Several ``TapeSink``s as one (the tape recorder and the operator's tap)."""

    def __init__(self, sinks: list[TapeSink]) -> None:
        self.sinks = sinks

    def input(self, now: int, item: CallInput) -> None:
        for sink in self.sinks:
            sink.input(now, item)

    def output(self, now: int, action: Action, wire: str | None) -> None:
        for sink in self.sinks:
            sink.output(now, action, wire)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
