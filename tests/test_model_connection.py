"""Opening model connections: ahead of time, claimed once, never leaked; the fast send path."""

from __future__ import annotations

import asyncio

import pytest
from websockets.protocol import State

from bridge.config import Secret
from bridge.devtools.sim.realtime_faults import FaultPlan
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.metrics import Metrics
from bridge.realtime.connection import ModelConnectError, ModelConnector, ModelEndpoint, send_now
from bridge.realtime.dialects import dialect_for

pytestmark = pytest.mark.e2e

KEY = "sk-connection-test"


def endpoint(url: str, key: str = KEY) -> ModelEndpoint:
    return ModelEndpoint(
        url=url, model="gpt-realtime", dialect=dialect_for("ga"), api_key=Secret(key)
    )


async def test_preconnected_socket_is_handed_to_its_call_once() -> None:
    async with RealtimeSimulator(api_key=KEY) as sim:
        connector = ModelConnector(endpoint(sim.url))
        connector.preconnect("CA1")
        await sim.wait_for(lambda: sim.open_connections == 1, timeout=2)
        first = await connector.take("CA1")
        assert connector.warm_count == 0
        # A second take opens a new connection instead of sharing the first.
        second = await connector.take("CA1")
        assert first is not second and sim.open_connections == 2
        await first.close()
        await second.close()


async def test_unclaimed_preconnection_is_closed_after_its_ttl() -> None:
    async with RealtimeSimulator(api_key=KEY) as sim:
        connector = ModelConnector(endpoint(sim.url), warm_ttl_s=0.3)
        connector.preconnect("CA2")
        await sim.wait_for(lambda: sim.open_connections == 1, timeout=2)
        assert await sim.wait_for(lambda: sim.open_connections == 0, timeout=2)
        assert connector.warm_count == 0


async def test_failed_preconnection_falls_back_and_errors_never_show_the_key() -> None:
    async with RealtimeSimulator(api_key=KEY) as sim:
        connector = ModelConnector(endpoint(sim.url, key="sk-wrong-key-123"))
        connector.preconnect("CA3")
        try:
            await connector.take("CA3")
        except ConnectionError as exc:
            assert "401" in str(exc) and "sk-wrong-key-123" not in str(exc)
        else:
            raise AssertionError("a rejected key must not give a connection")


async def test_send_now_writes_when_open_and_declines_when_closing() -> None:
    async with RealtimeSimulator(api_key=KEY) as sim:
        connection = await endpoint(sim.url).open()
        assert send_now(connection, '{"type": "input_audio_buffer.clear"}')
        await sim.wait_for(
            lambda: "input_audio_buffer.clear" in sim.last_connection.received_types(), timeout=2
        )
        await connection.close()
        assert not send_now(connection, '{"type": "input_audio_buffer.clear"}')


async def test_unclaimed_preconnection_is_closed_within_its_ttl_and_counted() -> None:
    async with RealtimeSimulator(api_key=KEY) as sim:
        connector = ModelConnector(endpoint(sim.url), warm_ttl_s=0.3)
        connector.preconnect("CA4")
        await sim.wait_for(lambda: sim.open_connections == 1, timeout=2)
        await sim.wait_for(lambda: not sim.last_connection.is_open, timeout=2)
        record = sim.last_connection
        assert record.closed_at is not None and record.closed_at - record.opened_at < 0.3 + 0.3
        assert record.closed_by == "client"
        assert connector.stats["expired"] == 1 and connector.stats["used"] == 0
        metrics = Metrics(process=False)
        metrics.counts("model_preconnect", "pre-opened sockets", "outcome", lambda: connector.stats)
        text = metrics.render().decode()
        assert 'bridge_model_preconnect_total{outcome="expired"} 1' in text
        # Taking it after the TTL opens a fresh connection (the expired one is gone).
        fresh = await connector.take("CA4")
        assert sim.connection_count == 2 and fresh.state is State.OPEN
        await fresh.close()


async def test_preconnection_that_died_before_start_is_replaced_not_used() -> None:
    plan = FaultPlan(close_after_ms=50, close_code=1011, connections={1})
    async with RealtimeSimulator(api_key=KEY, faults=plan) as sim:
        connector = ModelConnector(endpoint(sim.url))
        connector.preconnect("CA5")
        await sim.wait_for(lambda: sim.connection_count == 1, timeout=2)
        await sim.wait_for(lambda: not sim.connections[0].is_open, timeout=2)
        await asyncio.sleep(0.05)  # the client side processes the close frame
        connection = await connector.take("CA5")
        assert sim.connection_count == 2
        assert connection.state is State.OPEN
        await sim.wait_for(lambda: sim.connections[1].is_open, timeout=2)
        # It really is the second server-side session: a message reaches connection 2.
        await connection.send('{"type": "input_audio_buffer.clear"}')
        await sim.wait_for(
            lambda: "input_audio_buffer.clear" in sim.connections[1].received_types(), timeout=2
        )
        assert connector.stats["dead_replaced"] == 1 and connector.stats["used"] == 0
        await connection.close()


async def test_preconnection_dropped_without_a_close_frame_is_replaced() -> None:
    async with RealtimeSimulator(api_key=KEY) as sim:
        connector = ModelConnector(endpoint(sim.url))
        connector.preconnect("CA6")
        await sim.wait_for(lambda: sim.open_connections == 1, timeout=2)
        # The network drops: the server's transport goes away without a close frame.
        live = next(iter(sim._live.values()))
        live.ws.transport.abort()
        await sim.wait_for(lambda: sim.open_connections == 0, timeout=2)
        await asyncio.sleep(0.05)
        connection = await connector.take("CA6")
        assert connection.state is State.OPEN and sim.connection_count == 2
        assert connector.stats["dead_replaced"] == 1
        await connection.close()


async def test_fatal_preconnect_failure_is_not_retried_at_take() -> None:
    async with RealtimeSimulator(api_key=KEY) as sim:
        connector = ModelConnector(endpoint(sim.url, key="sk-wrong"))
        connector.preconnect("CA7")
        try:
            await connector.take("CA7")
        except ModelConnectError as exc:
            assert exc.verdict.reason == "bad_api_key"
        else:
            raise AssertionError("a rejected key must not give a connection")
        assert sim.handshakes == 1  # 401 is not worth a second attempt
        plan = sim.faults
        plan.refuse(1, "unavailable")
        connector = ModelConnector(endpoint(sim.url))
        connector.preconnect("CA8")
        connection = await connector.take("CA8")  # 503 at pre-open, then a fresh attempt
        assert connection.state is State.OPEN and connector.stats["failed"] == 1
        await connection.close()
