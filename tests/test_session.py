"""The call core over hand-written event sequences, including the nasty orders."""

from __future__ import annotations

import base64
import json

import pytest

from bridge.core import events as ev
from bridge.core.actions import (
    Action,
    AddAgentText,
    AddUserText,
    AuthoriseStream,
    ClearPlayback,
    ConnectModel,
    ControlCall,
    EndCall,
    Notice,
    PrepareStandby,
    RunTool,
    SwitchToStandby,
    ToStandby,
    TranscriptLine,
    TruncateItem,
    Usage,
    WakeAt,
)
from bridge.core.call import Phase
from bridge.core.config import ControlRequest
from tests.scripted_call import ScriptedCall, marks, to_model, to_twilio


def test_start_waits_for_authorisation_before_connecting_the_model() -> None:
    call = ScriptedCall()
    out = call.twilio(
        {
            "event": "start",
            "sequenceNumber": "1",
            "streamSid": "MZ1",
            "start": {"streamSid": "MZ1", "callSid": "CA1", "customParameters": {"t": "x"}},
        }
    )
    assert [type(a) for a in out] == [AuthoriseStream]
    assert out[0].info.custom_parameters == {"t": "x"}  # type: ignore[union-attr]
    # Audio before the model is up is held, not lost and not sent anywhere yet.
    assert call.media() == []
    assert call.event(ev.StreamAccepted()) == [ConnectModel()]
    sent = to_model(call.event(ev.ModelConnected()))
    assert [e["type"] for e in sent] == ["session.update", "input_audio_buffer.append"]
    assert sent[0]["session"]["audio"]["input"]["format"] == {"type": "audio/pcmu"}
    assert sent[0]["session"]["audio"]["input"]["turn_detection"]["interrupt_response"] is True


def test_normal_turn_forwards_audio_both_ways_with_a_mark_per_chunk() -> None:
    call = ScriptedCall()
    call.start()
    appended = to_model(call.media(), "input_audio_buffer.append")
    # Passthrough: the caller's base64 goes to the model untouched.
    assert appended == [
        {"type": "input_audio_buffer.append", "audio": base64.b64encode(b"\xff" * 160).decode()}
    ]
    call.response_created()
    out = call.delta("item_a", 800)
    media = to_twilio(out, "media")
    assert media[0] == {
        "event": "media",
        "streamSid": call.core.stream.stream_sid,  # type: ignore[union-attr]
        "media": {"payload": base64.b64encode(b"\x55" * 800).decode()},
    }
    names = marks(out)
    assert len(media) == 1 and len(names) == 1 and names[0].endswith(":item_a:100")
    out2 = call.delta("item_a", 400)
    assert marks(out2)[0].endswith(":item_a:150")
    call.model("response.output_audio_transcript.done", item_id="item_a", transcript="Hello there")
    call.audio_done("item_a")
    done = call.response_done()
    assert any(isinstance(a, Usage) and a.audio_out_ms == 150 for a in done)
    # Transcript line only once the caller actually heard all of it.
    assert not [a for a in call.actions if isinstance(a, TranscriptLine)]
    call.at(200).mark(names[0])
    out = call.at(260).mark(marks(out2)[0])
    lines = [a for a in out if isinstance(a, TranscriptLine)]
    assert lines == [TranscriptLine("agent", "Hello there", 0, 150, False, "item_a", seq=1)]
    assert not to_twilio(call.actions, "clear")


def _eight_word_reply(call: ScriptedCall) -> list[str]:
    """A 400 ms reply ("item_a", four 100 ms chunks) whose whole text came first, as a
    cascade sends a sentence when its audio starts; returns the chunks' mark names."""
    call.response_created()
    names = [marks(call.delta("item_a", 800))[0] for _ in range(4)]
    call.model("response.output_audio_transcript.done", item_id="item_a",
               transcript="one two three four five six seven eight")
    return names


