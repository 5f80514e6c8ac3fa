"""The cascade backend driven with the core's actions, against the stand-ins over real sockets."""

from __future__ import annotations

import asyncio
import base64
import json
import warnings

import numpy as np
import pytest

from bridge.audio.prompts import bundled_prompt
from bridge.call.backend import BackendUnavailable
from bridge.cascade.backend import CascadeBackend
from bridge.cascade.connection import APOLOGY_TEXT
from bridge.cascade.heard import SpokenPiece, heard_text
from bridge.core.actions import AddToolOutput, CancelResponse, CreateResponse, TruncateItem
from bridge.core.events import (
    AgentAudio,
    AgentAudioDone,
    AgentTextDelta,
    AgentTextDone,
    CallerTranscribed,
    ModelDisconnected,
    ModelErrorReported,
    ResponseFinished,
    ResponseStarted,
    SessionConfigured,
    SpeechStarted,
    SpeechStopped,
    ToolCallRequested,
)
from bridge.core.stream import StreamInfo
from bridge.devtools.sim.clips import clip_text
from bridge.devtools.sim.openai_rest import ChatRule, OpenAIRestSimulator, speech_for
from bridge.devtools.sim.realtime_transcription import TranscriptionSimulator
from tests.cascade_harness import KEY, Driver, open_driver, say, settings_for

pytestmark = pytest.mark.e2e

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

REPLY = clip_text("agent_reply")


@pytest.fixture
async def stand_ins():
    async with OpenAIRestSimulator(api_key=KEY, chat_first_token_ms=20,
                                   speech_first_byte_ms=20) as rest, \
            TranscriptionSimulator(api_key=KEY, transcription_latency_ms=30) as stt:
        yield rest, stt


def _audio(driver: Driver, response_id: str) -> bytes:
    return b"".join(base64.b64decode(e.payload) for e in driver.events(AgentAudio)
                    if e.response_id == response_id)


def _pieces(driver: Driver, response_id: str) -> list[str]:
    item = next(e.item_id for e in driver.events(AgentAudio) if e.response_id == response_id)
    return [e.delta.strip() for e in driver.events(AgentTextDelta) if e.item_id == item]


async def test_a_turn_emits_realtime_events_in_order_with_real_mulaw(stand_ins):
    rest, stt = stand_ins
    driver = await open_driver(settings_for(rest, stt))
    try:
        configured = await driver.wait_for(SessionConfigured)
        assert (configured.input_format, configured.output_format) == ("audio/pcmu",
                                                                       "audio/pcmu")
        await say(driver, "caller_question")
        done = await driver.wait_for(ResponseFinished)
        assert done.status == "completed"
        kinds = [k for k in driver.kinds() if k not in ("AgentAudio", "AgentTextDelta")]
        assert kinds == ["SessionConfigured", "SpeechStarted", "SpeechStopped",
                         "CallerTranscribed", "ResponseStarted", "AgentAudioDone",
                         "AgentTextDone", "ResponseFinished"]
        order = driver.kinds()
        first_audio = order.index("AgentAudio")
        assert order.index("ResponseStarted") < order.index("AgentTextDelta") < first_audio
        assert max(i for i, k in enumerate(order) if k == "AgentAudio") < order.index(
            "AgentAudioDone")
        transcribed = driver.events(CallerTranscribed)[0]
        assert transcribed.text == clip_text("caller_question")  # recognised from the audio
        assert driver.events(SpeechStarted)[0].item_id == transcribed.item_id

        # the transcript goes to the LLM, the reply is spoken in several pieces
        request = rest.chat_requests[0].body
        assert request["stream"] is True and request["model"] == "gpt-4.1-mini"
        assert request["messages"][0] == {"role": "system", "content": "You are Acme's desk."}
        assert request["messages"][-1] == {"role": "user", "content": transcribed.text}
        assert request["tools"][0]["function"]["name"] == "hang_up"
        pieces = _pieces(driver, done.response_id)
        assert len(pieces) >= 3 and " ".join(pieces) == REPLY
        assert [r.body["input"] for r in rest.speech_requests] == pieces
        assert {r.body["voice"] for r in rest.speech_requests} == {"marin"}
        assert driver.events(AgentTextDone)[0].text == REPLY

        # the audio is the clip's speech, mu-law 8 kHz, of the right length
        audio = _audio(driver, done.response_id)
        expected = b"".join(speech_for(p) for p in pieces)
        assert abs(len(audio) - len(expected)) <= 3 * len(pieces) + 30
        assert sum(e.samples for e in driver.events(AgentAudio)) == len(audio)
        got = np.frombuffer(audioop.ulaw2lin(audio, 2), dtype="<i2").astype(np.float64)
        want = np.frombuffer(audioop.ulaw2lin(expected, 2), dtype="<i2").astype(np.float64)
        n = min(len(got), len(want)) - 64
        best = max(np.corrcoef(got[lag:lag + n], want[:n])[0, 1] for lag in range(0, 48))
        assert best > 0.95, best
    finally:
        await driver.close()


