"""``python -m bridge demo``: one whole phone call, locally, with no accounts or keys.

The real bridge app is served on 127.0.0.1 with its security switched on; a
simulated Realtime server plays the agent and a simulated Twilio caller plays
the phone.  The caller waits for the greeting, asks a question, talks over the
long answer (barge-in), says thanks, and the agent says goodbye and hangs up
through its ``hang_up`` tool.  The timeline printed afterwards is built from
what each side observed on the wire, so it shows the truth about what the
caller heard, not what the bridge believes.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.devtools.sim.clips import clip_text, load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.sim.twilio_caller import CallResult

GREETING = "Hello, thanks for calling Acme. How can I help you today?"
AGENT_SCRIPT: list[Any] = [
    "agent_greeting",
    "agent_reply",
    "agent_short",
    ["agent_goodbye", {"function_call": {"name": "hang_up", "arguments": "{}"}}],
]
CALLER_SCRIPT = [(5200, "caller_question"), (11000, "caller_interrupt"), (19000, "caller_thanks")]
CALL_LIMIT_MS = 32000


@dataclass(frozen=True)
class Moment:
    at_ms: float
    who: str
    what: str


def _clip_ms(name: str) -> int:
    return len(load_clip(name)) // 8


def build_timeline(
    result: CallResult, sim: RealtimeSimulator
) -> tuple[list[Moment], dict[str, Any]]:
    """Merge what the caller and the model observed into one call-relative timeline."""
    assert result.t0 is not None
    t0 = result.t0
    moments: list[Moment] = []
    facts: dict[str, Any] = {"barge_ins": []}

    def rel(t: float) -> float:
        return (t - t0) * 1000

    for previous, conn in zip(sim.connections, sim.connections[1:], strict=False):
        if previous.closed_by == "server" and previous.closed_at is not None:
            moments.append(
                Moment(
                    rel(previous.closed_at),
                    "model",
                    f"server closes the session (code {previous.close_code}): the call goes on",
                )
            )
            gap = (conn.opened_at - previous.closed_at) * 1000
            moments.append(
                Moment(
                    rel(conn.opened_at),
                    "bridge",
                    f"new model session {gap:.0f} ms later, seeded with "
                    f"{len(conn.items_created)} conversation items",
                )
            )
            facts.setdefault("reconnect_gaps_ms", []).append(gap)
    for conn in sim.connections:
        _connection_moments(conn, rel, moments)
    conn = sim.last_connection

    for at, clip in CALLER_SCRIPT:
        if result.frames_sent * 20 > at:
            moments.append(Moment(at, "caller", f'says "{clip_text(clip)}" ({_clip_ms(clip)} ms)'))
    # When the caller first heard each agent item: its first mark's position, in play order.
    first_mark: dict[str, Any] = {}
    for mark in result.marks:
        item = mark.name.split(":")[1] if mark.name.count(":") >= 2 else mark.name
        first_mark.setdefault(item, mark)
    texts = {}
    for connection in sim.connections:
        for record in connection.sent:
            if record.event["type"] in (
                "response.output_audio_transcript.done",
                "response.audio_transcript.done",
            ):
                texts[record.event["item_id"]] = record.event.get("transcript", "")
    item_start: dict[str, int] = {}
    for item, mark in first_mark.items():
        media = next((m for m in result.media if m.position + m.size == mark.position), None)
        start = media.position if media else mark.position
        item_start[item] = start
        received = media.at_ms if media else mark.queued_ms
        words = texts.get(item, "")
        moments.append(Moment(received, "agent", f'speaks "{_short(words)}"'))
    for clear in result.clears:
        # Which item was playing: the last item whose audio started before the played position.
        playing = max(
            (i for i, s in item_start.items() if s <= clear.played_position),
            key=lambda i: item_start[i],
            default=None,
        )
        heard_ms = (clear.played_position - item_start.get(playing or "", 0)) / 8
        moments.append(
            Moment(
                clear.at_ms,
                "bridge",
                f"barge-in: Twilio clear ({clear.discarded_bytes / 8:.0f} ms of queued agent "
                f"audio discarded; caller heard {heard_ms:.0f} ms of the reply)",
            )
        )
        facts["barge_ins"].append({"at_ms": clear.at_ms, "heard_ms": heard_ms, "item": playing})
    for trunc in sim.truncations:
        moments.append(
            Moment(
                rel(trunc.t),
                "bridge",
                f"conversation.item.truncate audio_end_ms={trunc.audio_end_ms} "
                f"(model had generated {trunc.item_audio_ms} ms) -> "
                + ("truncated" if trunc.ok else f"error {trunc.error_code}"),
            )
        )
        facts.setdefault("truncates", []).append(trunc)
    if result.closed_ms is not None:
        by = "the bridge (agent hung up)" if result.closed_by == "server" else result.closed_by
        moments.append(Moment(result.closed_ms, "call", f"ended by {by}"))
    # Turn latency: caller stops talking -> first agent audio reaches the caller.
    stops = [
        rel(r.t)
        for c in sim.connections
        for r in c.sent
        if r.event["type"] == "input_audio_buffer.speech_stopped"
    ]
    starts = sorted(m.at_ms for m in moments if m.who == "agent")
    latencies = []
    for stop in stops:
        after = [s for s in starts if s > stop]
        if after:
            latencies.append(after[0] - stop)
    facts["turn_latency_ms"] = latencies
    moments.sort(key=lambda m: m.at_ms)
    return moments, facts


def _connection_moments(conn: Any, rel: Any, moments: list[Moment]) -> None:
    """What one model session saw: its configuration, the caller's speech, tool calls."""
    updates = [r.t for r in conn.received if r.event.get("type") == "session.update"]
    if updates:
        moments.append(Moment(rel(updates[0]), "model", "session configured (session.update)"))
    for record in conn.sent:
        kind = record.event["type"]
        if kind == "input_audio_buffer.speech_started":
            moments.append(Moment(rel(record.t), "model", "hears the caller start talking (VAD)"))
        elif kind == "input_audio_buffer.speech_stopped":
            moments.append(Moment(rel(record.t), "model", "caller stopped talking"))
        elif kind == "response.function_call_arguments.done":
            moments.append(
                Moment(rel(record.t), "model", f"calls tool {record.event.get('name')}()")
            )