def test_barge_in_mid_reply_truncates_at_what_was_heard() -> None:
    call = ScriptedCall()
    call.start()
    names = _eight_word_reply(call)
    call.mark(names[0])
    call.mark(names[1])  # 200 ms heard
    out = call.at(500).speech_started()
    assert to_twilio(out, "clear") == [
        {"event": "clear", "streamSid": call.core.stream.stream_sid}
    ]  # type: ignore[union-attr]
    truncates = to_model(out, "conversation.item.truncate")
    assert truncates == [
        {
            "type": "conversation.item.truncate",
            "item_id": "item_a",
            "content_index": 0,
            "audio_end_ms": 200,
        }
    ]
    # The server cancels by itself (interrupt_response=true): no extra cancel.
    assert not to_model(out, "response.cancel")
    # Clear is sent before the truncate: stopping the audio is the urgent part.
    kinds = [type(a) for a in out]
    assert kinds.index(ClearPlayback) < kinds.index(TruncateItem)
    line = next(a for a in out if isinstance(a, TranscriptLine))
    assert (
        line.interrupted
        and line.text == "one two three four"
        and line.end_ms - line.start_ms == 200
    )


def test_the_backends_heard_text_restates_the_truncated_line_under_its_seq() -> None:
    call = ScriptedCall()
    call.start()
    names = _eight_word_reply(call)
    call.mark(names[0])
    call.mark(names[1])
    out = call.at(500).speech_started()
    cut = next(a for a in out if isinstance(a, TranscriptLine))
    assert cut.text == "one two three four"  # the core's heard-share estimate
    fixed = call.event(ev.AgentItemTruncated("item_a", "one two three "))
    assert fixed == [
        TranscriptLine("agent", "one two three", cut.start_ms, cut.end_ms, True, "item_a", cut.seq)
    ]
    assert call.core.transcript.history[cut.seq - 1] == fixed[0]  # what a new session is seeded
    # Once only, and never for an item the core did not truncate.
    assert call.event(ev.AgentItemTruncated("item_a", "one")) == []
    assert call.event(ev.AgentItemTruncated("item_zz", "one")) == []


def test_a_realtime_truncated_answer_keeps_the_estimate_and_ends_the_wait() -> None:
    call = ScriptedCall()
    call.start()
    names = _eight_word_reply(call)
    call.mark(names[0])
    cut = next(a for a in call.at(500).speech_started() if isinstance(a, TranscriptLine))
    assert call.core.transcript.confirmed_lines() == cut.seq - 1
    # The GA answer (no text of its own) changes no line, and nothing waits on it now.
    assert call.model("conversation.item.truncated", item_id="item_a", content_index=0,
                      audio_end_ms=100) == []
    assert call.core.transcript.confirmed_lines() == len(call.core.transcript.history)
    assert call.event(ev.AgentItemTruncated("item_a", "one")) == []


def test_a_standby_opened_before_the_truncate_is_answered_gets_the_answered_line() -> None:
    """Rollover race: the standby is seeded between a truncate and the backend's
    answer.  The line waits for the switch's delta, which carries the corrected text."""
    call = ScriptedCall(rollover_after_ms=60_000)
    call.start()
    call.event(ev.CallerTranscribed("item_user_0", "tell me a story"))
    names = _eight_word_reply(call)
    call.mark(names[0])
    call.mark(names[1])
    call.at(500).speech_started()
    call.response_done(status="cancelled")
    call.model("input_audio_buffer.speech_stopped", audio_end_ms=900, item_id="item_user_1")
    call.event(ev.CallerTranscribed("item_user_1", "stop"))
    assert any(isinstance(a, PrepareStandby) for a in call.at(60_000).tick())
    seed = next(a for a in call.event(ev.StandbyConnected()) if isinstance(a, ToStandby))
    seeded = [a for a in seed.actions if isinstance(a, AddUserText | AddAgentText)]
    assert seeded == [AddUserText("tell me a story")], seeded  # the cut line is held back
    call.event(ev.AgentItemTruncated("item_a", "one two three"))
    switch = call.event(ev.StandbyReady())
    assert any(isinstance(a, SwitchToStandby) for a in switch)
    delta = next(a for a in switch if isinstance(a, ToStandby))
    assert [a for a in delta.actions if isinstance(a, AddUserText | AddAgentText)] == [
        AddAgentText("one two three"), AddUserText("stop")]
    assert [type(a) for a in switch].index(ToStandby) < [type(a) for a in switch].index(
        SwitchToStandby)


def test_barge_in_before_any_echo_truncates_at_zero() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    call.delta("item_a", 1600)
    out = call.speech_started()
    assert to_model(out, "conversation.item.truncate")[0]["audio_end_ms"] == 0
    assert to_twilio(out, "clear")


