"""The write-behind queue between the audio path and the database.

Why it exists: a call must never wait on a disk or a network, and must never fail because
the database is down.  ``submit`` appends to a deque (O(1), no awaiting, no I/O); one
background task takes whatever has accumulated, up to ``batch_size``, and writes it in one
transaction.  Batching is natural: while one transaction runs, new records pile up and go
together in the next, so there is no added delay when idle and few transactions under load.

Failure policy (records are only removed from the queue once committed):

* any error that is not the record's fault (connection refused, server restarting, disk
  full, locked, unknown) → the batch stays queued and is retried with exponential backoff
  (with jitter, capped), logging one warning when the outage starts, a reminder every
  ``report_every_s`` and an info line when writes recover;
* an error that *is* a record's fault (constraint, bad value) → the batch is retried one
  record at a time, so only the bad record is dropped, with an error naming it;
* the queue is bounded (``max_pending``): past it, new records are refused and counted,
  with a warning that says how many were lost, rather than letting a long outage eat
  the process's memory and take live calls down with it.
"""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice

from bridge.store.base import Backend, Statement

log = logging.getLogger("bridge.store")


@dataclass(frozen=True)
class WriterStats:
    """Counters for health checks, metrics and tests."""

    submitted: int
    written: int
    batches: int
    retries: int
    pending: int
    dropped_overflow: int
    dropped_bad: int
    failing: bool


