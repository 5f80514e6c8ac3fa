"""Softphone tickets are single-use across a fleet: two bridge instances on one database.

Each instance is a real bridge (``LocalBridge``: uvicorn on 127.0.0.1) sharing one
call-record database, SQLite file or a real PostgreSQL server.  A ticket redeemed on one
must be refused on the other; a database that does not answer must refuse the ticket
promptly, with a reason the page can show, rather than hang the handshake.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.operator.access import COOKIE_NAME
from tests.conftest_pg import PostgresServer

pytestmark = pytest.mark.e2e

TOKEN = "fleet-operator-credential-0123456789"
Hang = Callable[[], contextlib.AbstractContextManager[None]]


def _postgres_pids(server: PostgresServer) -> list[int]:
    """The test cluster's postmaster and its children (all started by the fixture)."""
    master = int((server.data_dir / "postmaster.pid").read_text().split()[0])
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == master:
                children.append(int(stat.parent.name))
    return [master, *children]


@pytest.fixture(params=["sqlite", "postgres"])
def fleet_db(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Hang]:
    """A database URL two instances share, and a way to make it stop answering."""
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database()

        @contextlib.contextmanager
        def hang() -> Iterator[None]:
            pids = _postgres_pids(server)  # frozen, not killed: connections stay open
            for pid in pids:
                os.kill(pid, signal.SIGSTOP)
            try:
                yield
            finally:
                for pid in pids:
                    os.kill(pid, signal.SIGCONT)

        return url, hang

    path = tmp_path / "fleet.db"

    @contextlib.contextmanager
    def locked() -> Iterator[None]:
        holder = sqlite3.connect(path, isolation_level=None)  # another process's write lock
        holder.execute("BEGIN EXCLUSIVE")
        try:
            yield
        finally:
            holder.close()

    return f"sqlite:///{path}?timeout=0.5", locked


def _env(url: str) -> dict[str, str]:
    return {"OPENAI_API_KEY": "sk-fleet", "BRIDGE_OPERATOR_TOKEN": TOKEN, "DATABASE_URL": url}


async def _tickets(bridge: LocalBridge, n: int) -> tuple[list[str], dict[str, str]]:
    async with httpx.AsyncClient(base_url=bridge.base_url) as client:
        assert (await client.post("/login", data={"token": TOKEN})).status_code in (200, 303)
        tickets = [(await client.post("/softphone/ticket")).json()["ticket"] for _ in range(n)]
        return tickets, {"Cookie": f"{COOKIE_NAME}={client.cookies[COOKIE_NAME]}"}


async def _admitted(bridge: LocalBridge, ticket: str, cookie: dict[str, str]) -> bool:
    url = f"ws://127.0.0.1:{bridge.port}/softphone/ws?ticket={ticket}"
    try:
        async with connect(url, additional_headers=cookie):
            return True
    except InvalidStatus as refused:
        assert refused.response.status_code == 403
        return False


async def test_a_ticket_redeemed_on_one_instance_is_refused_on_the_other(
    fleet_db: tuple[str, Hang],
) -> None:
    url, _ = fleet_db
    async with LocalBridge("ws://127.0.0.1:9/unused", env=_env(url)) as a, \
            LocalBridge("ws://127.0.0.1:9/unused", env=_env(url)) as b:
        (first, second), cookie = await _tickets(a, 2)  # the cookie is valid fleet-wide
        assert await _admitted(b, first, cookie)
        assert not await _admitted(a, first, cookie)
        assert not await _admitted(b, first, cookie)
        assert await _admitted(a, second, cookie)
        assert not await _admitted(b, second, cookie)


async def test_a_database_that_does_not_answer_refuses_the_ticket_promptly(
    fleet_db: tuple[str, Hang],
) -> None:
    url, hang = fleet_db
    async with LocalBridge("ws://127.0.0.1:9/unused", env=_env(url)) as a:
        (ticket, later), cookie = await _tickets(a, 2)
        ws_url = f"ws://127.0.0.1:{a.port}/softphone/ws?ticket="
        with hang():
            started = time.monotonic()
            async with connect(ws_url + ticket, additional_headers=cookie) as ws:
                with pytest.raises(ConnectionClosed) as closed:
                    await ws.recv()
            elapsed = time.monotonic() - started
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1013
        assert "database is not answering" in closed.value.rcvd.reason
        assert elapsed < 8, elapsed  # the ledger's own bound (2 s), not a hang
        # Once the database answers again, tickets work (and the refused one was not used).
        assert await _admitted(a, later, cookie)
        assert await _admitted(a, ticket, cookie)