def test_barge_in_after_reply_fully_played_sends_nothing() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    name = marks(call.delta("item_a", 800))[0]
    call.audio_done("item_a")
    call.response_done()
    call.mark(name)
    out = call.speech_started()
    assert not to_twilio(out) and not to_model(out)


def test_played_but_still_generating_item_is_truncated_without_clear() -> None:
    """All sent audio was heard, but the model may have generated more than we received."""
    call = ScriptedCall()
    call.start()
    call.response_created()
    call.mark(marks(call.delta("item_a", 800))[0])
    out = call.speech_started()
    assert not to_twilio(out, "clear")
    assert to_model(out, "conversation.item.truncate")[0]["audio_end_ms"] == 100


def test_marks_flushed_by_clear_are_ignored() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    names = [marks(call.delta("item_a", 800))[0] for _ in range(3)]
    call.mark(names[0])
    call.speech_started()
    # Twilio echoes the pending marks after a clear: they mean "discarded", not "played".
    before = call.core.stats["stale_marks"]
    for name in names[1:]:
        assert call.mark(name) == []
    assert call.core.stats["stale_marks"] == before + 2
    # A new reply uses a new generation and is tracked from zero.
    call.response_done("resp_1", "cancelled", "turn_detected")
    call.response_created("resp_2")
    new = marks(call.delta("item_b", 800, rid="resp_2"))[0]
    assert new.startswith("g1.") and new.endswith(":item_b:100")
    call.mark(new)
    out = call.speech_started("item_user_2")
    assert to_model(out, "conversation.item.truncate")[0] == {
        "type": "conversation.item.truncate",
        "item_id": "item_b",
        "content_index": 0,
        "audio_end_ms": 100,
    }


def test_two_quick_barge_ins_truncate_once() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    call.delta("item_a", 800)
    call.delta("item_a", 800)
    first = call.speech_started("u1")
    second = call.speech_started("u2")
    assert len(to_model(first, "conversation.item.truncate")) == 1
    assert not to_model(second) and not to_twilio(second)


def test_late_deltas_of_the_interrupted_response_are_dropped() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    call.delta("item_a", 800)
    call.speech_started()
    assert call.delta("item_a", 800) == []
    assert call.core.stats["deltas_dropped"] == 1
    call.model("response.output_audio_transcript.delta", item_id="item_a", delta="late words")
    assert not [a for a in call.actions if isinstance(a, TranscriptLine) and "late" in a.text]


@pytest.mark.parametrize("interrupt_response", [True, False])
def test_cancel_is_sent_only_when_the_server_will_not_interrupt(interrupt_response: bool) -> None:
    call = ScriptedCall(interrupt_response=interrupt_response)
    call.start()
    call.response_created()
    call.delta("item_a", 800)
    out = call.speech_started()
    assert bool(to_model(out, "response.cancel")) is (not interrupt_response)
    assert to_model(out, "conversation.item.truncate")


def test_greeting_is_requested_once_the_session_is_confirmed() -> None:
    call = ScriptedCall(greeting="Welcome to Acme!")
    out = call.start()
    creates = to_model(out, "response.create")
    assert len(creates) == 1 and "Welcome to Acme!" in creates[0]["response"]["instructions"]


def test_model_rejecting_the_audio_format_ends_the_call() -> None:
    call = ScriptedCall()
    call.start()
    out = call.model(
        "session.updated",
        session={
            "type": "realtime",
            "audio": {
                "input": {"format": {"type": "audio/pcm", "rate": 24000}},
                "output": {"format": {"type": "audio/pcmu"}},
            },
        },
    )
    assert isinstance(out[-1], EndCall) and out[-1].reason == "model_config_rejected"
    assert call.core.phase is Phase.ENDED


def test_beta_event_names_are_understood() -> None:
    call = ScriptedCall(dialect="beta")
    call.twilio(
        {"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": "CA1"}}
    )
    call.event(ev.StreamAccepted())
    update = to_model(call.event(ev.ModelConnected()))[0]
    assert update["session"]["input_audio_format"] == "g711_ulaw"
    call.model(
        "session.updated",
        session={"input_audio_format": "g711_ulaw", "output_audio_format": "g711_ulaw"},
    )
    call.response_created()
    out = call.model(
        "response.audio.delta",
        response_id="resp_1",
        item_id="item_a",
        output_index=0,
        content_index=0,
        delta="VVVV",
    )
    assert to_twilio(out, "media") and marks(out)


