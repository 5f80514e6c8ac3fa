"""A call's timeline for the operator, tapped off the live relay.

The relay hands every event and every action to a ``TapeSink`` (that is how tapes are
recorded), so the console and the recording hang off that same seam with no new code
in the audio path.  The core already speaks the operator's vocabulary
(:class:`~bridge.core.actions.Observed`, :class:`~bridge.core.actions.TranscriptLine`),
so ``CallTap`` mostly forwards: to the console's :class:`~bridge.operator.bus.EventBus`,
and to a :class:`~bridge.recordings.live.LiveRecording` (fed the caller's audio, the
agent audio played and every clear, and writing the recording as the call goes) when
recordings are on.  The softphone page
gets the same values through its leg's ``observe()`` (``bridge.operator.softphone``).
"""

from __future__ import annotations

import binascii
import json
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge.core import events as ev
from bridge.core.actions import (
    Action,
    AuthoriseStream,
    ClearPlayback,
    EndCall,
    Observed,
    PlayAudio,
    TranscriptLine,
    Usage,
)
from bridge.core.stream import StreamInfo
from bridge.operator.bus import EventBus, LiveCall
from bridge.recordings.live import LiveRecording

if TYPE_CHECKING:
    from bridge.call.relay import TapeSink

log = logging.getLogger("bridge.operator")



def line_fields(line: TranscriptLine) -> dict[str, Any]:
    """A transcript line as both the page and the console receive it; ``seq`` lets
    either replace a line the core restated (``AgentItemTruncated``)."""
    return {"speaker": line.speaker, "text": line.text, "start_ms": line.start_ms,
            "end_ms": line.end_ms, "interrupted": line.interrupted, "seq": line.seq}


def observed_frame(action: Observed | TranscriptLine) -> str:
    """The page frame for one timeline or transcript value (what ``observe()`` returns)."""
    if isinstance(action, TranscriptLine):
        transcript = {**line_fields(action), "item_id": action.item_id, "final": True}
        return json.dumps({"event": "transcript", "transcript": transcript})
    return json.dumps(
        {"event": "observed", "observed": {"kind": action.kind, "call_ms": action.call_ms,
                                           **action.data}}
    )


class CallTap:
    """One call's observer: implements the relay's ``TapeSink``."""

    def __init__(
        self,
        bus: EventBus | None,
        *,
        leg: str = "twilio",
        recorder: LiveRecording | None = None,
        describe: Callable[[StreamInfo], tuple[str | None, str | None]] | None = None,
        on_close: Callable[[CallTap], None] | None = None,
        on_started: Callable[[CallTap], None] | None = None,
    ) -> None:
        self.bus = bus
        self.leg = leg
        self.recorder = recorder
        self.describe = describe
        self.on_close = on_close
        self.on_started = on_started
        self.call_id: str | None = None
        self.started_wall = time.time()
        self._t0: int | None = None
        self._media_t0: float | None = None
        self._connects = 0
        self._closed = False
        self.end_reason: str | None = None

    # ------------------------------------------------------------- emitting

    def _ms(self, now: int) -> int:
        if self._t0 is None:
            self._t0 = now
        return now - self._t0

    def emit(self, value: Observed | TranscriptLine) -> None:
        if self.bus is not None and self.call_id is not None:
            if isinstance(value, TranscriptLine):
                self.bus.moment(self.call_id, {"type": "transcript", **line_fields(value)})
            else:
                self.bus.moment(
                    self.call_id,
                    {"type": "observed", "kind": value.kind, "call_ms": value.call_ms,
                     "data": value.data},
                )

    def _observe(self, kind: str, now: int, **data: Any) -> None:
        self.emit(Observed(kind, self._ms(now), data))

    # ------------------------------------------------------------ TapeSink

    def event(self, now: int, event: ev.Event, frame: str | bytes | None, peer: str) -> None:
        try:
            self._event(now, event)
        except Exception:  # noqa: BLE001 - observing must never break a call
            log.exception("call %s: operator tap failed on an event", self.call_id)

    def _event(self, now: int, event: ev.Event) -> None:
        self._ms(now)
        kind = type(event)
        if kind is ev.CallerAudio:
            if self.recorder is not None:
                self._caller_audio(now, event)  # type: ignore[arg-type]
        elif kind is ev.ModelConnected:
            self._connects += 1
            if self._connects > 1:
                self._observe("reconnected", now, connects=self._connects)

    def _caller_audio(self, now: int, event: ev.CallerAudio) -> None:
        """Place caller audio on the call timeline by the leg's own clock when it has one
        (arrival times jitter), anchored once on the first chunk's arrival."""
        assert self.recorder is not None
        audio = binascii.a2b_base64(event.payload)
        at = float(self._ms(now)) - len(audio) / 8
        if event.timestamp_ms is not None:
            if self._media_t0 is None:
                self._media_t0 = max(0.0, at - event.timestamp_ms)
            at = self._media_t0 + event.timestamp_ms
        self.recorder.caller_audio(at, audio)

    def action(self, now: int, action: Action) -> None:
        try:
            self._action(now, action)
        except Exception:  # noqa: BLE001
            log.exception("call %s: operator tap failed on an action", self.call_id)

    def _action(self, now: int, action: Action) -> None:
        kind = type(action)
        if kind is PlayAudio:
            if self.recorder is not None:
                self.recorder.play(self._ms(now), binascii.a2b_base64(action.payload))  # type: ignore[union-attr]
        elif kind is ClearPlayback:
            if self.recorder is not None:
                self.recorder.clear(self._ms(now))
            self._observe("clear", now)
        elif kind is Observed or kind is TranscriptLine:
            self.emit(action)  # type: ignore[arg-type]
        elif kind is AuthoriseStream:
            info = action.info  # type: ignore[union-attr]
            self.call_id = info.call_sid
            caller, agent = self.describe(info) if self.describe else (None, None)
            if self.bus is not None:
                self.bus.call_started(
                    LiveCall(info.call_sid, self.leg, caller, agent, self.started_wall)
                )
            if self.on_started is not None:
                self.on_started(self)
        elif kind is Usage:
            self._latency(now, action)  # type: ignore[arg-type]
        elif kind is EndCall:
            self.end_reason = action.reason  # type: ignore[union-attr]
            self._observe("ended", now, reason=self.end_reason)

    def _latency(self, now: int, usage: Usage) -> None:
        """A cascade turn's latency breakdown, as its own timeline entry.

        The cascade reports it in the response's usage (the store keeps it there too),
        so the console shows per turn where the time went (STT, LLM, TTS, the bridge)
        without the core learning a cascade-only event."""
        spans = usage.usage.get("cascade_latency_ms")
        if not isinstance(spans, dict):
            return
        data: dict[str, Any] = {"response_id": usage.response_id, "status": usage.status}
        data.update({k: v for k, v in spans.items() if isinstance(v, int) or v is None})
        self._observe("latency_breakdown", now, **data)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self.bus is not None and self.call_id is not None:
            self.bus.call_ended(self.call_id, self.end_reason or "unknown")
        if self.on_close is not None:
            self.on_close(self)


class TeeSink:
    """Several ``TapeSink``s as one (the tape recorder and the operator's tap)."""

    def __init__(self, sinks: list[TapeSink]) -> None:
        self.sinks = sinks

    def event(self, now: int, event: ev.Event, frame: str | bytes | None, peer: str) -> None:
        for sink in self.sinks:
            sink.event(now, event, frame, peer)

    def action(self, now: int, action: Action) -> None:
        for sink in self.sinks:
            sink.action(now, action)

    def close(self) -> None:
        for sink in self.sinks:
            sink.close()
