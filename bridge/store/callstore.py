"""The store the bridge uses: ``record_*`` enqueue, reads go to the database.

Written once over :class:`~bridge.store.base.Backend`, so SQLite and PostgreSQL share
the queueing, retry and pricing behaviour and differ only in how SQL reaches the disk.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from bridge.store import sql
from bridge.store.base import Backend, Statement
from bridge.store.errors import SchemaTooNewError
from bridge.store.pricing import Prices, cascade_cost, realtime_equivalent
from bridge.store.records import (
    LATENCY_SPANS,
    SPEAKERS,
    CallRecord,
    CallSummary,
    Speaker,
    TokenUsage,
    UsageTotals,
    utc,
)
from bridge.store.writer import WriteBehind, WriterStats

log = logging.getLogger("bridge.store")


def _short(call_sid: str) -> str:
    """A CallSid shortened for log labels (enough to find it, not a wall of hex)."""
    return call_sid if len(call_sid) <= 12 else call_sid[:12] + "…"


class CallStore:
    """Call records, transcripts and usage on top of one backend (implements ``Store``).

    ``start()`` opens the database and starts the writer.  If the database is
    unreachable at start-up the bridge still starts (calls matter more than records):
    the failure is logged and the writer keeps retrying.  Only problems that retrying
    cannot fix, such as a schema newer than this code, make ``start()`` raise.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        prices: Prices | None = None,
        close_timeout_s: float = 5.0,
        max_pending: int = 100_000,
        batch_size: int = 500,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
    ) -> None:
        self.backend = backend
        self.prices = prices if prices is not None else Prices.from_env()
        self.close_timeout_s = close_timeout_s
        self._writer = WriteBehind(
            backend,
            max_pending=max_pending,
            batch_size=batch_size,
            retry_initial_s=retry_initial_s,
            retry_max_s=retry_max_s,
        )

    def __repr__(self) -> str:
        return f"CallStore({self.backend.display_url!r})"

    @property
    def stats(self) -> WriterStats:
        return self._writer.stats

    # ------------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        try:
            await self.backend.connect()
        except SchemaTooNewError:
            raise
        except Exception as exc:
            log.warning(
                "call-record database %s is unavailable at start-up (%s); calls will be "
                "served and their records kept in memory until it is reachable",
                self.backend.display_url,
                self.backend.describe(exc),
            )
        self._writer.start()

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every record submitted so far is written; False on timeout."""
        return await self._writer.flush(timeout)

    async def close(self, timeout: float | None = None) -> bool:
        """Flush (waiting at most ``timeout``, default ``close_timeout_s``) and release.

        Returns True when no record was left unwritten.
        """
        flushed = await self._writer.close(self.close_timeout_s if timeout is None else timeout)
        await self.backend.close()
        return flushed

    async def __aenter__(self) -> CallStore:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # ------------------------------------------------------ writes (never block)

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
    ) -> None:
        """The call's stream started.  ``started_at`` defaults to now (UTC)."""
        now = utc(None)
        self._writer.submit(
            Statement(
                sql.CALL_STARTED,
                (
                    call_sid,
                    stream_sid,
                    from_number,
                    to_number,
                    agent,
                    audio_mode,
                    dialect,
                    utc(started_at) if started_at else now,
                    now,
                ),
                f"call-started {_short(call_sid)}",
            )
        )

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
    ) -> None:
        """One transcript line; recording the same ``seq`` again replaces it.

        Replacing lets the session write an agent line when it starts speaking and
        correct it (final text, ``interrupted``) later.  An unknown ``speaker`` is a
        programming error and raises ``ValueError`` here rather than poisoning a batch.
        NUL characters are removed: PostgreSQL rejects them in text and SQLite keeps them,
        and a transcript must read the same from either.
        """
        if speaker not in SPEAKERS:
            raise ValueError(f"speaker must be one of {SPEAKERS}, not {speaker!r}")
        self._writer.submit(
            Statement(
                sql.TURN,
                (
                    call_sid,
                    int(seq),
                    speaker,
                    text.replace("\x00", ""),
                    None if start_ms is None else int(start_ms),
                    None if end_ms is None else int(end_ms),
                    bool(interrupted),
                ),
                f"turn {_short(call_sid)}#{seq}",
            )
        )

    def record_usage(
        self,
        call_sid: str,
        response_id: str,
        usage: Mapping[str, Any] | TokenUsage | None,
        *,
        audio_in_s: float = 0.0,
        audio_out_s: float = 0.0,
        status: str | None = None,
    ) -> None:
        """Usage of one response: ``response.done``'s ``response.usage`` (dict) as is,
        or a cascade response's stage units (``backend == "cascade"``).

        The estimated cost is computed now, with the current price table, and stored;
        for the cascade also per stage, with what the Realtime backend would have cost
        and the turn's latency breakdown."""
        cascade = isinstance(usage, Mapping) and usage.get("backend") == "cascade"
        stage: tuple[Any, ...] = (None, None, None, None, None)
        latency: tuple[int | None, ...] = tuple(None for _ in LATENCY_SPANS)
        if cascade:
            assert isinstance(usage, Mapping)
            tokens = _cascade_tokens(usage)
            costs = cascade_cost(usage)
            cost = costs.total
            stage = (
                "cascade",
                costs.stt,
                costs.llm,
                costs.tts,
                realtime_equivalent(usage, self.prices),
            )
            spans = usage.get("cascade_latency_ms")
            if isinstance(spans, Mapping):
                latency = tuple(_ms(spans.get(span)) for span in LATENCY_SPANS)
        else:
            tokens = usage if isinstance(usage, TokenUsage) else TokenUsage.from_event(usage)
            cost = self.prices.cost(tokens)
        self._writer.submit(
            Statement(
                sql.USAGE,
                (
                    call_sid,
                    response_id,
                    status,
                    tokens.total_tokens,
                    tokens.input_tokens,
                    tokens.output_tokens,
                    tokens.input_text_tokens,
                    tokens.input_audio_tokens,
                    tokens.input_cached_tokens,
                    tokens.output_text_tokens,
                    tokens.output_audio_tokens,
                    float(audio_in_s),
                    float(audio_out_s),
                    float(cost),
                    utc(None),
                    *stage,
                    *latency,
                ),
                f"usage {_short(call_sid)}/{response_id}",
            )
        )

    def record_call_ended(
        self, call_sid: str, end_reason: str, *, ended_at: datetime | None = None
    ) -> None:
        """The bridge's side of the call ended; the first reason recorded is kept."""
        now = utc(None)
        self._writer.submit(
            Statement(
                sql.CALL_ENDED,
                (call_sid, utc(ended_at) if ended_at else now, end_reason, now),
                f"call-ended {_short(call_sid)}",
            )
        )

    def record_twilio_status(
        self, call_sid: str, status: str, duration_s: int | None = None
    ) -> None:
        """Twilio's status callback (``CallStatus``, ``CallDuration``).

        May arrive before the call's own record exists (a row is created and filled in
        later) or after it ended.  A terminal status is never replaced by a late
        non-terminal one.
        """
        self._writer.submit(
            Statement(
                sql.TWILIO_STATUS,
                (call_sid, status, None if duration_s is None else int(duration_s), utc(None)),
                f"twilio-status {_short(call_sid)}",
            )
        )

    def record_recording(self, call_sid: str, path: str) -> None:
        """Where the call's two-channel recording was written."""
        self._writer.submit(
            Statement(
                sql.RECORDING,
                (call_sid, path, utc(None)),
                f"recording {_short(call_sid)}",
            )
        )

    def record_resilience(
        self, call_sid: str, reconnects: int, gap_ms: int, rollovers: int, fallback: str | None
    ) -> None:
        """How the call survived its model connection: reconnects (and the total gap),
        seamless rollovers, and the fallback taken when the model could not be reached."""
        self._writer.submit(
            Statement(
                sql.RESILIENCE,
                (call_sid, reconnects, gap_ms, rollovers, fallback, utc(None)),
                f"resilience {_short(call_sid)}",
            )
        )

    # --------------------------------------------------------------------- reads

    async def search_calls(
        self,
        *,
        number: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int = 50,
    ) -> list[CallSummary]:
        """Calls whose from or to number contains ``number``, started in [since, until)."""
        params: list[Any] = []
        digits = (number or "").strip()
        if digits:
            pattern = "%" + digits.replace("%", "").replace("_", "") + "%"
            params += [pattern, pattern]
        if since is not None:
            params.append(utc(since))
        if until is not None:
            params.append(utc(until))
        params.append(max(1, min(int(limit), 500)))
        query = sql.search_calls(bool(digits), since is not None, until is not None)
        rows = await self.backend.fetch(query, params)
        return [sql.summary(row) for row in rows]

    async def list_calls(self, limit: int = 20) -> list[CallSummary]:
        """The most recent calls, newest first, with turn counts and estimated cost."""
        rows = await self.backend.fetch(sql.LIST_CALLS, (max(1, int(limit)),))
        return [sql.summary(row) for row in rows]

    async def get_call(self, call_sid: str) -> CallRecord | None:
        """One call with its transcript, per-response usage and totals, or None."""
        rows = await self.backend.fetch(sql.GET_CALL, (call_sid,))
        if not rows:
            return None
        turns = tuple(sql.turn(r) for r in await self.backend.fetch(sql.GET_TURNS, (call_sid,)))
        responses = [
            sql.response(r) for r in await self.backend.fetch(sql.GET_RESPONSES, (call_sid,))
        ]
        return CallRecord(
            **sql.summary_fields(rows[0]),
            turns=turns,
            responses=tuple(responses),
            totals=UsageTotals.of(responses),
        )


def _ms(value: Any) -> int | None:
    """A latency span from the usage block (network-shaped data: junk becomes None)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0, int(value))


def _cascade_tokens(usage: Mapping[str, Any]) -> TokenUsage:
    """The cascade LLM's tokens in the Realtime columns: all text, no audio tokens
    (the audio is priced per second and per character, in the stage costs)."""

    def count(key: str) -> int:
        value = usage.get(key)
        return 0 if isinstance(value, bool) or not isinstance(value, int) else max(0, value)

    prompt, completion = count("llm_prompt_tokens"), count("llm_completion_tokens")
    return TokenUsage(
        total_tokens=prompt + completion,
        input_tokens=prompt,
        output_tokens=completion,
        input_text_tokens=prompt,
        input_cached_tokens=min(prompt, count("llm_cached_tokens")),
        output_text_tokens=completion,
    )