def _press(call: ScriptedCall, digit: str) -> list[Action]:
    return call.twilio(
        {
            "event": "dtmf",
            "streamSid": "MZ1",
            "sequenceNumber": "5",
            "dtmf": {"track": "inbound_track", "digit": digit},
        }
    )


def test_each_key_reaches_the_model_as_pressed_and_a_pause_ends_the_entry() -> None:
    call = ScriptedCall(dtmf_flush_ms=1000)
    call.start()
    texts = []
    for at, digit in ((100, "1"), (300, "2")):
        out = _press(call.at(at), digit)
        items = to_model(out, "conversation.item.create")
        assert [i["item"]["role"] for i in items] == ["user"]  # at once, not after the pause
        texts.append(items[0]["item"]["content"][0]["text"])
        assert not to_model(out, "response.create")
    assert "1" in texts[0] and "2" in texts[1]
    # The core asks to be woken when the pause would end the entry.
    assert call.all_actions[-1] == WakeAt(1300)
    assert not to_model(call.at(800).tick())  # a spurious wake-up changes nothing
    out = call.at(1300).tick()
    assert to_model(out, "response.create") and not to_model(out, "conversation.item.create")
    line = next(a for a in out if isinstance(a, TranscriptLine))
    assert line.speaker == "system" and line.text == "caller pressed 12"


def test_hash_or_the_expected_length_ends_the_entry_at_once() -> None:
    call = ScriptedCall()
    call.start()
    _press(call, "4")
    out = _press(call, "#")
    assert to_model(out, "conversation.item.create") and to_model(out, "response.create")
    call = ScriptedCall(dtmf_length=3)
    call.start()
    assert not to_model(_press(call, "1") + _press(call, "2"), "response.create")
    assert to_model(_press(call, "3"), "response.create")


def test_keys_pressed_while_the_agent_speaks_wait_for_its_response() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    out = _press(call, "9") + _press(call, "#")
    assert len(to_model(out, "conversation.item.create")) == 2
    assert not to_model(out, "response.create")  # the API allows one response at a time
    assert to_model(call.response_done(), "response.create")


def test_keys_pressed_before_the_model_is_connected_are_sent_on_connect() -> None:
    call = ScriptedCall()
    call.twilio(
        {"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": "CA1"}}
    )
    call.event(ev.StreamAccepted())
    assert not to_model(_press(call, "5") + _press(call, "#"))
    sent = to_model(call.event(ev.ModelConnected()))
    assert [e["type"] for e in sent] == [
        "session.update", "conversation.item.create", "conversation.item.create", "response.create"
    ]


@pytest.mark.parametrize(
    "frame",
    [
        "not json at all",
        "[1, 2, 3]",
        json.dumps({"no_event": True}),
        json.dumps({"event": "teleport"}),
        json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "@@@notbase64"}}),
        json.dumps({"event": "media", "streamSid": "MZ1"}),
        json.dumps({"event": "mark", "streamSid": "MZ1", "mark": {}}),
        json.dumps({"event": "dtmf", "streamSid": "MZ1", "dtmf": {"digit": "xx"}}),
        "\udcff".encode("utf-8", "surrogatepass"),
    ],
)
def test_bad_twilio_frames_are_survived(frame: str | bytes) -> None:
    call = ScriptedCall()
    call.start()
    out = call.twilio_frame(frame)
    assert not [a for a in out if isinstance(a, EndCall)]
    assert call.core.phase is Phase.ACTIVE
    # The call still works afterwards.
    assert to_model(call.media(), "input_audio_buffer.append")


def test_media_before_start_is_ignored_and_malformed_start_ends_the_call() -> None:
    call = ScriptedCall()
    out = call.media()
    assert all(isinstance(a, Notice) for a in out)
    out = call.twilio({"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1"}})
    assert isinstance(out[-1], EndCall) and out[-1].reason == "bad_start"


