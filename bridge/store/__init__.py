"""Call records, transcripts and usage: SQLite by default, PostgreSQL via DATABASE_URL.

Usage::

    store = open_store(settings.database_url)
    await store.start()
    store.record_call_started(call_sid, stream_sid=..., from_number=..., agent=...)
    store.record_turn(call_sid, 0, "caller", "Hello?", start_ms=1200, end_ms=2100)
    store.record_usage(call_sid, response_id, event["response"]["usage"], audio_out_s=2.4)
    store.record_call_ended(call_sid, "caller-hangup")
    ...
    await store.close()          # flushes, waiting at most close_timeout_s

The ``record_*`` calls never block or raise for database trouble (see ``writer.py``).
Costs are estimates from a price table (see ``pricing.py``).
"""

from __future__ import annotations

from bridge.config import Secret
from bridge.store.base import Backend, Store
from bridge.store.callstore import CallStore
from bridge.store.errors import SchemaTooNewError, StoreError
from bridge.store.pricing import Prices
from bridge.store.records import (
    CallRecord,
    CallSummary,
    ResponseUsage,
    Speaker,
    TokenUsage,
    Turn,
    UsageTotals,
)
from bridge.store.urls import backend_kind, redact_url
from bridge.store.writer import WriterStats

__all__ = [
    "Backend",
    "CallRecord",
    "CallStore",
    "CallSummary",
    "Prices",
    "ResponseUsage",
    "SchemaTooNewError",
    "Speaker",
    "Store",
    "StoreError",
    "TokenUsage",
    "Turn",
    "UsageTotals",
    "WriterStats",
    "open_backend",
    "open_store",
    "redact_url",
]


def open_backend(database_url: str | Secret) -> Backend:
    """The backend DATABASE_URL selects (no I/O yet; raises :class:`StoreError` if unusable).

    Accepts a :class:`~bridge.config.Secret` too, because the URL carries a password.
    """
    if isinstance(database_url, Secret):
        database_url = database_url.reveal()
    if backend_kind(database_url) == "postgres":
        from bridge.store.postgres import PostgresBackend

        return PostgresBackend(database_url)
    from bridge.store.sqlite import SQLiteBackend

    return SQLiteBackend(database_url)


def open_store(
    database_url: str | Secret,
    *,
    prices: Prices | None = None,
    close_timeout_s: float = 5.0,
    max_pending: int = 100_000,
    batch_size: int = 500,
    retry_initial_s: float = 0.05,
    retry_max_s: float = 5.0,
) -> CallStore:
    """A :class:`CallStore` for ``database_url``; call ``await store.start()`` next.

    ``prices`` defaults to the built-in table overridden by ``BRIDGE_PRICES``.  Raises
    :class:`StoreError` for an unsupported URL or a missing driver (asyncpg), and
    ``bridge.config.ConfigError`` for a malformed ``BRIDGE_PRICES``; never for an
    unreachable database (that is handled by retrying).
    """
    return CallStore(
        open_backend(database_url),
        prices=prices,
        close_timeout_s=close_timeout_s,
        max_pending=max_pending,
        batch_size=batch_size,
        retry_initial_s=retry_initial_s,
        retry_max_s=retry_max_s,
    )
