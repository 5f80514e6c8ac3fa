"""The store's SQL, written once for both backends, and row → record mapping.

Statements use ``?`` placeholders (the PostgreSQL backend rewrites them to ``$n``) and
only syntax both databases share: ``INSERT … ON CONFLICT … DO UPDATE`` (SQLite ≥ 3.24),
``COALESCE``, ``CASE``.  Every write is an idempotent upsert, which is what lets the
writer retry a batch that may already have committed, and lets Twilio's status callback
arrive before or after the bridge's own record of the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from bridge.store.records import (
    LATENCY_SPANS,
    CallSummary,
    ResponseUsage,
    StageCosts,
    TokenUsage,
    Turn,
)

# Twilio's terminal call statuses: a late "ringing"/"in-progress" callback delivered out of
# order must not overwrite one of these.
TERMINAL_STATUSES = ("completed", "busy", "failed", "no-answer", "canceled")
_TERMINAL = ", ".join(f"'{s}'" for s in TERMINAL_STATUSES)

CALL_STARTED = """
INSERT INTO calls (call_sid, stream_sid, from_number, to_number, agent, audio_mode, dialect,
                   started_at, updated_at)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_sid) DO UPDATE SET
    stream_sid = COALESCE(excluded.stream_sid, calls.stream_sid),
    from_number = COALESCE(excluded.from_number, calls.from_number),
    to_number = COALESCE(excluded.to_number, calls.to_number),
    agent = COALESCE(excluded.agent, calls.agent),
    audio_mode = COALESCE(excluded.audio_mode, calls.audio_mode),
    dialect = COALESCE(excluded.dialect, calls.dialect),
    started_at = COALESCE(calls.started_at, excluded.started_at),
    updated_at = excluded.updated_at
"""

# The first recorded end reason wins: later ones (a socket closing because the call ended)
# are consequences, not causes.
CALL_ENDED = """
INSERT INTO calls (call_sid, ended_at, end_reason, updated_at)
VALUES (?, ?, ?, ?)
ON CONFLICT (call_sid) DO UPDATE SET
    ended_at = COALESCE(calls.ended_at, excluded.ended_at),
    end_reason = COALESCE(calls.end_reason, excluded.end_reason),
    updated_at = excluded.updated_at
"""

TWILIO_STATUS = f"""
INSERT INTO calls (call_sid, twilio_status, twilio_duration_s, updated_at)
VALUES (?, ?, ?, ?)
ON CONFLICT (call_sid) DO UPDATE SET
    twilio_status = CASE
        WHEN calls.twilio_status IN ({_TERMINAL})
             AND excluded.twilio_status NOT IN ({_TERMINAL})
        THEN calls.twilio_status ELSE excluded.twilio_status END,
    twilio_duration_s = COALESCE(excluded.twilio_duration_s, calls.twilio_duration_s),
    updated_at = excluded.updated_at
"""

TURN = """
INSERT INTO turns (call_sid, seq, speaker, text, start_ms, end_ms, interrupted)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (call_sid, seq) DO UPDATE SET
    speaker = excluded.speaker,
    text = excluded.text,
    start_ms = excluded.start_ms,
    end_ms = excluded.end_ms,
    interrupted = excluded.interrupted
"""

_USAGE_COLUMNS = (
    "call_sid", "response_id", "status", "total_tokens", "input_tokens", "output_tokens",
    "input_text_tokens", "input_audio_tokens", "input_cached_tokens", "output_text_tokens",
    "output_audio_tokens", "audio_in_s", "audio_out_s", "cost_usd", "recorded_at",
    "backend", "stt_cost_usd", "llm_cost_usd", "tts_cost_usd", "realtime_equivalent_usd",
    *(f"{span}_ms" for span in LATENCY_SPANS),
)
USAGE = (
    f"INSERT INTO responses ({', '.join(_USAGE_COLUMNS)})\n"
    f"VALUES ({', '.join('?' for _ in _USAGE_COLUMNS)})\n"
    "ON CONFLICT (call_sid, response_id) DO UPDATE SET\n    "
    + ",\n    ".join(f"{c} = excluded.{c}" for c in _USAGE_COLUMNS[2:])
    + "\n"
)

RECORDING = """
INSERT INTO calls (call_sid, recording_path, updated_at)
VALUES (?, ?, ?)
ON CONFLICT (call_sid) DO UPDATE SET
    recording_path = excluded.recording_path,
    updated_at = excluded.updated_at
"""

RESILIENCE = """
INSERT INTO calls (call_sid, reconnects, model_gap_ms, rollovers, fallback, updated_at)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (call_sid) DO UPDATE SET
    reconnects = excluded.reconnects,
    model_gap_ms = excluded.model_gap_ms,
    rollovers = excluded.rollovers,
    fallback = excluded.fallback,
    updated_at = excluded.updated_at
"""

_SUMMARY = """
SELECT c.call_sid, c.stream_sid, c.from_number, c.to_number, c.agent, c.audio_mode,
       c.dialect, c.started_at, c.ended_at, c.end_reason, c.twilio_status,
       c.twilio_duration_s, c.recording_path,
       c.reconnects, c.model_gap_ms, c.rollovers, c.fallback,
       (SELECT COUNT(*) FROM turns t WHERE t.call_sid = c.call_sid) AS turn_count,
       (SELECT COALESCE(SUM(r.cost_usd), 0) FROM responses r
         WHERE r.call_sid = c.call_sid) AS cost_usd
