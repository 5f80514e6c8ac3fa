"""Cascade pipelining: end of caller speech -> first agent audio, against the stand-ins.

``python -m bridge.devtools.bench.cascade`` runs a few turns through a real cascade
connection (transcription session, chat completions and speech stand-ins over
127.0.0.1) with the stand-ins' latencies set to STT 150 ms, LLM first token 300 ms
and TTS first audio 150 ms, and prints the measured turn latency next to their
sum.  A pipelined cascade lands within a few tens of milliseconds of the sum;
one that waited for whole sentences (or whole replies) would add the writing time
of a sentence (or the whole reply and its synthesis).

The clock: "end of speech" is when the STT's ``speech_stopped`` reaches the
cascade, "first audio" when the first ``AgentAudio`` leaves it for the core.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

from bridge.cascade.backend import CascadeBackend
from bridge.cascade.settings import CascadeSettings, LlmSettings, SttSettings, TtsSettings
from bridge.config import AgentConfig
from bridge.core.actions import AppendAudio, ConfigureSession
from bridge.core.events import AgentAudio, ResponseFinished, SpeechStopped
from bridge.core.stream import StreamInfo
from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.openai_rest import OpenAIRestSimulator
from bridge.devtools.sim.realtime_transcription import TranscriptionSimulator

__all__ = ["PipelineResult", "measure_pipeline"]


@dataclass
class PipelineResult:
    stt_ms: float
    llm_first_token_ms: float
    tts_first_audio_ms: float
    turns_ms: list[float] = field(default_factory=list)
    breakdowns: list[dict[str, Any]] = field(default_factory=list)

    @property
    def stage_sum_ms(self) -> float:
        return self.stt_ms + self.llm_first_token_ms + self.tts_first_audio_ms

    @property
    def warm_ms(self) -> list[float]:
        """Turns after the first: the first one also opens the HTTP connections."""
        return self.turns_ms[1:] or self.turns_ms

    @property
    def median_ms(self) -> float:
        return statistics.median(self.warm_ms)

    def summary(self) -> str:
        over = self.median_ms - self.stage_sum_ms
        return (f"cascade turn latency (speech stopped -> first agent audio): median "
                f"{self.median_ms:.0f} ms over {len(self.warm_ms)} warm turns "
                f"({', '.join(f'{t:.0f}' for t in self.warm_ms)}; first turn, opening the "
                f"HTTP connections: {self.turns_ms[0]:.0f}); stage latencies sum "
                f"{self.stage_sum_ms:.0f} ms (STT {self.stt_ms:.0f} + LLM first token "
                f"{self.llm_first_token_ms:.0f} + TTS first audio "
                f"{self.tts_first_audio_ms:.0f}); overhead {over:+.0f} ms")


async def measure_pipeline(turns: int = 3, *, stt_ms: float = 150.0,
                           llm_first_token_ms: float = 300.0,
                           tts_first_audio_ms: float = 150.0,
                           stt_mode: str = "realtime") -> PipelineResult:
    """Run ``turns`` caller questions through one cascade call; time each reply.

    ``stt_mode="rest"`` uses the local endpointer and per-utterance transcription, with
    the same latency set on the transcription endpoint."""
    result = PipelineResult(stt_ms, llm_first_token_ms, tts_first_audio_ms)
    async with OpenAIRestSimulator(chat_first_token_ms=llm_first_token_ms,
                                   speech_first_byte_ms=tts_first_audio_ms,
                                   transcription_latency_ms=stt_ms) as rest, \
            TranscriptionSimulator(transcription_latency_ms=stt_ms) as stt:
        settings = CascadeSettings(
            stt=SttSettings(mode="rest" if stt_mode == "rest" else "realtime",
                            model="whisper-1" if stt_mode == "rest" else
                            "gpt-4o-mini-transcribe",
                            realtime_url=stt.url, base_url=rest.base_url),
            llm=LlmSettings(base_url=rest.base_url),
            tts=TtsSettings(base_url=rest.base_url))
        backend = CascadeBackend(settings)
        conn = await backend.connect(StreamInfo(stream_sid="MZbench", call_sid="CAbench"))
        events: asyncio.Queue[tuple[float, Any]] = asyncio.Queue()

        async def collect() -> None:
            async for event in conn.events():
                events.put_nowait((time.monotonic(), event))

        collector = asyncio.create_task(collect())
        try:
            conn.send(ConfigureSession(agent=AgentConfig(), audio_mode="passthrough",
                                       model="cascade"))
            audio = load_clip("caller_question") + b"\xff" * 6400
            for _ in range(turns):
                for i in range(0, len(audio), 160):
                    conn.send(AppendAudio(base64.b64encode(audio[i:i + 160]).decode()))
                stopped_at: float | None = None
                first_audio_at: float | None = None
                while True:
                    at, event = await asyncio.wait_for(events.get(), 30)
                    if isinstance(event, SpeechStopped):
                        stopped_at = at
                    elif isinstance(event, AgentAudio) and first_audio_at is None:
                        first_audio_at = at
                    elif isinstance(event, ResponseFinished):
                        result.breakdowns.append(event.usage.get("cascade_latency_ms", {}))
                        break
                if stopped_at is None or first_audio_at is None:
                    raise RuntimeError("a turn produced no speech stop or no audio")
                result.turns_ms.append((first_audio_at - stopped_at) * 1000)
        finally:
            collector.cancel()
            await conn.close()
            await backend.aclose()
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=5)
    parser.add_argument("--stt-ms", type=float, default=150.0)
    parser.add_argument("--llm-ms", type=float, default=300.0)
    parser.add_argument("--tts-ms", type=float, default=150.0)
    parser.add_argument("--stt", choices=("realtime", "rest"), default="realtime")
    parser.add_argument("--json", action="store_true", help="also print the breakdowns")
    args = parser.parse_args(argv)
    result = asyncio.run(measure_pipeline(args.turns, stt_ms=args.stt_ms,
                                          llm_first_token_ms=args.llm_ms,
                                          tts_first_audio_ms=args.tts_ms,
                                          stt_mode=args.stt))
    print(result.summary())
    if args.json:
        print(json.dumps(result.breakdowns, indent=2))


if __name__ == "__main__":
    main()
