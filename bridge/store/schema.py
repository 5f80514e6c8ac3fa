"""The database schema as an ordered list of migrations, shared by both backends.

Each backend applies the migrations it has not seen, in order, inside one transaction,
and records each in ``schema_version``; several bridge instances starting at once are
serialised by a lock (``BEGIN IMMEDIATE`` in SQLite, an advisory lock in PostgreSQL).
Statements are written once with type tokens (``{TS}``, ``{REAL}``, ...) so the *logical*
schema (tables, columns, keys) is identical in both databases while each gets its
natural types: timestamps are ``TIMESTAMPTZ`` in PostgreSQL and ISO-8601 UTC text in
SQLite (which sorts correctly as text).

To change the schema, append a :class:`Migration`; never edit one that has shipped.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.store.errors import SchemaTooNewError

Dialect = Literal["sqlite", "postgres"]

_TYPES: dict[Dialect, dict[str, str]] = {
    "sqlite": {
        "TS": "TEXT",
        "REAL": "REAL",
        "BIGINT": "INTEGER",
        "BOOL": "INTEGER",
        "FALSE": "0",
    },
    "postgres": {
        "TS": "TIMESTAMPTZ",
        "REAL": "DOUBLE PRECISION",
        "BIGINT": "BIGINT",
        "BOOL": "BOOLEAN",
        "FALSE": "FALSE",
    },
}

# A fixed key for pg_advisory_xact_lock so concurrent instances migrate one at a time.
POSTGRES_MIGRATION_LOCK = 0x6272_6964_6765  # "bridge"

VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS schema_version ("
    " version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL,"
    " applied_at {TS} NOT NULL)"
)


@dataclass(frozen=True)
class Migration:
    """One step of the schema; ``statements`` run in order in one transaction."""

    version: int
    name: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "calls, turns and responses",
        (
            """CREATE TABLE calls (
                call_sid TEXT PRIMARY KEY,
                stream_sid TEXT,
                from_number TEXT,
                to_number TEXT,
                agent TEXT,
                audio_mode TEXT,
                dialect TEXT,
                started_at {TS},
                ended_at {TS},
                end_reason TEXT,
                twilio_status TEXT,
                twilio_duration_s INTEGER,
                updated_at {TS} NOT NULL
            )""",
            "CREATE INDEX calls_by_time ON calls ((COALESCE(started_at, updated_at)))",
            """CREATE TABLE turns (
                call_sid TEXT NOT NULL,
                seq INTEGER NOT NULL,
                speaker TEXT NOT NULL CHECK (speaker IN ('caller', 'agent', 'system')),
                text TEXT NOT NULL,
                start_ms {BIGINT},
                end_ms {BIGINT},
                interrupted {BOOL} NOT NULL DEFAULT {FALSE},
                PRIMARY KEY (call_sid, seq)
            )""",
            """CREATE TABLE responses (
                call_sid TEXT NOT NULL,
                response_id TEXT NOT NULL,
                status TEXT,
                total_tokens {BIGINT} NOT NULL DEFAULT 0,
                input_tokens {BIGINT} NOT NULL DEFAULT 0,
                output_tokens {BIGINT} NOT NULL DEFAULT 0,
                input_text_tokens {BIGINT} NOT NULL DEFAULT 0,
                input_audio_tokens {BIGINT} NOT NULL DEFAULT 0,
                input_cached_tokens {BIGINT} NOT NULL DEFAULT 0,
                output_text_tokens {BIGINT} NOT NULL DEFAULT 0,
                output_audio_tokens {BIGINT} NOT NULL DEFAULT 0,
                audio_in_s {REAL} NOT NULL DEFAULT 0,
                audio_out_s {REAL} NOT NULL DEFAULT 0,
                cost_usd {REAL} NOT NULL DEFAULT 0,
                recorded_at {TS} NOT NULL,
                PRIMARY KEY (call_sid, response_id)
            )""",
        ),
    ),
    Migration(
        2,
        "single-use stream token claims shared by a fleet",
        (
            # The primary key is the whole replay check: a second INSERT of the same id
            # conflicts, on any replica.  Rows are deleted once the token has expired.
            """CREATE TABLE stream_token_claims (
                token_id TEXT PRIMARY KEY,
                expires_ms {BIGINT} NOT NULL
            )""",
            "CREATE INDEX stream_token_claims_by_expiry ON stream_token_claims (expires_ms)",
        ),
    ),
    Migration(
        3,
        "call recordings",
        ("ALTER TABLE calls ADD COLUMN recording_path TEXT",),
    ),
    Migration(
        4,
        "model reconnects, gap, rollovers and fallback per call",
        (
            "ALTER TABLE calls ADD COLUMN reconnects INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE calls ADD COLUMN model_gap_ms {BIGINT} NOT NULL DEFAULT 0",
            "ALTER TABLE calls ADD COLUMN rollovers INTEGER NOT NULL DEFAULT 0",
            "ALTER TABLE calls ADD COLUMN fallback TEXT",
        ),
    ),
    Migration(
        5,
        "cascade responses: backend, cost per stage, Realtime equivalent, latency per stage",
        tuple(
            f"ALTER TABLE responses ADD COLUMN {column}"
            for column in (
                "backend TEXT",
                "stt_cost_usd {REAL}",
                "llm_cost_usd {REAL}",
                "tts_cost_usd {REAL}",
                "realtime_equivalent_usd {REAL}",
                # The cascade's per-turn breakdown (TurnClock), one column per span so
                # that a query can average a stage over calls.
                "speech_stopped_to_transcript_ms {BIGINT}",
                "transcript_to_first_token_ms {BIGINT}",
                "first_token_to_first_tts_audio_ms {BIGINT}",
                "first_tts_audio_to_first_audio_out_ms {BIGINT}",
                "speech_stopped_to_first_audio_out_ms {BIGINT}",
                "response_started_to_first_audio_out_ms {BIGINT}",
            )
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


def render(statement: str, dialect: Dialect) -> str:
    """``statement`` with its type tokens replaced for ``dialect``."""
    out = statement
    for token, sql_type in _TYPES[dialect].items():
        out = out.replace("{" + token + "}", sql_type)
    return out


def pending(current: int | None) -> list[Migration]:
    """Migrations newer than ``current``; refuse a database newer than this code.

    Running old code on a newer schema could write rows a newer version does not expect,
    so it is an error rather than something to muddle through.
    """
    version = current or 0
    if version > LATEST_VERSION:
        raise SchemaTooNewError(
            f"database schema version {version} is newer than this bridge understands "
            f"({LATEST_VERSION}); upgrade the bridge"
        )
    return [m for m in MIGRATIONS if m.version > version]


def _check_order() -> None:
    versions = [m.version for m in MIGRATIONS]
    if versions != list(range(1, len(versions) + 1)):
        raise AssertionError(f"migrations must be numbered 1..n in order, got {versions}")


_check_order()
