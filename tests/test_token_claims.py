"""Single-use stream tokens through the shared store: SQLite and a real PostgreSQL.

Two :class:`StoreClaims` on two separate backends pointed at one database stand for two
replicas: a token claimed through one must be refused through the other.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from bridge.store import open_backend
from bridge.store.base import Backend
from bridge.store.claims import StoreClaims
from bridge.twilio.stream_token import LocalClaims, StreamTokens, TokenCheck
from tests.conftest_pg import PostgresServer

pytestmark = pytest.mark.e2e

SECRET = b"k" * 32
CALL = "CA" + "1" * 32


@pytest.fixture(params=["sqlite", "postgres"])
async def two_replicas(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Backend, Backend, Callable[[], None]]]:
    """Two backends on one database, and a function that takes the database away."""
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create_database()

        def outage() -> None:
            server.stop("immediate")

    else:
        server = None  # type: ignore[assignment]
        url = f"sqlite:///{tmp_path / 'fleet.db'}?timeout=0.2"
        locks: list[sqlite3.Connection] = []

        def outage() -> None:
            # Another process holding the write lock: the database cannot take a claim.
            holder = sqlite3.connect(tmp_path / "fleet.db", isolation_level=None)
            holder.execute("BEGIN EXCLUSIVE")
            locks.append(holder)

    a, b = open_backend(url), open_backend(url)
    await a.connect()
    await b.connect()
    try:
        yield a, b, outage
    finally:
        if request.param == "sqlite":
            for holder in locks:
                holder.close()
        await a.close()
        await b.close()
        if server is not None and not server.running:
            server.start()


async def test_a_token_claimed_on_one_replica_is_refused_on_the_other(
    two_replicas: tuple[Backend, Backend, Callable[[], None]],
) -> None:
    a, b, _ = two_replicas
    tokens_a, tokens_b = StreamTokens(SECRET), StreamTokens(SECRET)  # same derived key
    now = time.time()
    token = tokens_a.mint(CALL, now)
    assert await tokens_a.redeem(token, CALL, now, StoreClaims(a)) == TokenCheck(True)
    assert await tokens_b.redeem(token, CALL, now + 1, StoreClaims(b)) == TokenCheck(
        False, "replayed"
    )
    # A fresh token for the same call is fine on either replica.
    again = tokens_b.mint(CALL, now)
    assert (await tokens_b.redeem(again, CALL, now, StoreClaims(b))).ok
    # Forged or wrong-call tokens never reach the ledger.
    assert (await tokens_b.redeem(token, "CA" + "2" * 32, now, StoreClaims(b))).reason == (
        "wrong call"
    )


async def test_expired_claims_are_cleaned_up(
    two_replicas: tuple[Backend, Backend, Callable[[], None]],
) -> None:
    a, _, _ = two_replicas
    claims = StoreClaims(a)
    now_ms = 1_000_000
    for i in range(5):
        assert await claims.claim(f"id-{i}", now_ms + i * 1000, now_ms)
    assert not await claims.claim("id-0", now_ms + 1000, now_ms)
    assert await claims.clean(now_ms + 2500) == 2  # ids 3 and 4 are still live
    assert await claims.clean(now_ms + 10_000) == 0


async def test_ledger_outage_refuses_unless_local_fallback_is_chosen(
    two_replicas: tuple[Backend, Backend, Callable[[], None]],
) -> None:
    a, _, outage = two_replicas
    tokens = StreamTokens(SECRET)
    claims = StoreClaims(a, timeout_s=1.0)
    outage()
    now = time.time()
    refused = await tokens.redeem(tokens.mint(CALL, now), CALL, now, claims)
    assert refused == TokenCheck(False, "unverifiable")
    token = tokens.mint(CALL, now)
    assert (await tokens.redeem(token, CALL, now, claims, local_on_outage=True)).ok
    # Even in fallback, this replica's own memory still refuses a replay.
    again = await tokens.redeem(token, CALL, now, claims, local_on_outage=True)
    assert again == TokenCheck(False, "replayed")


async def test_local_claims_are_the_single_box_fallback() -> None:
    tokens, claims = StreamTokens(SECRET), LocalClaims()
    now = time.time()
    token = tokens.mint(CALL, now)
    assert (await tokens.redeem(token, CALL, now, claims)).ok
    # A second process with its own memory (and its own local cache) would accept it:
    # the documented reason a fleet needs the shared store.
    assert (await StreamTokens(SECRET).redeem(token, CALL, now, LocalClaims())).ok
