"""Cost of the stream token check per call: process memory vs SQLite vs PostgreSQL.

    python bench/token_check.py [--calls 2000] [--postgres]

Each call mints a token and redeems it (HMAC checks plus the single-use claim), the
way ``BridgeServices.authorise`` does on a stream's ``start``.  The three ledgers run
in the same process, interleaved in rounds (A/B/C, repeated), so host-speed drift hits
them alike; quote the ratios.  ``--postgres`` starts the test suite's throwaway server
(tests/conftest_pg.py) on 127.0.0.1: a loopback round trip, no network.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bridge.store import open_backend  # noqa: E402
from bridge.store.claims import StoreClaims  # noqa: E402
from bridge.twilio.stream_token import LocalClaims, StreamTokens, TokenClaims  # noqa: E402


async def per_call_us(tokens: StreamTokens, claims: TokenClaims, calls: int) -> float:
    now = time.time()
    minted = [tokens.mint(f"CA{i:032x}", now) for i in range(calls)]
    started = time.perf_counter()
    for i, token in enumerate(minted):
        check = await tokens.redeem(token, f"CA{i:032x}", now, claims)
        assert check.ok, check
    return (time.perf_counter() - started) / calls * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--postgres", action="store_true")
    args = parser.parse_args()
    tokens = StreamTokens(b"b" * 32)
    ledgers: dict[str, TokenClaims] = {"memory": LocalClaims()}
    backends = []
    server = None
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = open_backend(f"sqlite:///{tmp}/bench.db")
        await sqlite.connect()
        backends.append(sqlite)
        ledgers["sqlite"] = StoreClaims(sqlite)
        if args.postgres:
            sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
            from tests.conftest_pg import PostgresServer, find_pg_bin

            bin_dir = find_pg_bin()
            assert bin_dir is not None, "no PostgreSQL binaries (bash .ci/postgres.sh)"
            server = PostgresServer(bin_dir)
            server.start()
            pg = open_backend(server.create_database())
            await pg.connect()
            backends.append(pg)
            ledgers["postgres"] = StoreClaims(pg)
        try:
            results: dict[str, list[float]] = {name: [] for name in ledgers}
            for _ in range(args.rounds):
                for name, claims in ledgers.items():
                    results[name].append(await per_call_us(tokens, claims, args.calls))
        finally:
            for backend in backends:
                await backend.close()
            if server is not None:
                server.destroy()
    base = statistics.median(results["memory"])
    for name, values in results.items():
        median = statistics.median(values)
        print(f"{name:9s} {median:8.1f} µs per call  ({median / base:5.1f}x memory)")


if __name__ == "__main__":
    asyncio.run(main())