def _short(text: str, limit: int = 60) -> str:
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


async def run_demo(
    wav_path: str = "demo-call.wav",
    audio_mode: str = "passthrough",
    dialect: str = "ga",
    verbose: bool = False,
    drop_model_at_s: float | None = None,
) -> int:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )
    print(
        f"Demo call: Twilio caller simulator -> bridge -> Realtime simulator "
        f"({dialect.upper()} API, {audio_mode} audio). Takes about 25 s.\n"
    )
    faults = None
    if drop_model_at_s is not None:
        from bridge.devtools.sim.realtime_faults import FaultPlan

        faults = FaultPlan(close_after_ms=drop_model_at_s * 1000, connections={1})
        print(f"The model server will drop the session at {drop_model_at_s:g} s (code 1011).\n")
    sim = RealtimeSimulator(
        script=AGENT_SCRIPT,
        api_key="sk-demo-local-only",
        caller_transcripts=[clip_text(c) for _, c in CALLER_SCRIPT],
        faults=faults,
        continue_script=True,
    )
    async with sim:
        env = {
            "OPENAI_API_KEY": "sk-demo-local-only",
            "AGENT_GREETING": GREETING,
            "BRIDGE_AUDIO": audio_mode,
            "OPENAI_REALTIME_DIALECT": dialect,
        }
        async with LocalBridge(sim.url, env=env) as bridge:
            caller = await bridge.place_call(script=CALLER_SCRIPT, duration_ms=CALL_LIMIT_MS)
            started = time.monotonic()
            result = await caller.run()
            elapsed = time.monotonic() - started
            await asyncio.sleep(0.3)
            store = bridge.services.store
            record = None
            if store is not None:
                await store.flush()
                record = await store.get_call(result.call_sid)
            model_open = sim.open_connections
    moments, facts = build_timeline(result, sim)
    print("  time    who     what")
    for moment in moments:
        print(f"{moment.at_ms / 1000:7.2f}s  {moment.who:<6}  {moment.what}")
    print()
    if record is not None:
        print("Transcript as stored (agent lines cut to what the caller heard):")
        for turn in record.turns:
            flag = "  [interrupted]" if turn.interrupted else ""
            print(
                f"  {turn.start_ms / 1000 if turn.start_ms is not None else 0:6.2f}s "
                f"{turn.speaker:<6} {turn.text}{flag}"
            )
        print()
    path = Path(wav_path)
    result.save_wav(path, stereo=True)
    latencies = facts["turn_latency_ms"]
    print(f"Caller audio written to {path} (left: what the caller heard, right: caller).")
    if latencies:
        print(
            "Turn latency (caller stops talking -> agent audio arrives): "
            + ", ".join(f"{lat:.0f} ms" for lat in latencies)
        )
    for gap in facts.get("reconnect_gaps_ms", []):
        print(f"Model reconnect: a new session {gap:.0f} ms after the drop; the call went on.")
    problems = []
    if not result.clears or not sim.truncations:
        problems.append("no barge-in happened")
    if drop_model_at_s is not None and not facts.get("reconnect_gaps_ms"):
        problems.append("the model was not reconnected")
    if any(not t.ok for t in sim.truncations):
        problems.append("the model rejected a truncate")
    if model_open:
        problems.append(f"{model_open} model connection(s) left open")
    return verdict(
        result,
        problems,
        f"call lasted {elapsed:.1f} s; barge-in, truncate and hang-up all worked.",
    )


def verdict(result: CallResult, problems: list[str], ok: str) -> int:
    """The demo's last line: what went wrong (exit 1), or ``ok`` (exit 0).

    Adds what every demo call must get right as the caller saw it: no protocol
    violations, and the agent, not the caller, ending the call."""
    if result.violations:
        problems.append(f"protocol violations seen by the caller: {result.violations[:2]}")
    if result.closed_by != "server":
        problems.append(f"the agent did not hang up (closed by {result.closed_by})")
    if problems:
        print("\nDEMO FAILED: " + "; ".join(problems), file=sys.stderr)
        return 1
    print(f"\nDemo OK: {ok}")
    return 0
