"""``python -m bridge demo --backend cascade``: the demo call through the cascade.

The same call as ``bridge.devtools.sim.demo`` (greeting, question, barge-in over the long
answer, thanks, goodbye and hang-up), but the bridge runs with
``BRIDGE_BACKEND=cascade``: caller audio goes to the transcription-session
stand-in, the transcript to the chat-completions stand-in (through the real
``openai`` SDK), and each sentence to the speech stand-in, whose PCM 24 kHz the
bridge resamples to μ-law.  The stand-ins have realistic first-byte latencies
(STT 150 ms, LLM 300 ms, TTS 150 ms) so the printed breakdown shows the pipelining.
The timeline is built from what the caller observed on the wire, the requests the
stand-ins received, and the call record the bridge stored.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path
from typing import Any

from bridge.devtools.sim.cascade_standins import CascadeStandIns
from bridge.devtools.sim.clips import clip_text
from bridge.devtools.sim.demo import (
    CALL_LIMIT_MS,
    CALLER_SCRIPT,
    GREETING,
    Moment,
    _clip_ms,
    _short,
    verdict,
)
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.twilio_caller import CallResult
from bridge.store.cli import format_cascade
from bridge.store.records import CallRecord

KEY = "sk-demo-local-only"
#: Nothing listens here: a cascade call never needs a Realtime server.
NO_REALTIME = "ws://127.0.0.1:9/v1/realtime"


def cascade_timeline(
    result: CallResult, record: CallRecord, standins: CascadeStandIns
) -> tuple[list[Moment], dict[str, Any]]:
    """One call-relative timeline from the caller's wire, the stand-ins and the record."""
    assert result.t0 is not None
    t0 = result.t0
    moments: list[Moment] = []
    facts: dict[str, Any] = {"barge_ins": [], "history_cuts": []}

    def rel(t: float) -> float:
        return (t - t0) * 1000

    for at, clip in CALLER_SCRIPT:
        if result.frames_sent * 20 > at:
            moments.append(Moment(at, "caller", f'says "{clip_text(clip)}" ({_clip_ms(clip)} ms)'))
    for turn in record.turns:
        if turn.speaker == "caller" and turn.end_ms is not None:
            moments.append(Moment(turn.end_ms, "stt", f'end of speech; transcript "{turn.text}"'))
    for request in standins.rest.chat_requests:
        messages = request.body.get("messages", [])
        last = messages[-1] if messages else {}
        what = f"chat completion requested (last message: {last.get('role')})"
        moments.append(Moment(rel(request.at), "llm", what))
    # When the caller first heard each agent item: its first mark's media, in play order.
    first_mark: dict[str, Any] = {}
    for mark in result.marks:
        item = mark.name.split(":")[1] if mark.name.count(":") >= 2 else mark.name
        first_mark.setdefault(item, mark)
    agent_lines = [t for t in record.turns if t.speaker == "agent"]
    item_start: dict[str, int] = {}
    for index, (item, mark) in enumerate(first_mark.items()):
        media = next((m for m in result.media if m.position + m.size == mark.position), None)
        item_start[item] = media.position if media else mark.position
        received = media.at_ms if media else mark.queued_ms
        words = agent_lines[index].text if index < len(agent_lines) else ""
        flag = " [interrupted]" if index < len(agent_lines) and agent_lines[index].interrupted \
            else ""
        moments.append(Moment(received, "agent", f'speaks "{_short(words)}"{flag}'))
    for clear in result.clears:
        playing = max(
            (i for i, s in item_start.items() if s <= clear.played_position),
            key=lambda i: item_start[i],
            default=None,
        )
        heard_ms = (clear.played_position - item_start.get(playing or "", 0)) / 8
        moments.append(Moment(
            clear.at_ms, "bridge",
            f"barge-in: Twilio clear ({clear.discarded_bytes / 8:.0f} ms of queued agent audio "
            f"discarded; caller heard {heard_ms:.0f} ms), LLM and TTS streams cancelled",
        ))
        facts["barge_ins"].append({"at_ms": clear.at_ms, "heard_ms": heard_ms, "item": playing})
        later = [r for r in standins.rest.chat_requests if rel(r.at) > clear.at_ms]
        if later:
            said = [m for m in later[0].body["messages"] if m["role"] == "assistant"]
            kept = said[-1].get("content") if said else None
            facts["history_cuts"].append(kept)
            moments.append(Moment(
                rel(later[0].at) - 0.1, "bridge",
                f'history for the LLM keeps only the heard words: "{_short(kept or "")}"',
            ))
    if result.closed_ms is not None:
        by = "the bridge (agent hung up)" if result.closed_by == "server" else result.closed_by
        moments.append(Moment(result.closed_ms, "call", f"ended by {by}"))
    moments.sort(key=lambda m: m.at_ms)
    return moments, facts


async def run_cascade_demo(
    wav_path: str = "demo-call.wav", verbose: bool = False, stt_mode: str = "realtime"
) -> int:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    print(
        "Demo call: Twilio caller simulator -> bridge (BRIDGE_BACKEND=cascade) -> "
        f"STT ({stt_mode} transcription stand-in) -> chat LLM stand-in -> TTS stand-in.\n"
        "Stand-in latencies: STT 150 ms, LLM first token 300 ms, TTS first audio 150 ms. "
        "Takes about 30 s.\n"
    )
    async with CascadeStandIns(KEY, stt_mode=stt_mode) as standins:
        env = {**standins.env(), "AGENT_GREETING": GREETING}
        async with LocalBridge(NO_REALTIME, env=env) as bridge:
            caller = await bridge.place_call(script=CALLER_SCRIPT, duration_ms=CALL_LIMIT_MS)
            started = time.monotonic()
            result = await caller.run()
            elapsed = time.monotonic() - started
            store = bridge.services.store
            assert store is not None
            record = None
            for _ in range(40):
                await store.flush()
                record = await store.get_call(result.call_sid)
                if record is not None and record.end_reason is not None:
                    break
                time.sleep(0.05)
            stt_open = sum(1 for c in standins.stt.connections if not c.closed)
    if record is None:
        print("DEMO FAILED: the call was not recorded", file=sys.stderr)
        return 1
    moments, facts = cascade_timeline(result, record, standins)
    print("  time    who     what")
    for moment in moments:
        print(f"{moment.at_ms / 1000:7.2f}s  {moment.who:<6}  {moment.what}")
    print()
    print("Transcript as stored (agent lines cut to what the caller heard):")
    for turn in record.turns:
        flag = "  [interrupted]" if turn.interrupted else ""
        start = turn.start_ms / 1000 if turn.start_ms is not None else 0.0
        print(f"  {start:6.2f}s {turn.speaker:<6} {turn.text}{flag}")
    print()
    for line in format_cascade(record):
        print(line)
    print()
    path = Path(wav_path)
    result.save_wav(path, stereo=True)
    print(f"Caller audio written to {path} (left: what the caller heard, right: caller).")
    problems = []
    if not result.clears:
        problems.append("no barge-in happened")
    if not facts["history_cuts"] or not facts["history_cuts"][0]:
        problems.append("the history was not cut to the heard words")
    if stt_open:
        problems.append(f"{stt_open} transcription session(s) left open")
    return verdict(
        result,
        problems,
        f"call lasted {elapsed:.1f} s; barge-in, history cut and hang-up all worked "
        "through the cascade.",
    )