def test_bad_model_frames_are_survived() -> None:
    call = ScriptedCall()
    call.start()
    call.model_frame("{not json")
    call.model_frame(json.dumps({"type": "response.output_audio.delta"}))
    call.model_frame(json.dumps({"type": "response.created", "response": {}}))
    assert call.core.phase is Phase.ACTIVE


def test_stop_and_socket_closes_end_the_call_once() -> None:
    call = ScriptedCall()
    call.start()
    out = call.twilio(
        {
            "event": "stop",
            "sequenceNumber": "5",
            "streamSid": "MZ1",
            "stop": {"accountSid": "AC1", "callSid": "CA1"},
        }
    )
    assert [a.reason for a in out if isinstance(a, EndCall)] == ["caller_hung_up"]
    assert call.event(ev.ModelDisconnected(1000)) == []
    assert call.event(ev.CallerGone()) == []


def test_model_close_settles_the_unheard_agent_turn() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    name = marks(call.delta("item_a", 800))[0]
    call.delta("item_a", 800)
    call.model("response.output_audio_transcript.delta", item_id="item_a", delta="alpha beta")
    call.mark(name)
    out = call.event(ev.ModelDisconnected(1011, "server error"))
    line = next(a for a in out if isinstance(a, TranscriptLine))
    assert line.interrupted and line.text == "alpha" and line.end_ms - line.start_ms == 100
    # The call goes on: what still played at Twilio is cleared, a new session is opened.
    assert not [a for a in out if isinstance(a, EndCall)]
    assert to_twilio(out, "clear") and ConnectModel() in out


def test_model_close_ends_the_call_when_reconnect_is_off() -> None:
    call = ScriptedCall(reconnect=False)
    call.start()
    out = call.event(ev.ModelDisconnected(1011, "server error"))
    assert isinstance(out[-1], EndCall) and out[-1].reason == "model_closed"


def test_tool_call_round_trip_waits_for_the_active_response() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    out = call.model(
        "response.function_call_arguments.done",
        response_id="resp_1",
        item_id="fc_1",
        call_id="call_1",
        name="lookup",
        arguments='{"id": 7}',
    )
    assert out == [RunTool("call_1", "lookup", '{"id": 7}')]
    # Duplicate notification of the same call is not run twice.
    assert (
        call.model(
            "response.function_call_arguments.done", call_id="call_1", name="lookup", arguments="{}"
        )
        == []
    )
    result = call.event(ev.ToolFinished("call_1", '{"status": "shipped"}'))
    assert to_model(result, "conversation.item.create")[0]["item"] == {
        "type": "function_call_output",
        "call_id": "call_1",
        "output": '{"status": "shipped"}',
    }
    assert not to_model(result, "response.create")  # response still active
    done = call.response_done()
    assert to_model(done, "response.create")


def test_response_create_retried_after_conversation_already_has_active_response() -> None:
    call = ScriptedCall()
    call.start()
    call.model("response.function_call_arguments.done", call_id="c1", name="t", arguments="{}")
    sent = call.event(ev.ToolFinished("c1", "{}"))
    assert to_model(sent, "response.create")
    # A VAD response raced ours.
    call.model(
        "error",
        error={
            "type": "invalid_request_error",
            "code": "conversation_already_has_active_response",
            "message": "x",
        },
    )
    call.response_created("resp_vad")
    out = call.response_done("resp_vad")
    assert to_model(out, "response.create")


def test_hang_up_waits_until_the_goodbye_has_played() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    name = marks(call.delta("item_bye", 800))[0]
    call.model(
        "response.function_call_arguments.done",
        response_id="resp_1",
        item_id="fc",
        call_id="c1",
        name="hang_up",
        arguments="{}",
    )
    out = call.event(ev.ToolFinished("c1", '{"ok": true}', ControlRequest("hang_up")))
    assert not [a for a in out if isinstance(a, ControlCall)]
    # The goodbye was already spoken in this response: no new response is asked for.
    assert not to_model(out, "response.create")
    call.audio_done("item_bye")
    out = call.response_done()
    assert not [a for a in out if isinstance(a, ControlCall)]
    out = call.mark(name)
    assert [a for a in out if isinstance(a, ControlCall)] == [
        ControlCall("hang_up", "CA00000000000000000000000000000001", None, "")
    ]