FROM calls c
"""

# Ordered by start time, or by arrival for rows only Twilio's callback has created; the
# expression index ``calls_by_time`` serves this order.
LIST_CALLS = _SUMMARY + "ORDER BY COALESCE(c.started_at, c.updated_at) DESC LIMIT ?"


def search_calls(number: bool, since: bool, until: bool) -> str:
    """The summary query filtered by what the search names (only those placeholders)."""
    where = []
    if number:
        where.append("(c.from_number LIKE ? OR c.to_number LIKE ?)")
    if since:
        where.append("COALESCE(c.started_at, c.updated_at) >= ?")
    if until:
        where.append("COALESCE(c.started_at, c.updated_at) < ?")
    clause = ("WHERE " + " AND ".join(where) + " ") if where else ""
    return _SUMMARY + clause + "ORDER BY COALESCE(c.started_at, c.updated_at) DESC LIMIT ?"
GET_CALL = _SUMMARY + "WHERE c.call_sid = ?"
GET_TURNS = (
    "SELECT seq, speaker, text, start_ms, end_ms, interrupted FROM turns "
    "WHERE call_sid = ? ORDER BY seq"
)
GET_RESPONSES = (
    "SELECT response_id, status, total_tokens, input_tokens, output_tokens, "
    "input_text_tokens, input_audio_tokens, input_cached_tokens, output_text_tokens, "
    "output_audio_tokens, audio_in_s, audio_out_s, cost_usd, recorded_at, "
    "backend, stt_cost_usd, llm_cost_usd, tts_cost_usd, realtime_equivalent_usd, "
    + ", ".join(f"{span}_ms" for span in LATENCY_SPANS)
    + " FROM responses WHERE call_sid = ? ORDER BY recorded_at, response_id"
)


def to_datetime(value: Any) -> datetime | None:
    """A stored timestamp (PostgreSQL ``datetime`` or SQLite ISO text) as aware UTC."""
    if value is None:
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    if not isinstance(value, datetime):
        raise TypeError(f"not a timestamp: {type(value).__name__}")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def summary_fields(row: Mapping[str, Any]) -> dict[str, Any]:
    """The :class:`CallSummary` fields of a ``_SUMMARY`` row (shared by list and get)."""
    return {
        "call_sid": row["call_sid"],
        "stream_sid": row["stream_sid"],
        "from_number": row["from_number"],
        "to_number": row["to_number"],
        "agent": row["agent"],
        "audio_mode": row["audio_mode"],
        "dialect": row["dialect"],
        "started_at": to_datetime(row["started_at"]),
        "ended_at": to_datetime(row["ended_at"]),
        "end_reason": row["end_reason"],
        "twilio_status": row["twilio_status"],
        "twilio_duration_s": _int(row["twilio_duration_s"]),
        "turn_count": int(row["turn_count"] or 0),
        "cost_usd": float(row["cost_usd"] or 0.0),
        "recording_path": row["recording_path"],
        "reconnects": int(row["reconnects"] or 0),
        "model_gap_ms": int(row["model_gap_ms"] or 0),
        "rollovers": int(row["rollovers"] or 0),
        "fallback": row["fallback"],
    }


def summary(row: Mapping[str, Any]) -> CallSummary:
    return CallSummary(**summary_fields(row))


def turn(row: Mapping[str, Any]) -> Turn:
    return Turn(
        seq=int(row["seq"]),
        speaker=row["speaker"],
        text=row["text"],
        start_ms=_int(row["start_ms"]),
        end_ms=_int(row["end_ms"]),
        interrupted=bool(row["interrupted"]),
    )


def response(row: Mapping[str, Any]) -> ResponseUsage:
    return ResponseUsage(
        response_id=row["response_id"],
        status=row["status"],
        tokens=TokenUsage(
            total_tokens=int(row["total_tokens"]),
            input_tokens=int(row["input_tokens"]),
            output_tokens=int(row["output_tokens"]),
            input_text_tokens=int(row["input_text_tokens"]),
            input_audio_tokens=int(row["input_audio_tokens"]),
            input_cached_tokens=int(row["input_cached_tokens"]),
            output_text_tokens=int(row["output_text_tokens"]),
            output_audio_tokens=int(row["output_audio_tokens"]),
        ),
        audio_in_s=float(row["audio_in_s"]),
        audio_out_s=float(row["audio_out_s"]),
        cost_usd=float(row["cost_usd"]),
        recorded_at=to_datetime(row["recorded_at"]),
        backend=row["backend"],
        stages=None if row["backend"] != "cascade" else StageCosts(
            stt_usd=float(row["stt_cost_usd"] or 0.0),
            llm_usd=float(row["llm_cost_usd"] or 0.0),
            tts_usd=float(row["tts_cost_usd"] or 0.0),
            realtime_equivalent_usd=float(row["realtime_equivalent_usd"] or 0.0),
        ),
        latency_ms={
            span: _int(row[f"{span}_ms"])
            for span in LATENCY_SPANS
            if row["backend"] == "cascade"
        },
    )
