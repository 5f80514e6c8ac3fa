"""Whole cascade calls over real sockets: Twilio caller simulator -> the real bridge
(``BRIDGE_BACKEND=cascade``) -> the OpenAI REST and transcription-session stand-ins.

Nothing of the bridge is replaced: the webhook, the stream token, the relay, the core,
the cascade (through the real ``openai`` SDK and ``websockets``) and the store all run
as in production.  The caller's clips are recognised by their audio, so a transcript
is right only if the bridge sent the STT the caller's real audio.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pytest

from bridge.cascade.connection import APOLOGY_TEXT
from bridge.devtools.sim.cascade_standins import CascadeStandIns
from bridge.devtools.sim.clips import clip_text, load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.openai_rest import ChatRule, OpenAIRestSimulator
from bridge.devtools.sim.realtime_transcription import TranscriptionSimulator
from bridge.devtools.sim.twilio_caller import CallResult
from bridge.services import BridgeServices
from bridge.store.cli import format_call
from bridge.store.records import CallRecord

pytestmark = pytest.mark.e2e

KEY = "sk-cascade-e2e-secret-0123456789"
#: No Realtime server listens here: a cascade call must never need one.
NO_REALTIME = "ws://127.0.0.1:9/v1/realtime"
QUESTION = load_clip("caller_question")[: 8 * 1000]  # recognised from its first second
INTERRUPT = load_clip("caller_interrupt")[: 8 * 1100]
FAST = {"chat_first_token_ms": 60.0, "speech_first_byte_ms": 60.0}


@dataclass
class Outcome:
    result: CallResult
    record: CallRecord
    rest: OpenAIRestSimulator
    stt: TranscriptionSimulator
    services: BridgeServices

    def lines(self, speaker: str) -> list[str]:
        return [t.text for t in self.record.turns if t.speaker == speaker]

    def chat_messages(self, index: int) -> list[dict[str, Any]]:
        return list(self.rest.chat_requests[index].body["messages"])


async def cascade_call(
    script: list[tuple[float, str | bytes]],
    *,
    duration_ms: float,
    dtmf: list[tuple[float, str]] | None = None,
    rules: list[ChatRule] | None = None,
    env: dict[str, str] | None = None,
    before: Any = None,
    **rest: Any,
) -> Outcome:
    async with CascadeStandIns(KEY, rules=rules, transcription_latency_ms=60.0,
                               **{**FAST, **rest}) as standins:
        if before is not None:
            before(standins)
        async with LocalBridge(NO_REALTIME, env={**standins.env(), **(env or {})}) as bridge:
            caller = await bridge.place_call(script=script, dtmf=dtmf or [],
                                             duration_ms=duration_ms)
            result = await caller.run()
            store = bridge.services.store
            assert store is not None
            record = None
            for _ in range(50):  # the relay records the end a moment after the socket closes
                await store.flush()
                record = await store.get_call(result.call_sid)
                if record is not None and record.end_reason is not None:
                    break
                await asyncio.sleep(0.05)
            assert record is not None
            return Outcome(result, record, standins.rest, standins.stt, bridge.services)


async def test_a_turn_goes_through_stt_llm_and_tts_and_is_recorded_with_its_cost() -> None:
    out = await cascade_call([(200, QUESTION)], duration_ms=4200)
    # The STT heard the caller's real audio, and the LLM got that transcript.
    assert out.lines("caller") == [clip_text("caller_question")]
    user = [m for m in out.chat_messages(0) if m["role"] == "user"]
    assert user[-1]["content"] == clip_text("caller_question")
    assert out.chat_messages(0)[0]["role"] == "system"
    # The caller heard the agent's answer (TTS audio, resampled to mu-law 8 kHz).
    agent = out.lines("agent")
    assert len(agent) == 1 and agent[0].startswith("Our store is open")
    assert out.result.media_bytes_received > 8 * 500
    assert out.result.violations == []
    # One transcription session, no Realtime socket (the webhook skipped the pre-connect).
    assert len(out.stt.connections) == 1
    assert out.services.connector.warm_count == 0
    assert {k: v for k, v in out.services.connector.stats.items() if v} == {}
    # The response is a cascade response, priced per stage, with its latency breakdown.
    (response,) = out.record.responses
    assert response.backend == "cascade" and response.stages is not None
    assert response.stages.tts_usd > 0 and response.stages.stt_usd > 0
    assert response.stages.realtime_equivalent_usd > response.cost_usd > 0
    latency = response.latency_ms
    # Each span reflects its stand-in's 60 ms. Both ends are stamped where the events
    # arrive, so on a loaded host delivery lag can shorten a span by a few tens of ms:
    # the bound is half the stage, which still fails for a span that is not measured.
    assert latency["speech_stopped_to_transcript"] is not None
    assert latency["speech_stopped_to_transcript"] >= 60 / 2
    assert latency["transcript_to_first_token"] is not None
    assert latency["transcript_to_first_token"] >= 60 / 2
    turn = latency["speech_stopped_to_first_audio_out"]
    assert turn is not None and turn >= 3 * 60 / 2  # not faster than the stages allow
    shown = format_call(out.record)
    assert "Cascade backend (1 responses)" in shown
    assert "on Realtime ≈" in shown and str(turn) in shown


async def test_a_tool_call_runs_the_tool_and_the_agent_answers_its_output() -> None:
    rules = [
        ChatRule("opening hours",
                 {"tool_call": {"name": "lookup_order", "arguments": {"order_id": "A100"}}}),
        ChatRule("shipped", clip_text("agent_short"), role="tool"),
        ChatRule("", "That did not work.", role="tool"),
    ]
    out = await cascade_call([(200, QUESTION)], duration_ms=4600, rules=rules,
                             env={"AGENT_TOOLS": "hang_up,tests.example_tools:lookup_order"})
    offered = {t["function"]["name"] for t in out.rest.chat_requests[0].body["tools"]}
    assert offered == {"hang_up", "lookup_order"}
    second = out.chat_messages(1)
    call = next(m for m in second if m.get("tool_calls"))
    assert call["tool_calls"][0]["function"]["name"] == "lookup_order"
    output = next(m for m in second if m["role"] == "tool")
    assert output["tool_call_id"] == call["tool_calls"][0]["id"]
    assert '"status"' in output["content"] and "A100" in output["content"]
    assert out.lines("agent") and out.lines("agent")[0].startswith("Of course.")


async def test_barge_in_clears_twilio_cancels_the_streams_and_cuts_the_history() -> None:
    # Slow enough that the LLM is still writing and TTS still streaming at the barge-in.
    out = await cascade_call(
        [(200, QUESTION), (3900, INTERRUPT)], duration_ms=6600,
        chat_token_interval_ms=60.0, speech_chunk_interval_ms=100.0,
    )
    result = out.result
    assert result.clears, "no clear reached Twilio"
    clear = result.clears[0]
    assert clear.discarded_bytes > 0
    # What the caller heard of the reply, from the caller's own playback position.
    reply_start = result.media[0].position
    heard_ms = (clear.played_position - reply_start) / 8
    assert heard_ms > 500, heard_ms
    # The reply's LLM stream and at least one TTS stream were closed by the bridge.
    assert out.rest.chat_requests[0].completed is False
    assert any(not r.completed for r in out.rest.speech_requests)
    # The LLM's next view of the conversation holds only the words the caller heard.
    full = clip_text("agent_reply")
    later = out.chat_messages(1)
    assert later[-1] == {"role": "user", "content": clip_text("caller_interrupt")}
    (assistant,) = [m for m in later if m["role"] == "assistant"]
    kept = assistant["content"]
    assert kept and full.startswith(kept)
    # The stand-in's speech lasts ~60 ms per character: the cut is within a word or two
    # (and the resampler's few ms) of what was heard, never beyond it.
    assert heard_ms / 60 - 15 <= len(kept) <= heard_ms / 60 + 1, (heard_ms, kept)
    agent = [t for t in out.record.turns if t.speaker == "agent"]
    assert agent[0].interrupted and full.startswith(agent[0].text)
    assert out.lines("caller")[1] == clip_text("caller_interrupt")
    cancelled = [r for r in out.record.responses if r.status == "cancelled"]
    assert cancelled and cancelled[0].backend == "cascade"
    assert cancelled[0].latency_ms["speech_stopped_to_first_audio_out"] is not None


async def test_the_agent_hangs_up_after_the_caller_heard_the_goodbye() -> None:
    out = await cascade_call([(200, load_clip("caller_thanks"))], duration_ms=12000)
    result = out.result
    assert result.closed_by == "server", result.closed_by
    assert out.record.end_reason == "agent_hung_up"
    goodbye = [t for t in out.record.turns if t.speaker == "agent"]
    assert [t.text for t in goodbye] == [clip_text("agent_goodbye")]
    assert not goodbye[0].interrupted
    # Hung up only once the goodbye had played: the close comes after its last mark echo.
    assert result.marks and result.closed_ms is not None
    last = result.marks[-1]
    assert last.echoed_ms is not None and not last.cleared
    assert result.closed_ms >= last.echoed_ms
    assert not result.clears
    played_ms = result.media_bytes_received / 8
    assert played_ms >= len(load_clip("agent_goodbye")) / 8 * 0.9
    tool_msgs = [m for m in out.chat_messages(1) if m["role"] == "tool"]
    assert tool_msgs, "the hang_up tool's output never reached the LLM"


async def test_dtmf_digits_reach_the_llm_and_the_agent_answers() -> None:
    out = await cascade_call([], dtmf=[(300, "4"), (420, "2"), (540, "#")], duration_ms=3000)
    texts = [m["content"] for m in out.chat_messages(0) if m["role"] == "user"]
    assert any("pressed 4" in t for t in texts) and any("pressed 2" in t for t in texts)
    assert out.lines("agent") and out.lines("agent")[0].startswith("Of course.")
    assert out.result.media_bytes_received > 0


@pytest.mark.parametrize("stage", ["llm", "tts"])
async def test_a_stage_failing_mid_stream_gives_the_caller_an_apology_not_silence(
    stage: str,
) -> None:
    rules = None
    before = None
    if stage == "llm":
        rules = [ChatRule("opening hours",
                          {"text": clip_text("agent_reply"), "fail_after_words": 4})]
    else:
        def before(standins: CascadeStandIns) -> None:
            standins.rest.fail_next_speech(after_bytes=9600)  # 200 ms of PCM16 24 kHz
    out = await cascade_call([(200, QUESTION)], duration_ms=9000, rules=rules, before=before)
    agent = out.lines("agent")
    assert len(agent) == 1 and agent[0].endswith(APOLOGY_TEXT)
    assert out.record.responses[0].status == "failed"
    # The apology's audio (5 s) reached the caller's ear, not just the broken reply.
    assert out.result.media_bytes_received / 8 > 4000
    errors = out.services.metrics.model_errors.labels(f"{stage}_failed")
    assert errors._value.get() == 1  # noqa: SLF001 - prometheus-client has no public getter
    # The call went on: the bridge did not hang up on a failed stage.
    assert out.result.closed_by == "caller"


async def test_the_stored_line_of_an_interrupted_turn_is_the_heard_text_the_llm_gets() -> None:
    # The reply's second piece ("Monday to Friday, ...") is playing at the barge-in.
    # The cascade sends a piece's whole text as its audio starts, so the core's own
    # heard-share cut of the item's text would claim words the caller never heard;
    # the backend's answer to the truncate (the words it kept) must be what is stored.
    out = await cascade_call([(200, QUESTION), (7400, INTERRUPT)], duration_ms=10000)
    full = clip_text("agent_reply")
    first_piece = full[: full.index("evening,") + len("evening,")]
    later = out.chat_messages(1)
    assert later[-1] == {"role": "user", "content": clip_text("caller_interrupt")}
    (assistant,) = [m for m in later if m["role"] == "assistant"]
    kept = assistant["content"]
    # Cut inside the second piece: all of the first, some but not all of the second.
    assert kept.startswith(first_piece + " ") and len(kept) > len(first_piece) + 1, kept
    assert "Saturdays" not in kept, kept
    line = [t for t in out.record.turns if t.speaker == "agent"][0]
    assert line.interrupted
    assert line.text == kept
    # Nothing from after the cut: the line is a prefix of the reply, ending where it did.
    assert full.startswith(line.text) and full[len(line.text)] == " "
    # The caller's own playback agrees: the stored line is no longer than what played.
    clear = out.result.clears[0]
    heard_ms = (clear.played_position - out.result.media[0].position) / 8
    assert len(line.text) <= heard_ms / 60 + 1, (heard_ms, line.text)
