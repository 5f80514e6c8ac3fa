"""A tiny harness for driving the call core with hand-written event sequences.

Frames go through the real wire protocols (Twilio Media Streams and Realtime
parsers) into ``Call.handle``, and the selectors turn the typed actions back into
wire messages with the real serialisers, so tests read in the protocols' terms.
``Observed`` and ``WakeAt`` are left out of what the helpers return (they have
their own tests); ``all_actions`` keeps everything."""

from __future__ import annotations

import base64
import json
from typing import Any

from bridge.config import AgentConfig, TurnDetection
from bridge.core import events as ev
from bridge.core.actions import TO_CALLER, TO_MODEL, Action, Observed, WakeAt
from bridge.core.call import Call
from bridge.core.config import CallConfig
from bridge.realtime.dialects import dialect_for
from bridge.realtime.wire import RealtimeProtocol
from bridge.twilio.media import TwilioMediaProtocol

STREAM = "MZ00000000000000000000000000000001"
CALL = "CA00000000000000000000000000000001"


class ScriptedCall:
    """Feeds frames to a session and keeps every action it returned, in order."""

    def __init__(
        self,
        *,
        interrupt_response: bool = True,
        dialect: str = "ga",
        greeting: str | None = None,
        audio_mode: str = "passthrough",
        **config: Any,
    ) -> None:
        agent_fields = {k: config.pop(k) for k in ("dtmf_length",) if k in config}
        agent = AgentConfig(
            greeting=greeting,
            turn_detection=TurnDetection(interrupt_response=interrupt_response),
            **agent_fields,
        )
        codec = None
        if audio_mode != "passthrough":
            from bridge.audio.transcoder import Pcm16Transcoder

            codec = Pcm16Transcoder()
        self.core = Call(
            CallConfig(agent=agent, audio_mode=audio_mode, **config),  # type: ignore[arg-type]
            codec,
        )
        self.leg = TwilioMediaProtocol()
        self.wire = RealtimeProtocol(dialect_for(dialect), audio_mode)  # type: ignore[arg-type]
        global _CURRENT
        _CURRENT = self
        self.now = 0
        self.actions: list[Action] = []
        self.all_actions: list[Action] = []
        self._event = 0

    # -- inputs ---------------------------------------------------------------

    def at(self, now: int) -> ScriptedCall:
        self.now = now
        return self

    def event(self, event: ev.Event) -> list[Action]:
        """Hand one typed event to the core at the current time."""
        out = self.core.handle(event, self.now)
        self.all_actions += out
        return self.feed([a for a in out if not isinstance(a, Observed | WakeAt)])

    def twilio_frame(self, frame: str | bytes) -> list[Action]:
        return self.event(self.leg.parse(frame))

    def model_frame(self, frame: str | bytes) -> list[Action]:
        return self.event(self.wire.parse(frame))

    def twilio(self, message: dict[str, Any]) -> list[Action]:
        return self.twilio_frame(json.dumps(message))

    def model(self, type_: str, **fields: Any) -> list[Action]:
        self._event += 1
        return self.model_frame(
            json.dumps({"type": type_, "event_id": f"ev_{self._event}", **fields})
        )

    def tick(self) -> list[Action]:
        return self.event(ev.TimerFired())

    def start(self) -> list[Action]:
        """connected + start + accept + model connected + session.updated."""
        self.twilio({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        out = self.twilio(
            {
                "event": "start",
                "sequenceNumber": "1",
                "streamSid": STREAM,
                "start": {
                    "streamSid": STREAM,
                    "callSid": CALL,
                    "accountSid": "AC1",
                    "tracks": ["inbound"],
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                    "customParameters": {"From": "+15550001111"},
                },
            }
        )
        out += self.event(ev.StreamAccepted())
        out += self.event(ev.ModelConnected())
        fmt = {"type": "audio/pcmu"}
        out += self.model(
            "session.updated",
            session={
                "type": "realtime",
                "audio": {"input": {"format": fmt}, "output": {"format": fmt}},
            },
        )
        return out

    def feed(self, actions: list[Action]) -> list[Action]:
        self.actions += actions
        return actions

    def media(self, nbytes: int = 160, seq: int = 2) -> list[Action]:
        payload = base64.b64encode(b"\xff" * nbytes).decode()
        return self.twilio(
            {
                "event": "media",
                "sequenceNumber": str(seq),
                "streamSid": STREAM,
                "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload},
            }
        )

    def mark(self, name: str) -> list[Action]:
        return self.twilio(
            {"event": "mark", "sequenceNumber": "9", "streamSid": STREAM, "mark": {"name": name}}
        )

    def response_created(self, rid: str = "resp_1") -> list[Action]:
        return self.model("response.created", response={"id": rid, "status": "in_progress"})

    def delta(self, item: str, nbytes: int, rid: str = "resp_1") -> list[Action]:
        audio = base64.b64encode(b"\x55" * nbytes).decode()
        return self.model(
            "response.output_audio.delta",
            response_id=rid,
            item_id=item,
            output_index=0,
            content_index=0,
            delta=audio,
        )

    def audio_done(self, item: str, rid: str = "resp_1") -> list[Action]:
        return self.model(
            "response.output_audio.done",
            response_id=rid,
            item_id=item,
            output_index=0,
            content_index=0,
        )

    def response_done(
        self, rid: str = "resp_1", status: str = "completed", reason: str | None = None
    ) -> list[Action]:
        details = {"type": status, "reason": reason} if reason else None
        return self.model(
            "response.done",
            response={
                "id": rid,
                "status": status,
                "status_details": details,
                "output": [],
                "usage": {"total_tokens": 10, "input_tokens": 4, "output_tokens": 6},
            },
        )

    def speech_started(self, item: str = "item_user_1", at_ms: int = 0) -> list[Action]:
        return self.model("input_audio_buffer.speech_started", audio_start_ms=at_ms, item_id=item)


# -- selectors ---------------------------------------------------------------

_CURRENT: ScriptedCall | None = None


def to_twilio(actions: list[Action], event: str | None = None) -> list[dict[str, Any]]:
    """What went to Twilio, as the JSON messages the serialiser writes."""
    assert _CURRENT is not None
    messages = [
        json.loads(_CURRENT.leg.serialise(a))  # type: ignore[arg-type]
        for a in actions
        if type(a) in TO_CALLER
    ]
    return [m for m in messages if event is None or m["event"] == event]


def to_model(actions: list[Action], type_: str | None = None) -> list[dict[str, Any]]:
    """What went to the model, as client events."""
    assert _CURRENT is not None
    events = [
        _CURRENT.wire.client_event(a)  # type: ignore[arg-type]
        for a in actions
        if type(a) in TO_MODEL
    ]
    return [e for e in events if type_ is None or e["type"] == type_]


def marks(actions: list[Action]) -> list[str]:
    return [m["mark"]["name"] for m in to_twilio(actions, "mark")]
