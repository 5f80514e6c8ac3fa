"""The two interfaces of the store.

:class:`Store` is what the rest of the bridge sees: ``record_*`` methods that only
enqueue (the audio path must never wait on a disk or a network), and async reads.
:class:`Backend` is the small per-database part (SQLite, PostgreSQL): run a list of
statements in one transaction, fetch rows, say whether an error is the record's fault.
Everything else (queueing, batching, retries, pricing, row mapping) is written once, in
``callstore.py`` and ``writer.py``, so both databases behave the same way.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple, Protocol, runtime_checkable

from bridge.store.records import CallRecord, CallSummary, Speaker, TokenUsage
from bridge.store.schema import Dialect
from bridge.store.urls import redact_url, scrub


class Statement(NamedTuple):
    """One queued write: SQL with ``?`` placeholders, its parameters, and a short label.

    ``what`` names the record in log lines (e.g. ``"turn CA12…#3"``) without quoting
    transcript text, which may be personal data.
    """

    sql: str
    params: tuple[Any, ...]
    what: str


@runtime_checkable
class Store(Protocol):
    """Call records, transcripts and usage.

    The ``record_*`` methods are synchronous, O(1) and never raise for database trouble:
    they put the record on an in-memory queue that a background task writes in batches.
    Call them from the event loop's thread (other threads work too, at a small cost).
    Each record is an idempotent upsert, so the order in which a call's records arrive,
    and a batch being retried after it had in fact committed, do not matter.
    """

    async def start(self) -> None: ...

    async def close(self, timeout: float | None = None) -> bool: ...

    async def flush(self, timeout: float = 5.0) -> bool: ...

    def record_call_started(
        self,
        call_sid: str,
        *,
        stream_sid: str | None = None,
        from_number: str | None = None,
        to_number: str | None = None,
        agent: str | None = None,
        audio_mode: str | None = None,
        dialect: str | None = None,
        started_at: datetime | None = None,
    ) -> None: ...

    def record_turn(
        self,
        call_sid: str,
        seq: int,
        speaker: Speaker,
        text: str,
        *,
        start_ms: int | None = None,
        end_ms: int | None = None,
        interrupted: bool = False,
    ) -> None: ...

    def record_usage(
        self,
        call_sid: str,
        response_id: str,
        usage: Mapping[str, Any] | TokenUsage | None,
        *,
        audio_in_s: float = 0.0,
        audio_out_s: float = 0.0,
        status: str | None = None,
    ) -> None: ...

    def record_call_ended(
        self, call_sid: str, end_reason: str, *, ended_at: datetime | None = None
    ) -> None: ...

    def record_twilio_status(
        self, call_sid: str, status: str, duration_s: int | None = None
    ) -> None: ...

    def record_recording(self, call_sid: str, path: str) -> None: ...

    def record_resilience(
        self, call_sid: str, reconnects: int, gap_ms: int, rollovers: int, fallback: str | None
    ) -> None: ...

    async def list_calls(self, limit: int = 20) -> list[CallSummary]: ...

    async def search_calls(
        self,
        *,
        number: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[CallSummary]: ...

    async def get_call(self, call_sid: str) -> CallRecord | None: ...


class Backend(ABC):
    """One database: connection handling, transactions and error classification."""

    dialect: Dialect

    def __init__(self, url: str) -> None:
        self._url = url

    @property
    def display_url(self) -> str:
        """The URL with its password masked: the only form fit for logs."""
        return redact_url(self._url)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display_url!r})"

    def describe(self, exc: BaseException) -> str:
        """``exc`` as one log-safe line (type and message, password scrubbed)."""
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        text = f"{type(exc).__name__}: {message}" if message else type(exc).__name__
        return scrub(text, self._url)

    @abstractmethod
    async def connect(self) -> None:
        """Open the connection if needed and bring the schema up to date.  Idempotent."""

    @abstractmethod
    async def execute(self, statements: Sequence[Statement]) -> None:
        """Run ``statements`` in one transaction (connecting first if needed).

        On any failure nothing is committed and the exception propagates; the backend
        drops a connection that may be broken so the next call reconnects.
        """

    @abstractmethod
    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        """Rows of a read query (``?`` placeholders) as dicts."""

    @abstractmethod
    def is_bad_record(self, exc: BaseException) -> bool:
        """True when ``exc`` is the data's fault (retrying the same row can never work).

        Everything else (connection refused, locked, disk full, server restarting, even
        errors we do not recognise) is retried: losing records to a misclassified outage
        is worse than holding them in memory a while longer.
        """

    @abstractmethod
    async def close(self) -> None:
        """Release connections and threads.  Idempotent."""

    @abstractmethod
    async def schema_version(self) -> int:
        """The highest applied migration (0 for an empty database)."""
