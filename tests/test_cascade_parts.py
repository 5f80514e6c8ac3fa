"""The cascade's pure parts: sentence splitting, heard-text mapping, history, tools, endpointing."""

from __future__ import annotations

import pytest

from bridge.cascade.endpointing import Endpointer
from bridge.cascade.heard import SpokenPiece, heard_text
from bridge.cascade.history import PENDING_OUTPUT, add_tool_output, chat_messages
from bridge.cascade.sentences import SentenceSplitter
from bridge.cascade.settings import CascadeSettings
from bridge.cascade.tool_format import chat_tools
from bridge.config import ConfigError
from bridge.devtools.sim.clips import clip_text, load_clip


def _split(text: str, step: int = 3) -> list[str]:
    splitter = SentenceSplitter()
    pieces: list[str] = []
    for i in range(0, len(text), step):
        pieces += splitter.feed(text[i:i + step])
    rest = splitter.flush()
    return pieces + ([rest] if rest else [])


def test_splitter_cuts_the_first_clause_then_whole_sentences():
    pieces = _split(clip_text("agent_reply"))
    assert pieces[0] == "Our store is open from nine in the morning until six in the evening,"
    assert pieces[1] == "Monday to Friday, and from ten until four on Saturdays."
    assert pieces[2].startswith("On Sundays and public holidays we are closed, but")
    assert " ".join(pieces) == clip_text("agent_reply")


def test_splitter_waits_for_whitespace_and_keeps_numbers_and_short_bits_together():
    assert _split("It costs 3.5 dollars. That is all.", 1) == ["It costs 3.5 dollars.",
                                                              "That is all."]
    assert _split("Hi. Yes, of course. Right away!", 2) == ["Hi. Yes, of course.",
                                                           "Right away!"]
    splitter = SentenceSplitter()
    assert splitter.feed("That is done.") == []  # could be "done.5": wait for the next char
    assert splitter.feed(" Next") == ["That is done."]
    assert _split("Quoted \"end.\" Then more words here.", 4) == ['Quoted "end."',
                                                                "Then more words here."]


def test_heard_text_whole_pieces_then_whole_words_of_the_cut_piece():
    pieces = [SpokenPiece("Our store is open from nine,", 0, 2000),
              SpokenPiece("Monday to Friday.", 2000, 1000)]
    assert heard_text(pieces, 0) == ""
    assert heard_text(pieces, 2000) == "Our store is open from nine,"
    assert heard_text(pieces, 5000) == "Our store is open from nine, Monday to Friday."
    # 50% of 28 chars = 14: "Our store is" (12) fits, "open" would end at 17
    assert heard_text(pieces, 1000) == "Our store is"
    # 50% of 17 chars = 8.5: "Monday" (6) fits, "to" would end at 9
    assert heard_text(pieces, 2500) == "Our store is open from nine, Monday"
    assert heard_text(pieces, 100) == ""  # not even the first word finished


def test_history_places_tool_outputs_after_their_call_and_fills_missing_ones():
    history: list[dict] = [
        {"role": "user", "content": "bye"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function",
             "function": {"name": "hang_up", "arguments": "{}"}}]},
        {"role": "user", "content": "wait, one more thing"},
    ]
    messages = chat_messages("be nice", history, "say it briefly")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "tool", "user",
                                             "system"]
    assert messages[3]["content"] == PENDING_OUTPUT
    add_tool_output(history, "call_1", '{"ok": true}')
    assert history[2] == {"role": "tool", "tool_call_id": "call_1", "content": '{"ok": true}'}
    assert [m["role"] for m in chat_messages("", history)] == ["user", "assistant", "tool",
                                                               "user"]


def test_realtime_tools_become_chat_tools():
    tools = chat_tools([
        {"type": "function", "name": "hang_up", "description": "End the call.",
         "parameters": {"type": "object", "properties": {}}},
        {"type": "mcp", "name": "elsewhere"},
        {"type": "function", "name": "ping"},
    ])
    assert tools == [
        {"type": "function", "function": {"name": "hang_up", "description": "End the call.",
                                          "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "ping", "parameters": {
            "type": "object", "properties": {}}}},
    ]


def test_endpointer_finds_a_clip_with_its_padding():
    clip = load_clip("caller_question")
    endpointer = Endpointer(silence_duration_ms=500, prefix_padding_ms=300)
    events = endpointer.feed(b"\xff" * 8000 + clip + b"\xff" * 8000)
    assert [e.kind for e in events] == ["started", "stopped"]
    start, stop = events
    assert 600 <= start.ms <= 1000  # 1 s of silence first, minus the padding
    speech_end_ms = 1000 + len(clip) / 8
    assert speech_end_ms < stop.ms <= speech_end_ms + 700
    assert clip in stop.audio  # the whole clip is uploaded, with padding around it
    assert len(stop.audio) / 8 == pytest.approx(stop.ms - start.ms, abs=25)


def test_settings_from_env_reads_each_stage_and_reports_every_problem():
    settings = CascadeSettings.from_env({
        "OPENAI_API_KEY": "sk-shared", "CASCADE_STT_MODE": "rest",
        "CASCADE_LLM_BASE_URL": "http://localhost:11434/v1", "CASCADE_LLM_MODEL": "llama3",
        "CASCADE_LLM_API_KEY": "sk-llm", "CASCADE_TTS_VOICE": "coral"})
    assert settings.stt.mode == "rest" and settings.stt.model == "whisper-1"
    assert settings.llm.base_url == "http://localhost:11434/v1"
    assert settings.llm.api_key is not None and settings.llm.api_key.reveal() == "sk-llm"
    assert settings.tts.api_key is not None and settings.tts.api_key.reveal() == "sk-shared"
    assert settings.tts.voice == "coral" and "sk-" not in repr(settings)
    with pytest.raises(ConfigError) as bad:
        CascadeSettings.from_env({"CASCADE_STT_MODE": "carrier-pigeon",
                                  "CASCADE_STT_VAD_THRESHOLD": "loud"})
    assert len(bad.value.problems) == 2


def test_cascade_cost_of_a_typical_minute_and_its_realtime_equivalent():
    from bridge.store.pricing import cascade_cost, realtime_equivalent

    # docs/cascade.md: one minute, 4 turns, caller 30 s, agent 30 s (~450 characters),
    # 4 requests of ~1000 prompt tokens and 60 completion tokens each
    minute = {"stt_model": "gpt-4o-mini-transcribe", "stt_audio_seconds": 30,
              "llm_model": "gpt-4.1-mini", "llm_prompt_tokens": 4000,
              "llm_completion_tokens": 240, "llm_cached_tokens": 0,
              "tts_model": "gpt-4o-mini-tts", "tts_characters": 450, "tts_audio_seconds": 30}
    cost = cascade_cost(minute)
    assert cost.known
    assert cost.stt == pytest.approx(0.0015)
    assert cost.llm == pytest.approx(0.001984)
    assert cost.tts == pytest.approx(0.00777)
    assert cost.total == pytest.approx(0.011254)
    assert realtime_equivalent(minute) == pytest.approx(0.06784)
    unknown = cascade_cost(minute | {"llm_model": "llama3"})
    assert not unknown.known and unknown.llm == 0
