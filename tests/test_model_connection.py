"""Opening model connections: ahead of time, claimed once, never leaked; the fast send path."""

from __future__ import annotations

from bridge.config import Secret
from bridge.realtime.connection import ModelConnector, ModelEndpoint, send_now
from bridge.realtime.dialects import dialect_for
from bridge.sim.realtime_server import RealtimeSimulator

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