def test_hang_up_without_spoken_goodbye_asks_for_one_first() -> None:
    call = ScriptedCall()
    call.start()
    call.response_created()
    call.model(
        "response.function_call_arguments.done",
        response_id="resp_1",
        call_id="c1",
        name="transfer_call",
        arguments='{"to": "+15551230000"}',
    )
    out = call.feed(
        call.event(ev.ToolFinished("c1", "{}", ControlRequest("transfer", target="+15551230000")))
    )
    assert not to_model(out, "response.create")
    out = call.response_done()
    assert "transferring" in to_model(out, "response.create")[0]["response"]["instructions"]
    call.response_created("resp_2")
    name = marks(call.delta("item_t", 800, rid="resp_2"))[0]
    call.response_done("resp_2")
    out = call.mark(name)
    assert [a.kind for a in out if isinstance(a, ControlCall)] == ["transfer"]


def test_hang_up_happens_anyway_after_the_grace_period() -> None:
    call = ScriptedCall(control_grace_ms=5000)
    call.start()
    call.response_created()
    call.delta("item_bye", 800)
    call.model(
        "response.function_call_arguments.done",
        response_id="resp_1",
        call_id="c1",
        name="hang_up",
        arguments="{}",
    )
    call.event(ev.ToolFinished("c1", "{}", ControlRequest("hang_up")))
    assert not [a for a in call.at(4000).tick() if isinstance(a, ControlCall)]
    assert [a for a in call.at(5000).tick() if isinstance(a, ControlCall)]


def test_max_duration_ends_the_call() -> None:
    call = ScriptedCall(max_call_ms=60_000)
    call.start()
    assert call.at(59_999).tick() == []
    out = call.at(60_000).tick()
    assert isinstance(out[-1], EndCall) and out[-1].reason == "max_duration"


def test_send_dtmf_plays_tones_to_twilio_and_tracks_them_like_speech() -> None:
    from bridge.audio.dtmf import dtmf_ulaw

    call = ScriptedCall()
    call.start()
    call.response_created()
    call.model(
        "response.function_call_arguments.done",
        response_id="resp_1",
        call_id="c1",
        name="send_dtmf",
        arguments='{"digits": "12#"}',
    )
    out = call.feed(
        call.event(ev.ToolFinished("c1", '{"ok": true}', ControlRequest("send_dtmf", digits="12#")))
    )
    media = to_twilio(out, "media")
    assert len(media) == 1
    assert base64.b64decode(media[0]["media"]["payload"]) == dtmf_ulaw("12#")
    assert len(dtmf_ulaw("12#")) == 3 * (800 + 480)  # 100 ms tone + 60 ms gap per digit
    assert marks(out)  # its playback is tracked like any agent audio


def test_a_flood_of_bad_frames_is_counted_but_not_logged_every_time() -> None:
    call = ScriptedCall()
    call.start()
    bad = json.dumps({"event": "media", "streamSid": "MZ1", "media": {"payload": "%%%"}})
    notices = [a for _ in range(1000) for a in call.twilio_frame(bad)]
    assert [type(n) for n in notices] == [Notice] * 3  # the 1st, 500th and 1000th
    assert "1000 times" in notices[-1].message  # type: ignore[union-attr]
    assert call.core.stats["bad_frames"] == 1000


def test_reconnect_backoff_first_retry_at_once_then_jittered_and_capped() -> None:
    import random

    from bridge.core.outage import BACKOFF_CAP_MS, backoff_ms

    rng = random.Random(7)
    delays = [backoff_ms(n, rng) for n in range(1, 10)]
    assert delays[0] == 0
    for attempt, delay in enumerate(delays[1:], start=2):
        ceiling = min(BACKOFF_CAP_MS, 250 * 2 ** (attempt - 2))
        assert 0.5 * ceiling <= delay <= 1.5 * ceiling
    # Calls dropped together spread out; the same seed gives the same schedule (tapes).
    assert len({backoff_ms(4, random.Random(seed)) for seed in range(50)}) > 30
    assert [backoff_ms(n, random.Random(1)) for n in range(1, 6)] == [
        backoff_ms(n, random.Random(1)) for n in range(1, 6)
    ]


