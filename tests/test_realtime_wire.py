"""The Realtime parser and serialiser: every server event we handle (GA and beta
names), malformed variants, and every client event the core can ask for."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.config import AgentConfig
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
    TruncateItem,
)
from bridge.realtime.dialects import dialect_for
from bridge.realtime.wire import RealtimeProtocol

GA = RealtimeProtocol(dialect_for("ga"), "passthrough")
BETA = RealtimeProtocol(dialect_for("beta"), "passthrough")
PCM = RealtimeProtocol(dialect_for("ga"), "pcm16")
DELTA = base64.b64encode(b"\x55" * 800).decode()


def parse(proto: RealtimeProtocol, **event: object) -> ev.Event:
    return proto.parse(json.dumps(event))


def test_every_handled_event_in_ga_names() -> None:
    fmt = {"type": "audio/pcmu"}
    assert parse(
        GA, type="session.updated",
        session={"audio": {"input": {"format": fmt}, "output": {"format": fmt}}},
    ) == ev.SessionConfigured("audio/pcmu", "audio/pcmu", None)
    assert parse(GA, type="input_audio_buffer.speech_started", item_id="u1", audio_start_ms=40) == (
        ev.SpeechStarted("u1", 40)
    )
    assert parse(GA, type="input_audio_buffer.speech_stopped", item_id="u1", audio_end_ms=900) == (
        ev.SpeechStopped("u1", 900)
    )
    assert parse(
        GA, type="conversation.item.input_audio_transcription.completed", item_id="u1",
        transcript="hi",
    ) == ev.CallerTranscribed("u1", "hi")
    assert parse(GA, type="response.created", response={"id": "r1"}) == ev.ResponseStarted("r1")
    assert parse(
        GA, type="response.output_audio.delta", item_id="a1", response_id="r1", content_index=0,
        delta=DELTA,
    ) == ev.AgentAudio("a1", "r1", DELTA, 800, 0)
    assert parse(PCM, type="response.output_audio.delta", item_id="a1", delta=DELTA) == (
        ev.AgentAudio("a1", "", DELTA, 400, 0)  # PCM16: two bytes a sample
    )
    assert parse(GA, type="response.output_audio.done", item_id="a1") == ev.AgentAudioDone("a1")
    assert parse(GA, type="response.output_audio_transcript.delta", item_id="a1", delta="He") == (
        ev.AgentTextDelta("a1", "He")
    )
    assert parse(
        GA, type="response.output_audio_transcript.done", item_id="a1", transcript="Hello"
    ) == ev.AgentTextDone("a1", "Hello")
    assert parse(
        GA, type="response.function_call_arguments.done", call_id="c1", name="hang_up",
        arguments="{}", response_id="r1",
    ) == ev.ToolCallRequested("c1", "hang_up", "{}", "r1")
    assert parse(
        GA, type="response.done", response={"id": "r1", "status": "completed", "usage": {"a": 1}}
    ) == ev.ResponseFinished("r1", "completed", {"a": 1})
    assert parse(
        GA, type="error", error={"type": "invalid_request_error", "code": "x", "message": "m",
                                 "event_id": "e1"},
    ) == ev.ModelErrorReported("x", "m", "e1")
    assert parse(GA, type="rate_limits.updated") == ev.ModelIgnored("rate_limits.updated")


def test_beta_names_reach_the_core_as_ga_names() -> None:
    assert parse(BETA, type="response.audio.delta", item_id="a1", delta=DELTA) == ev.AgentAudio(
        "a1", "", DELTA, 800, 0
    )
    assert parse(BETA, type="response.audio_transcript.done", item_id="a1") == ev.AgentTextDone(
        "a1", None
    )
    assert parse(
        BETA, type="session.updated",
        session={"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"},
    ) == ev.SessionConfigured("g711_ulaw", "g711_ulaw", None)


def test_a_session_in_the_wrong_audio_format_is_reported_as_a_mismatch() -> None:
    fmt = {"type": "audio/pcm", "rate": 24000}
    result = parse(
        GA, type="session.updated",
        session={"audio": {"input": {"format": fmt}, "output": {"format": fmt}}},
    )
    assert isinstance(result, ev.SessionConfigured) and "audio/pcmu" in (result.mismatch or "")


@pytest.mark.parametrize(
    "frame",
    [
        "{not json",
        "[" * 50_000 + "]" * 50_000,
        "[]",
        json.dumps({"no_type": 1}),
        json.dumps({"type": 5}),
        json.dumps({"type": "response.output_audio.delta"}),
        json.dumps({"type": "response.output_audio.delta", "item_id": "a", "delta": 5}),
        json.dumps({"type": "response.output_audio.delta", "item_id": "a", "delta": "abc"}),
        json.dumps({"type": "response.output_audio.delta", "item_id": 3, "delta": DELTA}),
        json.dumps({"type": "response.created", "response": {}}),
        json.dumps({"type": "response.created", "response": "r1"}),
        json.dumps({"type": "session.updated", "session": None}),
        json.dumps({"type": "response.output_audio.done"}),
        json.dumps({"type": "response.function_call_arguments.done", "call_id": None}),
        json.dumps({"type": "response.output_audio_transcript.delta", "item_id": None}),
    ],
)
def test_malformed_server_events_are_problems(frame: str) -> None:
    result = GA.parse(frame)
    assert isinstance(result, ev.ProtocolProblem) and result.source == "model", result


def test_lenient_where_the_core_has_a_safe_default() -> None:
    """Optional fields the core can do without do not make an event malformed."""
    assert parse(GA, type="response.done") == ev.ResponseFinished("", "", {})
    assert parse(GA, type="response.done", response={"id": "r", "usage": None}) == (
        ev.ResponseFinished("r", "", {})
    )
    assert parse(GA, type="error", error="boom") == ev.ModelErrorReported("unknown", "", None)
    assert parse(GA, type="input_audio_buffer.speech_started", audio_start_ms="x") == (
        ev.SpeechStarted(None, None)
    )


def test_client_events() -> None:
    agent = AgentConfig(instructions="Be brief.", voice="coral")
    update = GA.client_event(ConfigureSession(agent, "passthrough", "gpt-realtime", ()))
    assert update["type"] == "session.update" and update["event_id"] == "bridge_session_update"
    assert update["session"]["audio"]["output"]["voice"] == "coral"
    assert json.loads(GA.serialise(AppendAudio(DELTA))) == {
        "type": "input_audio_buffer.append", "audio": DELTA
    }
    assert GA.client_event(AddUserText("hi"))["item"] == {
        "type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]
    }
    assert GA.client_event(AddAgentText("ok"))["item"]["content"] == [
        {"type": "output_text", "text": "ok"}
    ]
    assert BETA.client_event(AddAgentText("ok"))["item"]["content"] == [
        {"type": "text", "text": "ok"}
    ]
    assert GA.client_event(AddToolCall("c1", "f", "{}"))["item"] == {
        "type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"
    }
    assert GA.client_event(AddToolOutput("c1", "{}"))["item"] == {
        "type": "function_call_output", "call_id": "c1", "output": "{}"
    }
    assert GA.client_event(TruncateItem("a1", 0, 640)) == {
        "type": "conversation.item.truncate", "item_id": "a1", "content_index": 0,
        "audio_end_ms": 640,
    }
    assert GA.client_event(CreateResponse()) == {"type": "response.create"}
    assert GA.client_event(CreateResponse("Say hi")) == {
        "type": "response.create", "response": {"instructions": "Say hi"}
    }
    assert GA.client_event(CancelResponse()) == {"type": "response.cancel"}
    for action in (AddUserText('quote " and \\ back'), TruncateItem("a", 0, 1)):
        assert json.loads(GA.serialise(action)) == GA.client_event(action)
