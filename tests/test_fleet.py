"""The bridge as a fleet: two ``python -m bridge serve`` replicas behind a real HAProxy.

Everything is real and on loopback: the replicas are subprocesses started through the
CLI, the balancer is the OS's HAProxy, the call records and the stream-token ledger are
a throwaway PostgreSQL server (``tests/conftest_pg.py``), the model is the Realtime
simulator and the phone is the simulated Twilio caller.  Marked ``e2e`` (slow); run the
rest with ``python -m pytest -m "not e2e"``.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.sim.twilio_caller import CallResult, TwilioCaller
from tests.conftest_pg import PostgresServer
from tests.fleet import HAProxy, Replica, free_port, haproxy_binary, incoming_call

pytestmark = pytest.mark.e2e

API_KEY = "sk-fleet-simulator-key"
CALLER = [(200, "caller_question")]


class Fleet:
    """Two replicas, HAProxy in front, one PostgreSQL database shared by both."""

    def __init__(
        self, sim: RealtimeSimulator, database_url: str, *, replica_urls: bool, grace_s: float
    ) -> None:
        self.sim = sim
        self.database_url = database_url
        self.auth_token = secrets.token_hex(16)
        self.lb_port = free_port()
        self.public_url = f"http://127.0.0.1:{self.lb_port}"
        self.replicas: dict[str, Replica] = {}
        for name in ("a", "b"):
            env = {
                "OPENAI_API_KEY": API_KEY,
                "OPENAI_REALTIME_URL": sim.url,
                "PUBLIC_URL": self.public_url,
                "TWILIO_AUTH_TOKEN": self.auth_token,
                "DATABASE_URL": database_url,
                "LOG_FORMAT": "json",
                "LOG_LEVEL": "info",
            }
            if replica_urls:
                env["BRIDGE_REPLICA_STREAM_URL"] = (
                    f"ws://127.0.0.1:{self.lb_port}/r/{name}/media-stream"
                )
            self.replicas[name] = Replica(name, env, grace_s=grace_s)
        self.lb: HAProxy | None = None

    async def start(self, binary: str) -> None:
        for replica in self.replicas.values():
            replica.start()
        await asyncio.gather(*(asyncio.to_thread(r.wait_ready) for r in self.replicas.values()))
        self.lb = HAProxy(binary, self.lb_port, {n: r.port for n, r in self.replicas.items()})
        await asyncio.to_thread(self.lb.wait_ready)

    def stop(self) -> None:
        if self.lb is not None:
            self.lb.stop()
        for replica in self.replicas.values():
            replica.stop()

    async def webhook(self, call_sid: str | None = None) -> tuple[int, str, dict[str, str], str]:
        sid = call_sid or "CA" + secrets.token_hex(16)
        status, url, params = await asyncio.to_thread(
            incoming_call, self.public_url, self.public_url, self.auth_token, sid
        )
        return status, url, params, sid

    async def call(self, duration_ms: float = 3000, **caller: Any) -> tuple[TwilioCaller, str]:
        """A call through the balancer: the caller (not yet run) and the replica named in
        its stream URL ("?" when replicas share the public stream URL)."""
        status, url, params, sid = await self.webhook()
        assert status == 200 and url, f"webhook answered {status}"
        replica = next((n for n in self.replicas if f"/r/{n}/" in url), "?")
        twilio = TwilioCaller(
            url=url,
            call_sid=sid,
            custom_parameters=params,
            auth_token=self.auth_token,
            script=CALLER,
            duration_ms=duration_ms,
            **caller,
        )
        return twilio, replica

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float:
        return sum(
            r.metric(name, labels)
            for r in self.replicas.values()
            if r.process and r.process.poll() is None
        )


FleetFactory = Callable[..., Awaitable[Fleet]]


@pytest.fixture
async def fleet(pg_server: PostgresServer) -> AsyncIterator[FleetFactory]:
    binary = haproxy_binary()
    if binary is None:
        pytest.skip("HAProxy is not installed (.ci/run installs it with apt-get)")
    made: list[Fleet] = []
    async with RealtimeSimulator(script=["agent_reply"], api_key=API_KEY) as sim:

        async def make(*, replica_urls: bool = True, grace_s: float = 10.0) -> Fleet:
            fleet = Fleet(
                sim, pg_server.create_database(), replica_urls=replica_urls, grace_s=grace_s
            )
            made.append(fleet)
            await fleet.start(binary)
            return fleet

        try:
            yield make
        finally:
            for fleet in made:
                fleet.stop()
            if not pg_server.running:
                pg_server.start()


async def settled_records(
    database_url: str, sids: set[str], timeout: float = 10.0
) -> dict[str, tuple[str | None, int]]:
    """The records once every call in ``sids`` has its end reason (write-behind lags)."""
    done: dict[str, tuple[str | None, int]] = {}
    for _ in range(int(timeout / 0.1)):
        done = await records(database_url)
        if sids <= set(done) and all(done[s][0] for s in sids):
            break
        await asyncio.sleep(0.1)
    return done


def succeeded(result: CallResult) -> bool:
    """The caller hung up itself after hearing the agent: a call that worked."""
    return result.closed_by == "caller" and result.outbound_bytes > 4000


async def records(database_url: str) -> dict[str, tuple[str | None, int]]:
    """call_sid -> (end reason, transcript lines), read straight from PostgreSQL."""
    import asyncpg

    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT c.call_sid, c.end_reason, COUNT(t.seq) AS turns FROM calls c "
            "LEFT JOIN turns t ON t.call_sid = c.call_sid GROUP BY c.call_sid, c.end_reason"
        )
    finally:
        await conn.close()
    return {r["call_sid"]: (r["end_reason"], int(r["turns"])) for r in rows}


async def test_calls_spread_across_replicas_succeed_and_hit_preconnect(
    fleet: FleetFactory,
) -> None:
    f = await fleet(replica_urls=True)
    placed = [await f.call() for _ in range(6)]
    results = await asyncio.gather(*(c.run() for c, _ in placed))
    assert all(succeeded(r) for r in results)
    per_replica = {n: r.metric("bridge_calls_started_total") for n, r in f.replicas.items()}
    assert per_replica["a"] >= 1 and per_replica["b"] >= 1, per_replica
    assert sum(per_replica.values()) == 6
    # Every stream reached the replica that pre-opened its model socket.
    assert f.metric("bridge_preconnect_total", {"result": "hit"}) == 6
    assert f.metric("bridge_preconnect_total", {"result": "miss"}) == 0
    # Each replica's own calls are in its JSON log with their ids on the call's lines.
    sids = {c.call_sid for c, _ in placed}
    for name, replica in f.replicas.items():
        lines = [json.loads(x) for x in replica.log().splitlines() if x.startswith("{")]
        logged = {e["call_sid"] for e in lines if e.get("call_sid")}
        mine = {c.call_sid for c, n in placed if n == name}
        assert mine <= logged and logged <= sids, (name, mine, logged)
        assert any(e.get("stream_sid") for e in lines if e.get("call_sid") in mine)
    done = await settled_records(f.database_url, sids)
    assert set(done) == sids and all(reason for reason, _ in done.values())


async def test_preconnect_hit_rate_without_replica_stream_urls(fleet: FleetFactory) -> None:
    """The measurement behind docs/deploy.md: one shared stream URL, round robin."""
    f = await fleet(replica_urls=False)
    placed = []
    for _ in range(6):  # as Twilio does it: each call's webhook, then its stream
        caller, _ = await f.call(duration_ms=3500)
        await caller.connect()
        placed.append((caller, "?"))
    results = await asyncio.gather(*(c.run() for c, _ in placed))
    assert all(succeeded(r) for r in results)
    hits = f.metric("bridge_preconnect_total", {"result": "hit"})
    misses = f.metric("bridge_preconnect_total", {"result": "miss"})
    print(f"pre-connect with a shared stream URL: {hits:.0f} hits / {hits + misses:.0f}")
    assert hits + misses == 6
    # Round robin alternates replicas between each call's webhook and its stream, so the
    # stream lands on the other replica every time: the pre-opened socket is wasted.
    assert hits < 6


async def test_token_used_through_a_is_refused_on_b(fleet: FleetFactory) -> None:
    f = await fleet(replica_urls=True)
    first, used_on = await f.call(duration_ms=3000)
    assert succeeded(await first.run())
    other = "b" if used_on == "a" else "a"
    connections = len(f.sim.connections)
    # The same start message (token included) on the other replica, with a valid upgrade
    # signature for that replica's stream URL: only the shared ledger can refuse it.
    replay_url = first.url.replace(f"/r/{used_on}/", f"/r/{other}/")
    replay = TwilioCaller(
        url=replay_url,
        call_sid=first.call_sid,
        custom_parameters=first.custom_parameters,
        auth_token=f.auth_token,
        script=CALLER,
        duration_ms=3000,
    )
    result = await replay.run()
    assert result.closed_by == "server" and result.outbound_bytes == 0
    rejected = f.replicas[other].metric(
        "bridge_calls_rejected_total", {"reason": "stream_token_replayed"}
    )
    assert rejected == 1
    assert len(f.sim.connections) == connections, "the model was contacted for a replay"


async def test_sigterm_drains_one_replica_while_the_other_takes_new_calls(
    fleet: FleetFactory,
) -> None:
    f = await fleet(replica_urls=True, grace_s=10.0)
    live: list[tuple[TwilioCaller, str]] = []
    while not any(n == "a" for _, n in live):
        live.append(await f.call(duration_ms=3500))
    running = [asyncio.create_task(c.run()) for c, _ in live]
    await asyncio.sleep(1.0)
    a = f.replicas["a"]
    a.signal(signal.SIGTERM)
    await asyncio.sleep(0.5)  # two health-check intervals
    fresh = [await f.call(duration_ms=3000) for _ in range(3)]
    assert [n for _, n in fresh] == ["b", "b", "b"]
    fresh_results = await asyncio.gather(*(c.run() for c, _ in fresh))
    assert all(succeeded(r) for r in fresh_results)
    live_results = await asyncio.gather(*running)
    assert all(succeeded(r) for r in live_results), [r.closed_by for r in live_results]
    assert a.process is not None
    assert await asyncio.to_thread(a.process.wait, 15) == 0
    done = await settled_records(f.database_url, {c.call_sid for c, _ in live})
    for caller, _ in live:
        assert done[caller.call_sid][0] not in (None, "shutdown")


async def test_kill_9_ends_only_the_killed_replicas_calls(fleet: FleetFactory) -> None:
    f = await fleet(replica_urls=True)
    placed: list[tuple[TwilioCaller, str]] = []
    while {n for _, n in placed} != {"a", "b"} or len(placed) < 4:
        placed.append(await f.call(duration_ms=4000))
    running = [asyncio.create_task(c.run()) for c, _ in placed]
    await asyncio.sleep(1.5)
    f.replicas["a"].signal(signal.SIGKILL)
    results = await asyncio.gather(*running)
    for (_, name), result in zip(placed, results, strict=True):
        if name == "a":
            assert result.closed_by in ("network", "abort", "server"), result.closed_by
            assert not succeeded(result)
        else:
            assert succeeded(result), (result.closed_by, result.outbound_bytes)
    await asyncio.sleep(0.5)
    after, name = await f.call(duration_ms=3000)
    assert name == "b" and succeeded(await after.run())


async def test_postgres_outage_during_calls_loses_no_record(
    fleet: FleetFactory, pg_server: PostgresServer
) -> None:
    f = await fleet(replica_urls=True)
    placed: list[tuple[TwilioCaller, str]] = []
    while {n for _, n in placed} != {"a", "b"}:
        placed.append(await f.call(duration_ms=3000))
    running = [asyncio.create_task(c.run()) for c, _ in placed]
    await asyncio.sleep(1.0)
    await asyncio.to_thread(pg_server.stop, "immediate")
    # Fail closed: without the shared ledger a new stream cannot be proven single-use.
    refused, _ = await f.call(duration_ms=1000)
    assert (await refused.run()).closed_by == "server"
    assert f.metric("bridge_calls_rejected_total", {"reason": "stream_token_unverifiable"}) == 1
    results = await asyncio.gather(*running)
    assert all(succeeded(r) for r in results)
    await asyncio.sleep(0.3)
    assert f.metric("bridge_store_pending_records") > 0  # held in memory, not lost
    await asyncio.to_thread(pg_server.start)
    done = await settled_records(f.database_url, {c.call_sid for c, _ in placed}, 15.0)
    assert f.metric("bridge_store_pending_records") == 0
    for caller, _ in placed:
        reason, turns = done[caller.call_sid]
        assert reason and reason != "shutdown", reason
        assert turns >= 1