def test_seeding_keeps_the_newest_turns_and_tool_calls_whole() -> None:
    from bridge.core.actions import AddAgentText, AddToolCall, AddToolOutput, AddUserText
    from bridge.core.outage import ToolRecord, seed_items

    lines = [
        TranscriptLine("caller", "first question " * 20, 0, 1, seq=1),
        TranscriptLine("agent", "first answer " * 20, 1, 2, seq=2),
        TranscriptLine("caller", "order status?", 2, 3, seq=3),
        TranscriptLine("agent", "", 3, 3, interrupted=True, seq=4),  # heard nothing
        TranscriptLine("system", "caller pressed 42#", 4, 4, seq=5),
    ]
    tools = [ToolRecord(3, "c1", "lookup", '{"id": 1}', '{"status": "shipped"}')]
    items, dropped = seed_items(lines, tools, max_chars=200)
    assert dropped == 2  # the two long oldest turns did not fit
    assert items == [
        AddUserText("order status?"),
        AddToolCall("c1", "lookup", '{"id": 1}'),
        AddToolOutput("c1", '{"status": "shipped"}'),
        AddUserText("[The caller pressed 42# on their phone keypad]"),
    ]
    assert not [i for i in items if isinstance(i, AddAgentText) and not i.text]


def test_an_outage_holds_the_caller_and_the_new_session_hears_the_whole_turn() -> None:
    call = ScriptedCall()
    call.start()
    call.at(1000).speech_started(at_ms=950)  # the caller starts a sentence...
    call.at(1000).media()
    call.at(1020).media()
    out = call.at(1040).event(ev.ModelDisconnected(1011, "boom", "backoff", "close_1011"))
    assert ConnectModel() in out and not [a for a in out if isinstance(a, EndCall)]
    call.at(1100).media()  # ...and goes on talking during the gap
    assert call.core.phase is Phase.RECONNECTING
    sent = to_model(call.at(1200).event(ev.ModelConnected()))
    assert sent[0]["type"] == "session.update"
    appends = [e for e in sent if e["type"] == "input_audio_buffer.append"]
    assert len(appends) == 3  # the sentence's start, from before the drop, and the gap
    reconnected = next(a for a in call.all_actions if getattr(a, "kind", "") == "reconnected")
    assert reconnected.data["gap_ms"] == 160  # type: ignore[union-attr]
    assert call.core.stats["reconnects"] == 1


def test_retries_back_off_then_the_fallback_apologises_and_hangs_up() -> None:
    call = ScriptedCall(reconnect_budget_ms=3000, apology_audio=b"\x7f" * 4000)
    call.start()
    call.at(0).event(ev.ModelDisconnected(1011, "boom", "backoff", "close_1011"))
    out = call.at(10).event(ev.ModelUnavailable("503", "backoff", "http_503"))
    assert ConnectModel() not in out  # the second attempt waits its backoff...
    wake = [a for a in call.all_actions if isinstance(a, WakeAt)][-1]
    assert 10 < wake.at <= 10 + 375
    assert ConnectModel() in call.at(wake.at).tick()  # ...then goes
    out = call.at(3001).tick()  # the budget is spent: apologise, then hang up
    media = to_twilio(out, "media")
    assert sum(len(base64.b64decode(m["media"]["payload"])) for m in media) == 4000
    assert not [a for a in out if isinstance(a, ControlCall)]  # not before it has played
    for name in marks(out):
        out = call.mark(name)
    assert [a.kind for a in out if isinstance(a, ControlCall)] == ["hang_up"]
    out = call.event(ev.ControlFinished("hang_up", True)) + call.twilio({"event": "stop"})
    assert [a.reason for a in out if isinstance(a, EndCall)] == ["model_unavailable"]


def test_a_bad_key_is_final_and_never_retried() -> None:
    call = ScriptedCall(apology_audio=b"\x7f" * 800)
    call.twilio(
        {"event": "start", "streamSid": "MZ1", "start": {"streamSid": "MZ1", "callSid": "CA1"}}
    )
    call.event(ev.StreamAccepted())
    out = call.event(ev.ModelUnavailable("401 invalid_api_key", "never", "bad_api_key"))
    assert ConnectModel() not in out and to_twilio(out, "media")
    fallback = next(a for a in call.all_actions if getattr(a, "kind", "") == "fallback")
    assert fallback.data == {"action": "hang_up", "cause": "bad_api_key"}  # type: ignore[union-attr]
