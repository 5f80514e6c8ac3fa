"""The cascade wired into the product: profiles, settings, routing per call, tapes."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from bridge.agents import ProfileError, load_agents
from bridge.config import AgentConfig, ConfigError, load_settings
from bridge.core.config import CallConfig
from bridge.devtools.sim.cascade_standins import CascadeStandIns
from bridge.devtools.sim.clips import clip_text, load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.tapes.replay import replay
from bridge.realtime.dialects import dialect_for
from bridge.tapes.format import config_from_json, config_to_json, load_tape

KEY = "sk-cascade-wiring-secret-0123456789"
TAPE = Path(__file__).parent / "tapes" / "cascade_call.jsonl.gz"
BASE = AgentConfig()


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "agents.toml"
    path.write_text(text)
    return str(path)


def test_a_profile_chooses_the_cascade_and_overrides_its_stages(tmp_path: Path) -> None:
    directory = load_agents(write(tmp_path, (
        "[agents.sales]\n"
        'voice = "coral"\n'
        "\n"
        "[agents.support]\n"
        'backend = "cascade"\n'
        "[agents.support.cascade]\n"
        'llm_model = "gpt-4o-mini"\n'
        'llm_base_url = "http://llm.internal:8000/v1"\n'
        'stt_mode = "rest"\n'
        "\n"
        "[routes]\n"
        'default = "sales"\n'
    )), BASE)
    assert directory.agents["sales"].backend == "realtime"
    support = directory.agents["support"]
    assert support.backend == "cascade"
    assert dict(support.cascade) == {
        "llm_model": "gpt-4o-mini", "llm_base_url": "http://llm.internal:8000/v1",
        "stt_mode": "rest",
    }
    from bridge.cascade.settings import CascadeSettings

    stages = CascadeSettings().with_overrides(support.cascade)
    assert stages.llm.model == "gpt-4o-mini"
    assert stages.llm.base_url == "http://llm.internal:8000/v1"
    assert (stages.stt.mode, stages.stt.model) == ("rest", "whisper-1")  # rest's default
    assert stages.tts == CascadeSettings().tts


def test_bad_backend_and_cascade_keys_name_the_file_line_and_key(tmp_path: Path) -> None:
    path = write(tmp_path, (
        "[agents.support]\n"
        'backend = "casade"\n'
        "[agents.support.cascade]\n"
        'llm_modle = "x"\n'
        'stt_mode = "batch"\n'
        'tts_base_url = "ftp://tts"\n'
    ))
    with pytest.raises(ProfileError) as caught:
        load_agents(path, BASE)
    problems = [p.removeprefix(path) for p in caught.value.problems]
    assert problems[0] == ":2: agents.support.backend: 'casade' is not one of: realtime, cascade"
    assert problems[1].startswith(":4: agents.support.cascade.llm_modle: unknown key "
                                  "(expected one of: stt_mode, stt_model")
    assert problems[2] == ":5: agents.support.cascade.stt_mode: 'batch' is not one of: " \
                          "realtime, rest"
    assert problems[3] == ":6: agents.support.cascade.tts_base_url: 'ftp://tts' is not an " \
                          "http(s):// or ws(s):// URL"
    assert len(problems) == 4


def test_bridge_backend_and_cascade_settings_come_from_the_environment() -> None:
    settings = load_settings({"BRIDGE_BACKEND": "cascade", "CASCADE_LLM_MODEL": "gpt-4o-mini",
                              "OPENAI_API_KEY": KEY})
    assert settings.agent.backend == "cascade"
    assert settings.cascade is not None and settings.cascade.llm.model == "gpt-4o-mini"
    assert load_settings({}).agent.backend == "realtime"
    with pytest.raises(ConfigError) as caught:
        load_settings({"BRIDGE_BACKEND": "cascade", "BRIDGE_AUDIO": "pcm16",
                       "CASCADE_STT_MODE": "batch", "OPENAI_API_KEY": KEY})
    text = "\n".join(caught.value.problems)
    assert "CASCADE_STT_MODE='batch' must be realtime or rest" in text
    assert "BRIDGE_BACKEND=cascade needs BRIDGE_AUDIO=passthrough" in text
    assert KEY not in str(caught.value)


@pytest.mark.e2e
async def test_one_changed_line_moves_a_number_from_realtime_to_the_cascade(
    tmp_path: Path,
) -> None:
    """Two numbers, one process: the profile's ``backend`` line decides which backend
    answers each call, and only the Realtime call is pre-connected by the webhook."""
    agents = write(tmp_path, (
        "[agents.sales]\n"
        'instructions = "You sell kettles."\n'
        "\n"
        "[agents.support]\n"
        'instructions = "You support kettles."\n'
        'backend = "cascade"\n'
        "\n"
        "[routes]\n"
        '"+15550000001" = "sales"\n'
        '"+15550000002" = "support"\n'
        'default = "sales"\n'
    ))
    sim = RealtimeSimulator(script=["agent_short"], api_key=KEY)
    async with sim, CascadeStandIns(KEY, chat_first_token_ms=60.0, speech_first_byte_ms=60.0,
                                    transcription_latency_ms=60.0) as standins:
        env = {**standins.env(backend_env=False), "BRIDGE_AGENTS_FILE": agents}
        async with LocalBridge(sim.url, env=env) as bridge:
            script = [(200, load_clip("caller_question")[:8000])]
            realtime_call = await bridge.place_call(to="+15550000001", script=script,
                                                    duration_ms=3500)
            await realtime_call.run()
            cascade_call = await bridge.place_call(to="+15550000002", script=script,
                                                   duration_ms=3500)
            cascade = await cascade_call.run()
            stats = dict(bridge.services.connector.stats)
            store = bridge.services.store
            assert store is not None
            await store.flush()
            record = await store.get_call(cascade.call_sid)
    assert len(sim.connections) == 1  # the sales call only
    assert stats.get("used") == 1  # its socket was the webhook's pre-opened one
    assert len(standins.stt.connections) == 1  # the support call only
    system = standins.rest.chat_requests[0].body["messages"][0]
    assert system["role"] == "system" and "You support kettles." in system["content"]
    assert record is not None and record.agent == "support"
    assert [t.text for t in record.turns if t.speaker == "caller"] == [
        clip_text("caller_question")]
    assert record.responses and all(r.backend == "cascade" for r in record.responses)


def test_agent_stage_overrides_survive_a_tape_header_round_trip() -> None:
    agent = AgentConfig(name="support", backend="cascade",
                        cascade=(("llm_model", "gpt-4o-mini"), ("tts_voice", "alloy")))
    config = CallConfig(agent=agent, audio_mode="passthrough", model="gpt-realtime")
    header = json.loads(json.dumps(config_to_json(config, dialect_for("ga", "wss://x"))))
    again = config_from_json(header)
    assert again == config
    assert hash(again.agent) == hash(agent)


def test_the_cascade_tape_holds_typed_cascade_events_and_replays_the_same_twice() -> None:
    tape = load_tape(TAPE)
    assert tape.complete
    events = [r for r in tape.inputs if r.get("kind") == "event"]
    kinds = {r["type"] for r in events}
    assert {"SessionConfigured", "SpeechStarted", "CallerTranscribed", "AgentAudio",
            "ResponseFinished", "ToolCallRequested"} <= kinds
    finished = [r["data"] for r in events if r["type"] == "ResponseFinished"]
    assert all(f["usage"]["backend"] == "cascade" for f in finished)
    assert any(f["status"] == "cancelled" for f in finished)
    assert all(isinstance(f["usage"]["cascade_latency_ms"], dict) for f in finished)
    outputs = [r.get("kind") for r in tape.outputs]
    assert "clear" in outputs and "conversation.item.truncate" in outputs
    # Each truncated turn's line ends up (last write under its seq) as the words the
    # cascade kept for the LLM, which the tape holds as AgentItemTruncated.
    kept = {r["data"]["item_id"]: r["data"]["text"] for r in events
            if r["type"] == "AgentItemTruncated"}
    assert kept
    lines: dict[int, dict[str, object]] = {}
    for r in tape.outputs:
        if r.get("kind") == "transcript":
            lines[r["data"]["seq"]] = r["data"]
    stored = {line["item_id"]: line["text"] for line in lines.values() if line["interrupted"]}
    assert stored == kept
    assert outputs[-1] == "end_call"
    first, second = replay(TAPE), replay(TAPE)
    assert first.ok, first.report()
    assert first.outputs == second.outputs
    # A replay that ignored the usage dict would not notice a wrong latency breakdown.
    usage = [o for o in first.outputs if o.get("kind") == "usage"]
    assert usage and all("cascade_latency_ms" in o["data"]["usage"] for o in usage)


def test_the_cascade_tape_holds_no_secret() -> None:
    text = gzip.decompress(TAPE.read_bytes()).decode()
    from bridge.devtools.tapes.author import FAKE_SECRETS

    assert not any(secret in text for secret in FAKE_SECRETS)


CASCADE_USAGE = {
    "backend": "cascade", "stt_model": "gpt-4o-mini-transcribe", "stt_audio_seconds": 6.0,
    "llm_model": "gpt-4.1-mini", "llm_prompt_tokens": 1000, "llm_completion_tokens": 60,
    "llm_cached_tokens": 200, "tts_model": "gpt-4o-mini-tts", "tts_characters": 110,
    "tts_audio_seconds": 7.5,
    "cascade_latency_ms": {"speech_stopped_to_transcript": 151, "transcript_to_first_token": 302,
                           "first_token_to_first_tts_audio": 170,
                           "first_tts_audio_to_first_audio_out": 0,
                           "speech_stopped_to_first_audio_out": 623,
                           "response_started_to_first_audio_out": "junk"},
}


async def test_cascade_usage_is_stored_with_stage_costs_and_latency(tmp_path: Path) -> None:
    from bridge.store import open_store
    from bridge.store.cli import format_call
    from bridge.store.pricing import Prices, cascade_cost, realtime_equivalent

    store = open_store(f"sqlite:///{tmp_path}/calls.db", prices=Prices())
    await store.start()
    try:
        store.record_call_started("CA-cascade", agent="support")
        store.record_usage("CA-cascade", "resp_1", CASCADE_USAGE, status="completed")
        store.record_usage("CA-cascade", "resp_2", {"total_tokens": 10, "input_tokens": 10},
                           status="completed")  # a Realtime response in the same call
        await store.flush()
        record = await store.get_call("CA-cascade")
    finally:
        await store.close()
    assert record is not None
    cascade, realtime = record.responses
    expected = cascade_cost(CASCADE_USAGE)
    assert cascade.backend == "cascade" and cascade.stages is not None
    assert cascade.cost_usd == pytest.approx(expected.total)
    assert cascade.stages.tts_usd == pytest.approx(expected.tts)
    assert cascade.stages.realtime_equivalent_usd == pytest.approx(
        realtime_equivalent(CASCADE_USAGE))
    assert cascade.tokens.input_text_tokens == 1000 and cascade.tokens.input_cached_tokens == 200
    assert cascade.latency_ms["speech_stopped_to_first_audio_out"] == 623
    assert cascade.latency_ms["response_started_to_first_audio_out"] is None  # junk dropped
    assert realtime.backend is None and realtime.stages is None and not realtime.latency_ms
    assert record.totals.cascade_responses == 1
    shown = format_call(record)
    assert "Cascade backend (1 responses)" in shown
    assert f"on Realtime ≈ ${realtime_equivalent(CASCADE_USAGE):.4f}" in shown
    row = next(line for line in shown.splitlines() if line.strip().startswith("resp_1"))
    assert row.split()[1:] == ["151", "302", "170", "0", "623", "-"]
