"""Cascade latency per stage, measured on whole calls through the real bridge.

``python -m bridge.devtools.bench.cascade_call`` places calls through ``LocalBridge``
(webhook, stream token, relay, core, store) with ``BRIDGE_BACKEND=cascade``
against the stand-ins (STT 150 ms, LLM first token 300 ms, TTS first audio
150 ms by default).  The Twilio caller simulator asks a question every few
seconds.  It prints the medians of the per-turn breakdown the bridge stored on the
call record, plus the caller-side figure: end of the caller's audio → first agent
media frame received by the caller (what a person would measure on the phone,
VAD silence included).

Where ``bridge.devtools.bench.cascade`` measures one cascade connection on its own, this
includes the whole bridge: the relay, the core's ledger and marks, and the Twilio
socket.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
from typing import Any

from bridge.devtools.sim.cascade_standins import CascadeStandIns
from bridge.devtools.sim.clips import clip_text, load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.openai_rest import ChatRule
from bridge.store.records import LATENCY_SPANS

__all__ = ["measure_calls"]

KEY = "sk-bench-local-only"
QUESTION_MS = len(load_clip("caller_question")) // 8
GAP_MS = 5000  # question, VAD silence, a 3.2 s answer heard to the end


async def measure_calls(calls: int = 2, turns: int = 3, stt_ms: float = 150.0,
                        llm_ms: float = 300.0, tts_ms: float = 150.0,
                        stt_mode: str = "realtime") -> dict[str, Any]:
    spans: dict[str, list[int]] = {s: [] for s in LATENCY_SPANS}
    caller_side: list[float] = []
    rules = [ChatRule("", clip_text("agent_short"))]
    async with CascadeStandIns(KEY, rules=rules, stt_mode=stt_mode,
                               transcription_latency_ms=stt_ms, chat_first_token_ms=llm_ms,
                               speech_first_byte_ms=tts_ms) as standins:
        async with LocalBridge("ws://127.0.0.1:9/v1/realtime", env=standins.env()) as bridge:
            store = bridge.services.store
            assert store is not None
            for _ in range(calls):
                script = [(200 + i * GAP_MS, "caller_question") for i in range(turns)]
                caller = await bridge.place_call(script=script,
                                                 duration_ms=200 + turns * GAP_MS)
                result = await caller.run()
                for at, _clip in script:
                    spoken_end = at + QUESTION_MS
                    first = next((m.at_ms for m in result.media if m.at_ms > spoken_end), None)
                    if first is not None:
                        caller_side.append(first - spoken_end)
                await store.flush()
                record = await store.get_call(result.call_sid)
                assert record is not None
                for response in record.responses:
                    for span in LATENCY_SPANS:
                        value = response.latency_ms.get(span)
                        if value is not None:
                            spans[span].append(value)
    return {
        "stage_sum_ms": stt_ms + llm_ms + tts_ms,
        "turns": len(spans["speech_stopped_to_first_audio_out"]),
        "median_ms": {s: statistics.median(v) for s, v in spans.items() if v},
        "caller_end_of_audio_to_first_media_ms": (
            statistics.median(caller_side) if caller_side else None),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=2)
    parser.add_argument("--turns", type=int, default=3)
    parser.add_argument("--stt-ms", type=float, default=150.0)
    parser.add_argument("--llm-ms", type=float, default=300.0)
    parser.add_argument("--tts-ms", type=float, default=150.0)
    parser.add_argument("--stt", choices=("realtime", "rest"), default="realtime")
    args = parser.parse_args(argv)
    figures = asyncio.run(measure_calls(args.calls, args.turns, args.stt_ms, args.llm_ms,
                                        args.tts_ms, args.stt))
    print(f"cascade calls through the bridge: {figures['turns']} turns, STT {args.stt}, "
          f"stand-in stage sum {figures['stage_sum_ms']:.0f} ms")
    for span, value in figures["median_ms"].items():
        print(f"  {span:<40} {value:7.0f} ms (median)")
    side = figures["caller_end_of_audio_to_first_media_ms"]
    if side is not None:
        print(f"  {'caller: end of its audio -> first media':<40} {side:7.0f} ms (median, "
              "includes the VAD's silence window)")


if __name__ == "__main__":
    main()
