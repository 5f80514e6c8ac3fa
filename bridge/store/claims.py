"""Single-use stream tokens held fleet-wide, through the call-record database.

Why the database: every replica already shares it (PostgreSQL in a fleet), and "claim
this id once" is exactly what a primary key does.  ``INSERT … ON CONFLICT DO NOTHING
RETURNING`` answers in one round trip, atomically, on SQLite and PostgreSQL alike, so a
token used through replica A is refused on replica B.  Expired rows are deleted in the
background at most every ``cleanup_every_s``; an expired token is refused before it is
ever claimed, so a row that outlives its token a little does no harm.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from bridge.store.base import Backend
from bridge.twilio.stream_token import ClaimUnavailable

log = logging.getLogger("bridge.store")

_CLAIM = (
    "INSERT INTO stream_token_claims (token_id, expires_ms) VALUES (?, ?) "
    "ON CONFLICT (token_id) DO NOTHING RETURNING token_id"
)
_CLEANUP = "DELETE FROM stream_token_claims WHERE expires_ms <= ?"


def _discard(task: asyncio.Future[Any]) -> None:
    """Collect an abandoned query's outcome, so it is never reported as unretrieved."""
    if not task.cancelled():
        task.exception()


class StoreClaims:
    """:class:`~bridge.twilio.stream_token.TokenClaims` on a store :class:`Backend`."""

    def __init__(
        self, backend: Backend, *, timeout_s: float = 2.0, cleanup_every_s: float = 30.0
    ) -> None:
        self.backend = backend
        self.timeout_s = timeout_s
        self.cleanup_every_s = cleanup_every_s
        self._last_cleanup = time.monotonic()
        self._cleanup: asyncio.Task[int] | None = None

    async def claim(self, token_id: str, expires_ms: int, now_ms: int) -> bool:
        """True the first time ``token_id`` is seen by any replica sharing the database.

        Bounded by ``timeout_s``: a database that hangs must not hold the caller in
        silence; it raises :class:`ClaimUnavailable` and the stream is refused."""
        # Not ``wait_for``: it waits for the cancelled query to finish cancelling, and a
        # driver cancelling against a frozen server (asyncpg opens a connection to send
        # the cancel request) can take far longer than the bound.  The query is
        # cancelled and left to wind down on its own.
        query = asyncio.ensure_future(self.backend.fetch(_CLAIM, (token_id, expires_ms)))
        done, _ = await asyncio.wait({query}, timeout=self.timeout_s)
        if not done:
            query.cancel()
            query.add_done_callback(_discard)
            raise ClaimUnavailable(f"no answer from the database in {self.timeout_s:g} s")
        try:
            rows = query.result()
        except Exception as exc:  # StoreError or a driver error: the message is scrubbed
            raise ClaimUnavailable(self.backend.describe(exc)) from None
        self._maybe_clean(now_ms)
        return bool(rows)

    def _maybe_clean(self, now_ms: int) -> None:
        now = time.monotonic()
        if now - self._last_cleanup < self.cleanup_every_s:
            return
        if self._cleanup is not None and not self._cleanup.done():
            return
        self._last_cleanup = now
        self._cleanup = asyncio.ensure_future(self.clean(now_ms))

    async def clean(self, now_ms: int) -> int:
        """Delete claims whose token has expired; how many were left (for tests)."""
        try:
            await self.backend.fetch(_CLEANUP, (now_ms,))
            rows = await self.backend.fetch("SELECT COUNT(*) AS n FROM stream_token_claims")
        except Exception as exc:  # noqa: BLE001 - the next claim retries the cleanup
            log.info("stream token cleanup failed: %s", self.backend.describe(exc))
            return -1
        return int(rows[0]["n"])

    async def close(self) -> None:
        if self._cleanup is not None and not self._cleanup.done():
            self._cleanup.cancel()
            with contextlib.suppress(BaseException):
                await self._cleanup
