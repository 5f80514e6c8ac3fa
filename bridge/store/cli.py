"""``python -m bridge calls`` — read call records from the store and print them.

``argv`` is what follows ``calls`` on the command line::

    calls [--limit N] [--json]          recent calls, newest first
    calls show CA... [--json]           one call's transcript, usage and estimated cost

Costs are estimates from the price table in force when each response was recorded.
Exit status: 0 ok, 1 call not found, 2 bad arguments, 3 database unavailable.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from dataclasses import asdict
from datetime import datetime
from typing import Any, TextIO

from bridge.config import Secret
from bridge.store import open_backend
from bridge.store.callstore import CallStore
from bridge.store.errors import StoreError
from bridge.store.pricing import Prices
from bridge.store.records import LATENCY_SPANS, CallRecord, CallSummary
from bridge.store.urls import backend_kind, redact_url, scrub, sqlite_target

EXIT_OK, EXIT_NOT_FOUND, EXIT_USAGE, EXIT_DB = 0, 1, 2, 3


# ------------------------------------------------------------------- formatting


def offset(ms: int | None) -> str:
    """Milliseconds since the call started as ``mm:ss.mmm`` (minutes grow past 99)."""
    if ms is None:
        return "--:--.---"
    ms = max(0, int(ms))
    minutes, rest = divmod(ms, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{minutes:02d}:{seconds:02d}.{millis:03d}"


def _when(moment: datetime | None) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%SZ") if moment else "-"


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(round(seconds))
    return f"{whole // 60}:{whole % 60:02d}"


def _money(usd: float) -> str:
    return f"${usd:.4f}"


def _table(headers: list[str], rows: list[list[str]], right: set[int]) -> str:
    widths = [
        max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)
    ]

    def line(cells: list[str]) -> str:
        out = [
            c.rjust(w) if i in right else c.ljust(w)
            for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(out).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_calls(calls: list[CallSummary]) -> str:
    """The ``calls`` listing: one line per call."""
    if not calls:
        return "no calls recorded yet"
    headers = [
        "started (UTC)",
        "CallSid",
        "from",
        "to",
        "agent",
        "duration",
        "end reason",
        "turns",
        "est. cost",
    ]
    rows = [
        [
            _when(c.started_at),
            c.call_sid,
            c.from_number or "-",
            c.to_number or "-",
            c.agent or "-",
            _duration(c.duration_s),
            c.end_reason or (c.twilio_status or "-"),
            str(c.turn_count),
            _money(c.cost_usd),
        ]
        for c in calls
    ]
    return _table(headers, rows, right={5, 7, 8})


def format_call(call: CallRecord) -> str:
    """``calls show``: header, transcript with offsets, usage and estimated cost."""
    lines = [
        f"Call {call.call_sid}",
        f"  stream      {call.stream_sid or '-'}",
        f"  from → to   {call.from_number or '-'} → {call.to_number or '-'}",
        f"  agent       {call.agent or '-'}  (audio {call.audio_mode or '-'}, "
        f"dialect {call.dialect or '-'})",
        f"  started     {_when(call.started_at)}",
        f"  ended       {_when(call.ended_at)}  ({call.end_reason or 'no end recorded'})",
        f"  twilio      {call.twilio_status or '-'}"
        + (f", {call.twilio_duration_s} s" if call.twilio_duration_s is not None else ""),
        f"  duration    {_duration(call.duration_s)}",
    ]
    if call.reconnects or call.rollovers or call.fallback:
        lines.append(
            f"  model       {call.reconnects} reconnect(s), {call.model_gap_ms} ms without a "
            f"model, {call.rollovers} rollover(s)"
            + (f", fallback: {call.fallback}" if call.fallback else "")
        )
    lines += [
        "",
        "Transcript",
    ]
    if not call.turns:
        lines.append("  (no turns)")
    width = max((len(t.speaker) for t in call.turns), default=6)
    for t in call.turns:
        mark = " [interrupted]" if t.interrupted else ""
        lines.append(
            f"  {offset(t.start_ms)}–{offset(t.end_ms)}  {t.speaker.ljust(width)}  {t.text}{mark}"
        )
    u = call.totals
    lines += [
        "",
        f"Usage ({u.responses} responses)",
        f"  input   {u.input_tokens:>9,} tokens  (text {u.input_text_tokens:,}, "
        f"audio {u.input_audio_tokens:,}, cached {u.input_cached_tokens:,})",
        f"  output  {u.output_tokens:>9,} tokens  (text {u.output_text_tokens:,}, "
        f"audio {u.output_audio_tokens:,})",
        f"  audio   {u.audio_in_s:.1f} s in, {u.audio_out_s:.1f} s out",
        f"  est. cost {_money(u.cost_usd)}  (estimate from the configured price table)",
    ]
    if u.cascade_responses:
        lines += ["", *format_cascade(call)]
    return "\n".join(lines)


_SPAN_HEADERS = {
    "speech_stopped_to_transcript": "transcript",
    "transcript_to_first_token": "1st token",
    "first_token_to_first_tts_audio": "1st TTS audio",
    "first_tts_audio_to_first_audio_out": "1st audio out",
    "speech_stopped_to_first_audio_out": "turn",
    "response_started_to_first_audio_out": "from request",
}


def format_cascade(call: CallRecord) -> list[str]:
    """The cascade's cost per stage next to the Realtime estimate, and latency per turn."""
    u = call.totals
    stages = u.stages
    lines = [
        f"Cascade backend ({u.cascade_responses} responses)",
        f"  est. cost {_money(stages.stt_usd + stages.llm_usd + stages.tts_usd)}  "
        f"(STT {_money(stages.stt_usd)}, LLM {_money(stages.llm_usd)}, "
        f"TTS {_money(stages.tts_usd)})",
        f"  on Realtime ≈ {_money(stages.realtime_equivalent_usd)}  (the same audio and "
        "text at the Realtime price table: a lower bound)",
        "",
        "Latency per turn, ms (end of caller speech → transcript → first LLM token → "
        "first TTS audio → first audio to Twilio)",
    ]
    headers = ["response", *(_SPAN_HEADERS[s] for s in LATENCY_SPANS)]
    rows = [
        [r.response_id, *("-" if r.latency_ms.get(s) is None else str(r.latency_ms[s])
                          for s in LATENCY_SPANS)]
        for r in call.responses
        if r.backend == "cascade"
    ]
    table = _table(headers, rows, right=set(range(1, len(headers))))
    lines += ["  " + line for line in table.splitlines()]
    return lines


