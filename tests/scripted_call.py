"""A tiny harness for driving ``CallSession`` with hand-written event sequences."""

from __future__ import annotations

import base64
import json
from typing import Any

from bridge.config import AgentConfig, TurnDetection
from bridge.core.actions import Action, SendModel, SendTwilio
from bridge.core.session import CallSession, SessionConfig
from bridge.realtime.dialects import dialect_for

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
        agent = AgentConfig(
            greeting=greeting,
            turn_detection=TurnDetection(interrupt_response=interrupt_response),
        )
        self.session = CallSession(
            SessionConfig(
                agent=agent,
                dialect=dialect_for(dialect),  # type: ignore[arg-type]
                audio_mode=audio_mode,  # type: ignore[arg-type]
                **config,
            )
        )
        self.now = 0
        self.actions: list[Action] = []
        self._event = 0

    # -- inputs ---------------------------------------------------------------

    def at(self, now: int) -> ScriptedCall:
        self.now = now
        return self

    def twilio(self, message: dict[str, Any]) -> list[Action]:
        out = self.session.twilio_frame(json.dumps(message), self.now)
        self.actions += out
        return out

    def model(self, type_: str, **fields: Any) -> list[Action]:
        self._event += 1
        out = self.session.model_frame(
            json.dumps({"type": type_, "event_id": f"ev_{self._event}", **fields}), self.now
        )
        self.actions += out
        return out

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
        out += self.feed(self.session.accept_stream(self.now))
        out += self.feed(self.session.model_connected(self.now))
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


def to_twilio(actions: list[Action], event: str | None = None) -> list[dict[str, Any]]:
    return [
        a.message
        for a in actions
        if isinstance(a, SendTwilio) and (event is None or a.message["event"] == event)
    ]


def to_model(actions: list[Action], type_: str | None = None) -> list[dict[str, Any]]:
    return [
        a.event
        for a in actions
        if isinstance(a, SendModel) and (type_ is None or a.event["type"] == type_)
    ]


def marks(actions: list[Action]) -> list[str]:
    return [m["mark"]["name"] for m in to_twilio(actions, "mark")]