async def test_usage_per_stage_and_latency_breakdown(stand_ins):
    rest, stt = stand_ins
    driver = await open_driver(settings_for(rest, stt))
    try:
        await say(driver, "caller_question")
        done = await driver.wait_for(ResponseFinished)
        usage = done.usage
        assert usage["backend"] == "cascade"
        assert usage["stt_model"] == "gpt-4o-mini-transcribe"
        # the utterance (speech plus the VAD's padding and silence), not the whole buffer
        assert 2.0 < usage["stt_audio_seconds"] < 4.0
        assert usage["llm_prompt_tokens"] > 0
        assert usage["llm_completion_tokens"] == len(REPLY.split())
        assert usage["tts_characters"] == sum(len(p) for p in _pieces(driver, done.response_id))
        assert usage["tts_audio_seconds"] == pytest.approx(
            len(_audio(driver, done.response_id)) / 8000, abs=0.002)
        latency = usage["cascade_latency_ms"]
        for key in ("speech_stopped_to_transcript", "transcript_to_first_token",
                    "first_token_to_first_tts_audio", "first_tts_audio_to_first_audio_out",
                    "speech_stopped_to_first_audio_out"):
            assert isinstance(latency[key], int) and latency[key] >= 0, (key, latency)
        # the cascade's own requests wait for the stand-ins' delays (20 ms each); the STT's
        # share is not bounded below: its events can arrive together on a busy host
        assert latency["transcript_to_first_token"] >= 15
        assert latency["first_token_to_first_tts_audio"] >= 15
        parts = sum(latency[k] for k in ("speech_stopped_to_transcript",
                                         "transcript_to_first_token",
                                         "first_token_to_first_tts_audio",
                                         "first_tts_audio_to_first_audio_out"))
        assert abs(parts - latency["speech_stopped_to_first_audio_out"]) <= 4
    finally:
        await driver.close()


async def test_tool_call_round_trip(stand_ins):
    rest, stt = stand_ins
    driver = await open_driver(settings_for(rest, stt))
    try:
        await say(driver, "caller_thanks")  # "Great, thanks. Bye." -> hang_up
        call = await driver.wait_for(ToolCallRequested)
        done = await driver.wait_for(ResponseFinished)
        assert call.name == "hang_up" and json.loads(call.arguments) == {
            "reason": "caller said bye"}
        assert call.response_id == done.response_id and done.status == "completed"
        assert driver.kinds().index("ToolCallRequested") < driver.kinds().index(
            "ResponseFinished")
        assert not driver.events(AgentAudio)  # a pure tool call says nothing

        driver.send(AddToolOutput(call.call_id, '{"ok": true}'))
        driver.send(CreateResponse())
        second = await driver.wait_for(ResponseFinished, count=2)
        assert second.status == "completed"
        assert " ".join(_pieces(driver, second.response_id)) == clip_text("agent_goodbye")
        messages = rest.chat_requests[-1].body["messages"]
        assert messages[-2]["role"] == "assistant"
        assert messages[-2]["tool_calls"][0]["id"] == call.call_id
        assert messages[-2]["tool_calls"][0]["function"]["name"] == "hang_up"
        assert messages[-1] == {"role": "tool", "tool_call_id": call.call_id,
                                "content": '{"ok": true}'}
    finally:
        await driver.close()