class WriteBehind:
    """A bounded in-memory queue of statements, written by one background task."""

    def __init__(
        self,
        backend: Backend,
        *,
        max_pending: int = 100_000,
        batch_size: int = 500,
        retry_initial_s: float = 0.05,
        retry_max_s: float = 5.0,
        report_every_s: float = 30.0,
        linger_s: float = 0.2,
    ) -> None:
        if max_pending < 1 or batch_size < 1:
            raise ValueError("max_pending and batch_size must be at least 1")
        self._backend = backend
        self._max_pending = max_pending
        self._batch_size = batch_size
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = retry_max_s
        self._report_every_s = report_every_s
        # Waiting a moment after the first record lets a busy bridge commit many calls'
        # records in one transaction instead of one thread hop and commit per record.
        self._linger_s = linger_s
        self._queue: deque[Statement] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread: int | None = None
        self._wake: asyncio.Event | None = None
        self._progress: asyncio.Condition | None = None
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        self._closed = False
        self._submitted = 0
        self._written = 0
        self._batches = 0
        self._retries = 0
        self._dropped_overflow = 0
        self._dropped_bad = 0
        self._failing_since: float | None = None
        self._last_report = 0.0
        self._last_overflow_report = 0.0
        self._overflow_reported_count = 0

    # ----------------------------------------------------------------- audio-path side

    def submit(self, statement: Statement) -> None:
        """Queue one write.  Never blocks, never raises for database trouble."""
        if self._closed:
            log.error("store is closed; %s not written", statement.what)
            self._dropped_overflow += 1
            return
        if len(self._queue) >= self._max_pending:
            self._overflow(statement)
            return
        self._queue.append(statement)
        self._submitted += 1
        self._poke()

    def _poke(self) -> None:
        wake, loop = self._wake, self._loop
        if wake is None or loop is None or wake.is_set():
            return
        if threading.get_ident() == self._loop_thread:
            wake.set()
        else:
            loop.call_soon_threadsafe(wake.set)

    def _overflow(self, statement: Statement) -> None:
        self._dropped_overflow += 1
        now = time.monotonic()
        if self._overflow_reported_count == 0 or now - self._last_overflow_report >= 10.0:
            log.warning(
                "call-record queue is full (%d records waiting for the database at %s); "
                "dropping new records: %d lost so far, latest %s",
                len(self._queue),
                self._backend.display_url,
                self._dropped_overflow,
                statement.what,
            )
            self._last_overflow_report = now
            self._overflow_reported_count = self._dropped_overflow

    # ------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        """Start the background task on the running loop.  Idempotent."""
        if self._task is not None:
            return
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._wake = asyncio.Event()
        self._progress = asyncio.Condition()
        self._closing = False
        self._task = asyncio.create_task(self._run(), name="bridge-store-writer")
        if self._queue:
            self._wake.set()

    @property
    def stats(self) -> WriterStats:
        return WriterStats(
            submitted=self._submitted,
            written=self._written,
            batches=self._batches,
            retries=self._retries,
            pending=len(self._queue),
            dropped_overflow=self._dropped_overflow,
            dropped_bad=self._dropped_bad,
            failing=self._failing_since is not None,
        )

    def _done(self) -> int:
        return self._written + self._dropped_bad

    async def flush(self, timeout: float = 5.0) -> bool:
        """Wait until everything submitted so far is written (or dropped as bad).

        Returns False on timeout (e.g. the database is still down); nothing is lost then,
        the records stay queued.
        """
        target = self._submitted
        if self._done() >= target:
            return True
        if self._progress is None:
            return False
        progress = self._progress

        async def reached() -> None:
            async with progress:
                await progress.wait_for(lambda: self._done() >= target)

        try:
            await asyncio.wait_for(reached(), timeout)
        except TimeoutError:
            return False
        return True

    async def close(self, timeout: float) -> bool:
        """Write what is queued (waiting at most ``timeout``), then stop the task.

        Returns True when nothing was left behind.  Whatever is still queued at the
        deadline is lost, and said so loudly, because the process is going away.
        """
        if self._closed:
            return not self._queue
        self._closing = True
        self._closed = True
        task = self._task
        if task is None:
            left = len(self._queue)
            if left:
                log.error("store closed before it started: %d call records not written", left)
            return left == 0
        if self._wake is not None:
            self._wake.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), timeout)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        finally:
            self._task = None
        left = len(self._queue)
        if left:
            log.error(
                "store closed with %d call records not written to %s (database unreachable "
                "for %.1f s at shutdown); they are lost",
                left,
                self._backend.display_url,
                timeout,
            )
        return left == 0

    # ------------------------------------------------------------- background task

    async def _run(self) -> None:
        assert self._wake is not None
        delay = self._retry_initial_s
        while True:
            if not self._queue:
                if self._closing:
                    return
                self._wake.clear()
                if not self._queue and not self._closing:
                    await self._wake.wait()
                    if self._linger_s and not self._closing:
                        await asyncio.sleep(self._linger_s)
                continue
            batch = list(islice(self._queue, self._batch_size))
            try:
                await self._backend.execute(batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self._backend.is_bad_record(exc):
                    if not await self._write_one_by_one(batch):
                        delay = await self._backoff(exc, delay)
                    else:
                        delay = self._retry_initial_s
                else:
                    delay = await self._backoff(exc, delay)
                continue
            self._committed(len(batch))
            delay = self._retry_initial_s
            await self._notify()

    def _committed(self, count: int) -> None:
        for _ in range(count):
            self._queue.popleft()
        self._written += count
        self._batches += 1
        if self._failing_since is not None:
            log.info(
                "call-record writes to %s recovered after %.1f s and %d retries; "
                "%d records still queued",
                self._backend.display_url,
                time.monotonic() - self._failing_since,
                self._retries,
                len(self._queue),
            )
            self._failing_since = None

    async def _notify(self) -> None:
        if self._progress is not None:
            async with self._progress:
                self._progress.notify_all()

    async def _write_one_by_one(self, batch: Sequence[Statement]) -> bool:
        """Isolate the bad record(s) of a failed batch; False if the outage is general."""
        for statement in batch:
            try:
                await self._backend.execute([statement])
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not self._backend.is_bad_record(exc):
                    return False
                self._queue.popleft()
                self._dropped_bad += 1
                log.error(
                    "dropping call record %s: the database rejected it (%s)",
                    statement.what,
                    self._backend.describe(exc),
                )
            else:
                self._committed(1)
            await self._notify()
        return True

    async def _backoff(self, exc: BaseException, delay: float) -> float:
        """Log (rate-limited), sleep ``delay`` with jitter, return the next delay."""
        self._retries += 1
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
            self._last_report = now
            log.warning(
                "cannot write call records to %s (%s); keeping %d in memory and retrying",
                self._backend.display_url,
                self._backend.describe(exc),
                len(self._queue),
            )
        elif now - self._last_report >= self._report_every_s:
            self._last_report = now
            log.warning(
                "still cannot write call records to %s after %.0f s (%s); %d queued (limit %d)",
                self._backend.display_url,
                now - self._failing_since,
                self._backend.describe(exc),
                len(self._queue),
                self._max_pending,
            )
        await asyncio.sleep(delay * random.uniform(0.8, 1.2))
        return min(self._retry_max_s, delay * 2)