def _jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return value


def summary_json(call: CallSummary) -> dict[str, Any]:
    """A call as JSON-ready data (timestamps ISO-8601 UTC, ``duration_s`` included)."""
    data: dict[str, Any] = _jsonable(asdict(call))
    data["duration_s"] = call.duration_s
    return data


# ------------------------------------------------------------------------ main


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``calls`` options, shared by this parser and ``python -m bridge calls``.

    One definition, so the top-level CLI cannot drift from what this docstring promises."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")
    parser.add_argument("--limit", type=int, default=20, help="how many calls (default 20)")
    sub = parser.add_subparsers(dest="command")
    show = sub.add_parser("show", help="one call's transcript and usage")
    show.add_argument("call_sid", help="the CallSid, CA…")
    show.add_argument("--json", action="store_true", dest="show_json", help="print JSON")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bridge calls", description="Show recorded calls (costs are estimates)."
    )
    add_arguments(parser)
    return parser


def _missing_sqlite_file(database_url: str) -> str | None:
    """The path of a SQLite database that does not exist yet (reading must not create it)."""
    if backend_kind(database_url) != "sqlite":
        return None
    target = sqlite_target(database_url)
    if target.in_memory or os.path.exists(target.path):
        return None
    return target.path


async def _run(args: argparse.Namespace, database_url: str, out: TextIO) -> int:
    # Prices only matter when recording, so a bad BRIDGE_PRICES must not stop reading.
    store = CallStore(open_backend(database_url), prices=Prices())
    try:
        await store.backend.connect()
        as_json = bool(args.json or getattr(args, "show_json", False))
        if args.command == "show":
            call = await store.get_call(args.call_sid)
            if call is None:
                print(f"no call {args.call_sid} in {redact_url(database_url)}", file=sys.stderr)
                return EXIT_NOT_FOUND
            if as_json:
                json.dump(summary_json(call), out, indent=2, ensure_ascii=False)
                out.write("\n")
            else:
                out.write(format_call(call) + "\n")
            return EXIT_OK
        calls = await store.list_calls(args.limit)
        if as_json:
            json.dump(
                {"calls": [summary_json(c) for c in calls]}, out, indent=2, ensure_ascii=False
            )
            out.write("\n")
        else:
            out.write(format_calls(calls) + "\n")
        return EXIT_OK
    finally:
        await store.backend.close()


def main(argv: list[str], database_url: str | Secret, out: TextIO | None = None) -> int:
    """Entry point for ``python -m bridge calls …``; returns the exit status."""
    if isinstance(database_url, Secret):
        database_url = database_url.reveal()
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # argparse already printed the problem
        return EXIT_OK if exc.code == 0 else EXIT_USAGE
    return run_parsed(args, database_url, out)


def run_parsed(
    args: argparse.Namespace, database_url: str | Secret, out: TextIO | None = None
) -> int:
    """Run already-parsed ``calls`` arguments (see :func:`add_arguments`)."""
    if isinstance(database_url, Secret):
        database_url = database_url.reveal()
    if args.limit < 1:
        print("--limit must be at least 1", file=sys.stderr)
        return EXIT_USAGE
    stream = out or sys.stdout
    try:
        missing = _missing_sqlite_file(database_url)
        if missing is None:
            return asyncio.run(_run(args, database_url, stream))
    except BrokenPipeError:  # `calls | head`: the reader left; that is not an error
        if out is None:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_DB
    except Exception as exc:  # a driver error while connecting: say it, without secrets
        print(
            f"error: cannot read {redact_url(database_url)}: "
            f"{scrub(f'{type(exc).__name__}: {exc}', database_url)}",
            file=sys.stderr,
        )
        return EXIT_DB
    if args.command == "show":
        print(f"no call {args.call_sid}: no database at {missing}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if args.json:
        stream.write(json.dumps({"calls": []}) + "\n")
    else:
        stream.write(f"no calls recorded yet (no database at {missing})\n")
    return EXIT_OK