async def test_create_response_instructions_are_a_one_off_system_message(stand_ins):
    rest, stt = stand_ins
    driver = await open_driver(settings_for(rest, stt))
    try:
        greeting = clip_text("agent_greeting")
        driver.send(CreateResponse(instructions="Greet the caller by saying exactly this, "
                                   "and nothing else: " + json.dumps(greeting)))
        driver.send(CreateResponse())  # a second one while active: the Realtime error
        err = await driver.wait_for(ModelErrorReported)
        assert err.code == "conversation_already_has_active_response"
        done = await driver.wait_for(ResponseFinished)
        assert driver.events(AgentTextDone)[0].text == greeting
        assert rest.chat_requests[0].body["messages"][-1]["role"] == "system"
        assert len(rest.chat_requests) == 1
        # the next turn's request no longer carries the one-off instructions
        await say(driver, "caller_question")
        await driver.wait_for(ResponseFinished, count=2)
        messages = rest.chat_requests[1].body["messages"]
        assert [m["role"] for m in messages] == ["system", "assistant", "user"]
        assert messages[1]["content"] == greeting and done.status == "completed"
    finally:
        await driver.close()


async def test_barge_in_cancels_streams_and_truncation_cuts_history_to_heard_text():
    # real-time TTS streaming, so the reply is still being synthesised when the caller talks
    async with OpenAIRestSimulator(api_key=KEY, chat_first_token_ms=20,
                                   chat_token_interval_ms=80, speech_first_byte_ms=20,
                                   speech_chunk_interval_ms=100) as rest, \
            TranscriptionSimulator(api_key=KEY, transcription_latency_ms=30) as stt:
        driver = await open_driver(settings_for(rest, stt))
        try:
            await say(driver, "caller_question")
            started = await driver.wait_for(ResponseStarted)
            await driver.wait_for(AgentAudio, lambda e: e.samples > 0, count=12)
            await say(driver, "caller_interrupt", silence_ms=0)
            barge = await driver.wait_for(SpeechStarted, count=2)
            done = await driver.wait_for(ResponseFinished)
            assert done.response_id == started.response_id and done.status == "cancelled"
            assert done.usage["cancel_reason"] == "turn_detected"
            barge_at = driver.first(SpeechStarted, lambda e: e is barge)
            assert barge_at is not None
            late = [s for s in driver.seen if isinstance(s.event, AgentAudio)
                    and s.event.response_id == started.response_id and s.at > barge_at.at]
            assert not late, "audio of the cancelled response after the barge-in"
            # the LLM and TTS streams were cut, not run to the end
            await asyncio.sleep(0.3)
            assert not rest.chat_requests[0].completed
            assert not all(r.completed for r in rest.speech_requests)

            # the core says what the caller heard: 1.6 s of the reply
            audio = [e for e in driver.events(AgentAudio)
                     if e.response_id == started.response_id]
            item_id = audio[0].item_id
            driver.send(TruncateItem(item_id, 0, 1600))
            await say(driver, None, silence_ms=800)  # end of the interruption
            second = await driver.wait_for(ResponseFinished, count=2)
            assert second.status == "completed"
            messages = rest.chat_requests[1].body["messages"]
            assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
            heard = messages[2]["content"]
            assert messages[3]["content"] == clip_text("caller_interrupt")
            # a prefix of the reply, cut at a word boundary, shorter than what was sent
            assert heard and REPLY.startswith(heard) and REPLY[len(heard)] in " ,."
            sent_text = driver.events(AgentTextDone)[0].text
            assert len(heard) < len(sent_text)
            # and exactly what the per-piece mapping gives for the audio really emitted
            pieces, offset = [], 0
            deltas = [e.delta.strip() for e in driver.events(AgentTextDelta)
                      if e.item_id == item_id]
            per_piece = _samples_per_piece(driver, item_id)
            for text, samples in zip(deltas, per_piece, strict=True):
                pieces.append(SpokenPiece(text, offset / 8, samples / 8))
                offset += samples
            if heard != heard_text(pieces, 1600):
                # the cut piece's length was estimated from the turn's speaking rate
                assert heard.startswith(heard_text(pieces[:-1], 1600))
            words = len(heard.split())
            assert 3 <= words <= 12, heard  # 1.6 s of a ~15 chars/s voice
        finally:
            await driver.close()


def _samples_per_piece(driver: Driver, item_id: str) -> list[int]:
    """Audio samples between consecutive AgentTextDelta events of one item."""
    counts: list[int] = []
    for s in driver.seen:
        e = s.event
        if isinstance(e, AgentTextDelta) and e.item_id == item_id:
            counts.append(0)
        elif isinstance(e, AgentAudio) and e.item_id == item_id and counts:
            counts[-1] += e.samples
    return counts


