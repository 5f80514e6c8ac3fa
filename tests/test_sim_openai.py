"""The OpenAI REST and transcription-session stand-ins, through the real SDK / websockets."""

from __future__ import annotations

import base64
import json

import openai
import pytest
from websockets.asyncio.client import connect

from bridge.cascade.stt_rest import wav_bytes
from bridge.devtools.sim.clips import clip_text, load_clip
from bridge.devtools.sim.openai_rest import OpenAIRestSimulator, speech_for
from bridge.devtools.sim.realtime_transcription import TranscriptionSimulator

pytestmark = pytest.mark.e2e


async def test_rest_stand_in_checks_the_key_and_speaks_the_sdk_wire_format():
    async with OpenAIRestSimulator(api_key="sk-right", chat_first_token_ms=0,
                                   speech_first_byte_ms=0, transcription_latency_ms=0) as sim:
        wrong = openai.AsyncOpenAI(api_key="sk-wrong", base_url=sim.base_url, max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            await wrong.chat.completions.create(model="m", stream=True,
                                                messages=[{"role": "user", "content": "hi"}])
        assert sim.unauthorised == 1
        client = openai.AsyncOpenAI(api_key="sk-right", base_url=sim.base_url, max_retries=0)
        text = ""
        async for chunk in await client.chat.completions.create(
                model="m", stream=True, messages=[{"role": "user", "content": "opening hours?"}]):
            text += "".join(c.delta.content or "" for c in chunk.choices)
        assert text == clip_text("agent_reply")
        text = ""
        async for chunk in await client.chat.completions.create(
                model="m", stream=True, messages=[
                    {"role": "user", "content": "bye"},
                    {"role": "system", "content": "Say a brief goodbye to the caller now."}]):
            text += "".join(c.delta.content or "" for c in chunk.choices)
        assert text == clip_text("agent_goodbye")  # the core's goodbye instructions
        async with client.audio.speech.with_streaming_response.create(
                model="tts-1", voice="alloy", input="Of course.", response_format="pcm") as r:
            pcm = b"".join([b async for b in r.iter_bytes()])
        assert len(pcm) == len(speech_for("Of course.")) * 6  # 8 kHz mu-law -> 24 kHz PCM16
        result = await client.audio.transcriptions.create(
            model="gpt-4o-mini-transcribe",
            file=("u.wav", wav_bytes(b"\xff" * 4000 + load_clip("caller_thanks")), "audio/wav"))
        assert result.text == clip_text("caller_thanks")
        silence = await client.audio.transcriptions.create(
            model="whisper-1", file=("u.wav", wav_bytes(b"\xff" * 8000), "audio/wav"))
        assert silence.text == "(caller spoke 1.0 s)"  # no clip in silence


def test_speech_for_unknown_text_lasts_as_long_as_saying_it():
    assert len(speech_for("Zebras juggle quietly.")) == int(22 * 65 * 8)
    assert speech_for("Goodbye!") == load_clip("agent_goodbye")[-len(speech_for("Goodbye!")):]


async def test_transcription_session_speaks_the_ga_and_beta_update_shapes():
    async with TranscriptionSimulator(transcription_latency_ms=10) as sim:
        async with connect(sim.url + "?intent=transcription") as ws:
            created = json.loads(await ws.recv())
            assert created["type"] == "session.created"
            assert created["session"]["type"] == "transcription"
            await ws.send(json.dumps({"type": "transcription_session.update", "session": {
                "input_audio_format": "g711_ulaw",
                "input_audio_transcription": {"model": "gpt-4o-transcribe"},
                "turn_detection": {"type": "server_vad", "silence_duration_ms": 300}}}))
            updated = json.loads(await ws.recv())
            assert updated["type"] == "transcription_session.updated"
            audio = load_clip("caller_question") + b"\xff" * 4000
            for i in range(0, len(audio), 800):
                await ws.send(json.dumps({"type": "input_audio_buffer.append",
                                          "audio": base64.b64encode(audio[i:i + 800]).decode()}))
            kinds: list[str] = []
            while "conversation.item.input_audio_transcription.completed" not in kinds:
                event = json.loads(await ws.recv())
                kinds.append(event["type"])
            assert event["transcript"] == clip_text("caller_question")
            assert kinds[:3] == ["input_audio_buffer.speech_started",
                                 "input_audio_buffer.speech_stopped",
                                 "input_audio_buffer.committed"]
            assert "conversation.item.input_audio_transcription.delta" in kinds
        with pytest.raises(Exception, match="400"):
            async with connect(sim.url):  # not a transcription session
                pass
