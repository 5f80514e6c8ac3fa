"""SQLite backend: stdlib ``sqlite3`` on one dedicated worker thread.

One thread owns the one connection, so sqlite3's threading rules are kept without locks
and the event loop never touches the disk.  WAL mode lets ``python -m bridge calls`` read
while the server writes; ``synchronous=NORMAL`` (safe with WAL: a power cut may lose the
last transactions, never corrupt the file) keeps commits cheap.  A writer that finds the
database locked waits ``busy_timeout_s`` and then fails; the write-behind queue retries.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from itertools import groupby
from typing import Any, TypeVar

from bridge.store import schema
from bridge.store.base import Backend, Statement
from bridge.store.errors import StoreError
from bridge.store.urls import SQLiteTarget, sqlite_target

T = TypeVar("T")


def _adapt(value: Any) -> Any:
    """Python values as SQLite stores them (timestamps as sortable ISO-8601 UTC text)."""
    if isinstance(value, datetime):
        moment = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return moment.isoformat(timespec="microseconds")
    return value


class SQLiteBackend(Backend):
    """A SQLite file (or ``:memory:``) behind a single-thread executor."""

    dialect = "sqlite"

    def __init__(self, url: str, *, busy_timeout_s: float | None = None) -> None:
        super().__init__(url)
        target = sqlite_target(url)
        if busy_timeout_s is not None:
            target = SQLiteTarget(target.path, busy_timeout_s)
        self.target = target
        self._conn: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None

    # All sqlite3 calls happen on the executor's single thread.
    async def _call(self, fn: Callable[[], T]) -> T:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bridge-sqlite")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn)

    def _open(self) -> sqlite3.Connection:
        if self._conn is not None:
            return self._conn
        conn = sqlite3.connect(
            self.target.path,
            timeout=self.target.busy_timeout_s,
            isolation_level=None,  # we issue BEGIN/COMMIT ourselves
            check_same_thread=False,  # only ever used from the one worker thread
        )
        try:
            conn.row_factory = sqlite3.Row
            if not self.target.in_memory:
                mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                if str(mode).lower() != "wal":
                    raise sqlite3.OperationalError(f"could not enable WAL (journal_mode={mode})")
                conn.execute("PRAGMA synchronous=NORMAL")
            # The bridge only appends call records; a large page cache buys nothing and
            # grows with the database (SQLite's default is 2 MiB), which showed up as
            # slowly rising RSS in 10-minute load runs (docs/performance.md).
            conn.execute("PRAGMA cache_size=-256")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn
        return conn

    def _migrate(self, conn: sqlite3.Connection) -> None:
        conn.execute("BEGIN IMMEDIATE")  # takes the write lock: one migrator at a time
        try:
            conn.execute(schema.render(schema.VERSION_TABLE, "sqlite"))
            current = conn.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
            for migration in schema.pending(current):
                for statement in migration.statements:
                    conn.execute(schema.render(statement, "sqlite"))
                conn.execute(
                    "INSERT INTO schema_version (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, _adapt(datetime.now(UTC))),
                )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def _drop_broken(self) -> None:
        """Forget a file connection after an I/O-level failure so the next try reopens it.

        An in-memory database *is* its connection, so that one is never dropped.
        """
        if self._conn is not None and not self.target.in_memory:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass
            self._conn = None

    async def connect(self) -> None:
        await self._call(self._open)

    async def execute(self, statements: Sequence[Statement]) -> None:
        def run() -> None:
            conn = self._open()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    for sql, group in groupby(statements, key=lambda s: s.sql):
                        conn.executemany(sql, [tuple(map(_adapt, s.params)) for s in group])
                    conn.execute("COMMIT")
                except BaseException:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.OperationalError:
                self._drop_broken()
                raise

        await self._call(run)

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        def run() -> list[dict[str, Any]]:
            try:
                rows = self._open().execute(sql, tuple(map(_adapt, params))).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"cannot read {self.display_url}: {self.describe(exc)}") from None
            return [dict(row) for row in rows]

        return await self._call(run)

    def is_bad_record(self, exc: BaseException) -> bool:
        # IntegrityError: a constraint; ProgrammingError/InterfaceError: a value of a type
        # sqlite3 cannot bind; OverflowError: an int beyond 64 bits.  OperationalError
        # (locked, cannot open, I/O error, disk full) is an outage and stays retryable.
        return isinstance(
            exc,
            sqlite3.IntegrityError
            | sqlite3.DataError
            | sqlite3.InterfaceError
            | sqlite3.ProgrammingError
            | OverflowError,
        )

    async def schema_version(self) -> int:
        rows = await self.fetch("SELECT MAX(version) AS v FROM schema_version")
        return int(rows[0]["v"] or 0)

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is None:
            return

        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(executor, shut)
        executor.shutdown(wait=False)