async def test_cancel_response_and_cancel_without_response(stand_ins):
    rest, stt = stand_ins
    rest.speech_chunk_interval_ms = 100
    driver = await open_driver(settings_for(rest, stt))
    try:
        driver.send(CancelResponse())
        err = await driver.wait_for(ModelErrorReported)
        assert err.code == "response_cancel_not_active"
        driver.send(CreateResponse())
        await driver.wait_for(AgentAudio)
        driver.send(CancelResponse())
        done = await driver.wait_for(ResponseFinished)
        assert done.status == "cancelled" and done.usage["cancel_reason"] == "client_cancelled"
        await driver.wait_for(AgentAudioDone)
        n = len(driver.events(AgentAudio))
        await asyncio.sleep(0.3)
        assert len(driver.events(AgentAudio)) == n
    finally:
        await driver.close()


async def test_llm_failing_mid_stream_plays_what_was_written_then_fails_the_response():
    rules = [ChatRule("opening hours", {"text": REPLY, "fail_after_words": 20})]
    async with OpenAIRestSimulator(rules, api_key=KEY, chat_first_token_ms=20,
                                   speech_first_byte_ms=20) as rest, \
            TranscriptionSimulator(api_key=KEY, transcription_latency_ms=30) as stt:
        driver = await open_driver(settings_for(rest, stt))
        try:
            await say(driver, "caller_question")
            done = await driver.wait_for(ResponseFinished)
            assert done.status == "failed"
            err = driver.events(ModelErrorReported)[0]
            assert err.code == "llm_failed"
            assert KEY not in err.message
            order = driver.kinds()
            assert order.index("ModelErrorReported") < order.index("ResponseFinished")
            # the first clause was complete before the break: it was spoken, not dropped;
            # then the bridge's apology prompt, so the caller does not get silence
            spoken = driver.events(AgentTextDone)[0].text
            assert spoken.endswith(" " + APOLOGY_TEXT)
            written = spoken[: -len(APOLOGY_TEXT) - 1]
            assert written and REPLY.startswith(written)
            apology = bundled_prompt("apology")
            audio = b"".join(base64.b64decode(e.payload) for e in driver.events(AgentAudio))
            assert len(audio) > len(apology) and audio.endswith(apology)
            assert rest.chat_requests and not rest.chat_requests[0].completed
        finally:
            await driver.close()


async def test_tts_failing_mid_stream_fails_the_response(stand_ins):
    rest, stt = stand_ins
    rest.fail_next_speech(after_bytes=4800 * 3)
    driver = await open_driver(settings_for(rest, stt))
    try:
        await say(driver, "caller_question")
        done = await driver.wait_for(ResponseFinished)
        assert done.status == "failed"
        assert driver.events(ModelErrorReported)[0].code == "tts_failed"
        # the audio that did arrive went out, and its item was closed
        assert driver.events(AgentAudio) and driver.events(AgentAudioDone)
    finally:
        await driver.close()


async def test_tts_refusing_fails_the_response_with_only_the_apology(stand_ins):
    rest, stt = stand_ins
    rest.fail_next_speech(status=500)
    driver = await open_driver(settings_for(rest, stt))
    try:
        driver.send(CreateResponse())
        done = await driver.wait_for(ResponseFinished)
        assert done.status == "failed"
        assert driver.events(ModelErrorReported)[0].code == "tts_failed"
        # no TTS audio at all, so what the caller hears is the bridge's own apology
        audio = b"".join(base64.b64decode(e.payload) for e in driver.events(AgentAudio))
        assert audio == bundled_prompt("apology")
        assert driver.events(AgentTextDone)[0].text == APOLOGY_TEXT
    finally:
        await driver.close()


async def test_stt_session_dropping_ends_the_connection(stand_ins):
    rest, stt = stand_ins
    driver = await open_driver(settings_for(rest, stt))
    try:
        await driver.wait_for(SessionConfigured)
        await stt.drop_all(1011, "simulated failure")
        gone = await driver.wait_for(ModelDisconnected)
        assert gone.code == 1011 and gone.detail.startswith("stt:")
        await asyncio.sleep(0.05)
        assert driver.ended
    finally:
        await driver.close()


