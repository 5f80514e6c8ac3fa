"""PostgreSQL backend via ``asyncpg`` (imported lazily: SQLite users need not install it).

A small pool serves the writer and reads.  After a server restart the pool's idle
connections are dead; the first statement on one fails with a connection error, which
the writer retries, and asyncpg replaces the connection on the next acquire.  Schema
migrations take a transaction-scoped advisory lock so that several bridge instances
starting together migrate one at a time.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from itertools import groupby
from types import ModuleType
from typing import Any

from bridge.store import schema
from bridge.store.base import Backend, Statement
from bridge.store.errors import StoreError

# SQLSTATE classes that mean "this row is wrong" (22 data exception, 23 integrity
# constraint violation).  Everything else (08 connection, 53 resources, 57 operator
# intervention such as shutdown, 40 rollback, ...) is treated as an outage and retried.
_BAD_RECORD_CLASSES = ("22", "23")
_PLACEHOLDER = re.compile(r"\?")


def import_asyncpg(display_url: str) -> ModuleType:
    """asyncpg, or a :class:`StoreError` that says how to get it."""
    try:
        import asyncpg
    except ImportError:
        raise StoreError(
            f"DATABASE_URL {display_url!r} selects PostgreSQL, but the 'asyncpg' package is "
            "not installed; install it with: pip install 'twilio-realtime-bridge[postgres]' "
            "(or pip install asyncpg)"
        ) from None
    return asyncpg


def numbered(sql: str) -> str:
    """``?`` placeholders as PostgreSQL's ``$1, $2, …`` (our SQL has no literal ``?``)."""
    counter = iter(range(1, 10_000))
    return _PLACEHOLDER.sub(lambda _: f"${next(counter)}", sql)


class PostgresBackend(Backend):
    """``postgresql://user:pass@host:port/db`` (or ``postgres://``) through an asyncpg pool."""

    dialect = "postgres"

    def __init__(
        self,
        url: str,
        *,
        connect_timeout_s: float = 5.0,
        command_timeout_s: float = 30.0,
        pool_size: int = 4,
    ) -> None:
        super().__init__(url)
        self._asyncpg = import_asyncpg(self.display_url)
        # asyncpg accepts the libpq forms; normalise "postgresql+asyncpg://" etc.
        self._dsn = re.sub(r"^postgres(ql)?(\+\w+)?://", "postgresql://", url)
        self._connect_timeout_s = connect_timeout_s
        self._command_timeout_s = command_timeout_s
        self._pool_size = pool_size
        self._pool: Any = None
        self._pool_lock = asyncio.Lock()
        self._sql: dict[str, str] = {}

    def _numbered(self, sql: str) -> str:
        cached = self._sql.get(sql)
        if cached is None:
            cached = self._sql[sql] = numbered(sql)
        return cached

    async def _get_pool(self) -> Any:
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:  # the writer and a read may both arrive first
            if self._pool is None:
                self._pool = await self._create_pool()
            return self._pool

    async def _create_pool(self) -> Any:
        try:
            pool = await self._asyncpg.create_pool(
                self._dsn,
                min_size=1,
                max_size=self._pool_size,
                timeout=self._connect_timeout_s,
                command_timeout=self._command_timeout_s,
            )
        except Exception as exc:
            # The driver's message may quote the DSN; re-raise a scrubbed copy of the
            # same type so classification still works, without chaining the original.
            raise _scrubbed(exc, self.describe(exc)) from None
        try:
            async with pool.acquire() as conn, conn.transaction():
                await self._migrate(conn)
        except BaseException:
            pool.terminate()
            raise
        return pool

    async def _migrate(self, conn: Any) -> None:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", schema.POSTGRES_MIGRATION_LOCK)
        await conn.execute(schema.render(schema.VERSION_TABLE, "postgres"))
        current = await conn.fetchval("SELECT MAX(version) FROM schema_version")
        for migration in schema.pending(current):
            for statement in migration.statements:
                await conn.execute(schema.render(statement, "postgres"))
            await conn.execute(
                "INSERT INTO schema_version (version, name, applied_at) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                datetime.now(UTC),
            )

    async def connect(self) -> None:
        await self._get_pool()

    async def execute(self, statements: Sequence[Statement]) -> None:
        pool = await self._get_pool()
        async with pool.acquire() as conn, conn.transaction():
            for sql, group in groupby(statements, key=lambda s: s.sql):
                await conn.executemany(self._numbered(sql), [s.params for s in group])

    async def fetch(self, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
        try:
            pool = await self._get_pool()
            async with pool.acquire() as conn:
                rows = await conn.fetch(self._numbered(sql), *params)
        except (
            OSError,
            TimeoutError,
            self._asyncpg.PostgresError,
            self._asyncpg.InterfaceError,
        ) as exc:
            raise StoreError(f"cannot read {self.display_url}: {self.describe(exc)}") from None
        return [dict(row) for row in rows]

    def is_bad_record(self, exc: BaseException) -> bool:
        if isinstance(exc, self._asyncpg.DataError):  # a value asyncpg cannot encode
            return True
        if isinstance(exc, self._asyncpg.PostgresError):
            state = getattr(exc, "sqlstate", None) or ""
            return state[:2] in _BAD_RECORD_CLASSES
        return False

    async def schema_version(self) -> int:
        rows = await self.fetch("SELECT MAX(version) AS v FROM schema_version")
        return int(rows[0]["v"] or 0)

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self._connect_timeout_s)
            except Exception:  # a hung or broken connection must not block shutdown
                pool.terminate()


def _scrubbed(exc: Exception, message: str) -> Exception:
    """An exception of ``exc``'s class (when constructible) carrying only ``message``."""
    try:
        clone = type(exc)(message)
    except Exception:
        return StoreError(message)
    return clone if isinstance(clone, Exception) else StoreError(message)