async def test_rest_stt_mode_endpoints_locally_and_transcribes_per_utterance(stand_ins):
    rest, _ = stand_ins
    driver = await open_driver(settings_for(rest, None, mode="rest"))
    try:
        await driver.wait_for(SessionConfigured)
        await say(driver, "caller_question")
        stopped = await driver.wait_for(SpeechStopped)
        text = await driver.wait_for(CallerTranscribed)
        assert text.text == clip_text("caller_question") and text.item_id == stopped.item_id
        assert rest.transcription_requests[0].body["model"] == "whisper-1"
        done = await driver.wait_for(ResponseFinished)
        assert done.status == "completed" and done.usage["stt_model"] == "whisper-1"
        assert 2.0 < done.usage["stt_audio_seconds"] < 4.0
    finally:
        await driver.close()


async def test_opening_failures_are_classified(stand_ins):
    rest, stt = stand_ins
    info = StreamInfo(stream_sid="MZ1", call_sid="CA1")
    with pytest.raises(BackendUnavailable) as refused:
        await CascadeBackend(settings_for(rest, stt, key="sk-wrong")).connect(info)
    assert refused.value.retry == "never" and "401" in refused.value.detail
    assert "sk-wrong" not in refused.value.detail
    unreachable = settings_for(rest, None)
    with pytest.raises(BackendUnavailable) as down:
        await CascadeBackend(unreachable).connect(info)
    assert down.value.retry == "backoff"
    conn = await CascadeBackend(settings_for(rest, stt)).connect(info)
    await conn.close()
    await conn.close()  # idempotent


async def test_llm_key_rejected_is_an_error_without_the_key(stand_ins):
    rest, stt = stand_ins
    settings = settings_for(rest, stt)
    from dataclasses import replace

    from bridge.config import Secret
    bad = replace(settings, llm=replace(settings.llm, api_key=Secret("sk-bad-llm-key-xyz")))
    driver = await open_driver(bad)
    try:
        driver.send(CreateResponse())
        done = await driver.wait_for(ResponseFinished)
        err = driver.events(ModelErrorReported)[0]
        assert done.status == "failed" and err.code == "llm_failed" and "401" in err.message
        assert "sk-bad-llm-key-xyz" not in err.message
    finally:
        await driver.close()


async def test_truncating_a_finished_turn_and_reseeded_items_shape_the_next_request(stand_ins):
    # the usual barge-in: the LLM and TTS finished long ago, Twilio is still playing
    rest, stt = stand_ins
    driver = await open_driver(settings_for(rest, stt))
    try:
        from bridge.core.actions import AddAgentText, AddUserText
        driver.send(AddUserText("pressed 1"))
        driver.send(AddAgentText("You pressed one."))
        await say(driver, "caller_question")
        done = await driver.wait_for(ResponseFinished)
        assert done.status == "completed"
        item_id = driver.events(AgentAudio)[0].item_id
        driver.send(TruncateItem(item_id, 0, 0))  # heard nothing: the turn leaves the history
        driver.send(TruncateItem("item_unknown", 0, 10))
        err = await driver.wait_for(ModelErrorReported)
        assert err.code == "item_truncate_invalid_item_id"
        await say(driver, "caller_interrupt")
        await driver.wait_for(ResponseFinished, count=2)
        messages = rest.chat_requests[1].body["messages"]
        assert [(m["role"], m["content"]) for m in messages[1:]] == [
            ("user", "pressed 1"), ("assistant", "You pressed one."),
            ("user", clip_text("caller_question")), ("user", clip_text("caller_interrupt"))]
    finally:
        await driver.close()


async def test_pcm16_calls_are_refused_through_the_session_mismatch(stand_ins):
    rest, stt = stand_ins
    from bridge.cascade.connection import CascadeConnection
    from bridge.config import AgentConfig
    from bridge.core.actions import ConfigureSession
    conn = CascadeConnection(settings_for(rest, stt))
    await conn.open()
    driver = Driver(conn)
    driver.start()
    try:
        driver.send(ConfigureSession(agent=AgentConfig(), audio_mode="pcm16", model="cascade"))
        configured = await driver.wait_for(SessionConfigured)
        assert configured.mismatch and "passthrough" in configured.mismatch
        assert conn.last_frame is None
    finally:
        await driver.close()
