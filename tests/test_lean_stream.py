"""The lean Media Streams path (``bridge.web.lean_stream``): same checks, same calls.

Two halves.  The lean path is ``serve``'s default, so every whole-call test runs on it;
here the whole-call tests of ``test_e2e`` are rerun unchanged on the ASGI route
(``BRIDGE_STREAM_SERVER=asgi``, via ``LocalBridge.lean_stream_default``), so every mark,
clear, truncate, token and hang-up behaviour holds on both; each rerun asserts which path
accepted the stream.  Then what only the lean path does by itself: its
handshake refusals, the 1009 frame limit, pings, the other routes on the same port, and
the ``CallerSocket`` contract of :class:`LeanCallerSocket` and of the ASGI adapter.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.websockets import WebSocket
from websockets.client import ClientProtocol
from websockets.frames import Close, Opcode
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from bridge.call.asgi_socket import AsgiCallerSocket
from bridge.call.leg import CallerSocket
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.sim.twilio_caller import twilio_signature
from bridge.web.caller_socket import LeanCallerSocket
from bridge.web.lean_stream import LeanStreamProtocol
from tests import test_e2e as e2e

API_KEY = e2e.API_KEY


@pytest.fixture
def asgi(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LocalBridge, "lean_stream_default", False)


async def _on_asgi(test: Callable[[], Awaitable[None]]) -> None:
    before = LeanStreamProtocol.streams_accepted
    await test()
    assert LeanStreamProtocol.streams_accepted == before, "the lean path was used"


# ------------------------------------------------------- the default is the lean path

@pytest.mark.e2e  # a whole call, seconds long
async def test_whole_calls_use_the_lean_path_by_default() -> None:
    """``serve``'s default (``BRIDGE_STREAM_SERVER=lean``) is what every e2e test runs on."""
    before = LeanStreamProtocol.streams_accepted
    await e2e.test_call_with_greeting_question_barge_in_and_hang_up("ga", "passthrough")
    assert LeanStreamProtocol.streams_accepted == before + 1


# ------------------------------------------- whole calls, rerun on the ASGI route

WHOLE_CALLS: dict[str, Callable[[], Awaitable[None]]] = {
    "barge_in_passthrough": lambda: e2e.test_call_with_greeting_question_barge_in_and_hang_up(
        "ga", "passthrough"),
    "barge_in_pcm16": lambda: e2e.test_call_with_greeting_question_barge_in_and_hang_up(
        "ga", "pcm16"),
    "model_close": e2e.test_model_socket_closing_ends_the_call_cleanly_when_reconnect_is_off,
    "bad_input": e2e.test_bad_input_is_survived_and_another_call_is_unaffected,
    "stream_token": e2e.test_stream_token_is_checked_before_any_model_connection,
    "unsigned_refused": e2e.test_unsigned_requests_never_reach_the_model,
    "abrupt_disconnect":
        e2e.test_abrupt_caller_disconnect_closes_the_model_socket_within_a_second,
    "oversized_frame": e2e.test_oversized_frame_closes_only_that_call_with_a_clear_code,
    "concurrent_calls": e2e.test_concurrent_calls_keep_their_own_barge_in_accounting,
}


@pytest.mark.e2e  # a whole call, seconds long
@pytest.mark.parametrize("name", list(WHOLE_CALLS))
async def test_e2e_whole_call_on_the_asgi_route(asgi: None, name: str) -> None:
    await _on_asgi(WHOLE_CALLS[name])


# ------------------------------------------------------------ the lean handshake

async def test_bad_signature_is_refused_before_accept_and_counted() -> None:
    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    async with sim, LocalBridge(sim.url, env={"OPENAI_API_KEY": API_KEY},
                                lean_stream=True) as bridge:
        url = bridge.settings.stream_url
        assert url is not None
        wrong = twilio_signature("f" * 32, url)
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers={"x-twilio-signature": wrong}):
                pass
        assert refused.value.response.status_code == 403
        rejected = bridge.services.metrics.value
        assert rejected("bridge_calls_rejected_total", {"reason": "bad_ws_signature"}) == 1
        # Signed over another URL (a query added): refused too, as on the ASGI route.
        other = twilio_signature(bridge.auth_token, url + "?x=1")
        with pytest.raises(websockets.InvalidStatus):
            async with websockets.connect(url, additional_headers={"x-twilio-signature": other}):
                pass
        assert rejected("bridge_calls_rejected_total", {"reason": "bad_ws_signature"}) == 2
        assert not sim.connections


async def test_draining_refuses_new_streams_and_other_routes_still_answer() -> None:
    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    async with sim, LocalBridge(sim.url, env={"OPENAI_API_KEY": API_KEY},
                                lean_stream=True) as bridge:
        url = bridge.settings.stream_url
        assert url is not None
        signed = {"x-twilio-signature": twilio_signature(bridge.auth_token, url)}
        async with httpx.AsyncClient(base_url=bridge.base_url) as http:
            assert (await http.get("/healthz")).status_code == 200
            bridge.services.draining = True
            assert (await http.get("/healthz")).status_code == 503
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=signed):
                pass
        assert refused.value.response.status_code == 403
        bridge.services.draining = False
        before = LeanStreamProtocol.streams_accepted
        async with websockets.connect(url, additional_headers=signed) as ws:
            await ws.ping()  # answered by the lean socket's protocol
        assert LeanStreamProtocol.streams_accepted == before + 1


@pytest.mark.e2e  # a whole call, seconds long
@pytest.mark.parametrize("lean", [True, False], ids=["lean", "asgi"])
async def test_a_draining_bridge_still_takes_the_stream_of_a_call_it_answered(
    lean: bool,
) -> None:
    """SIGTERM between the webhook's answer and the stream's upgrade: Twilio connects
    that stream here anyway, so the drain waits for it and the call is served; a new
    webhook gets 503, and an upgrade with no answered call behind it is refused."""
    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    async with sim, LocalBridge(sim.url, env={"OPENAI_API_KEY": API_KEY},
                                lean_stream=lean) as bridge:
        caller = await bridge.place_call(script=[(300, "caller_question")], duration_ms=6000)
        drain = asyncio.create_task(bridge.services.drain(20))  # what SIGTERM starts
        await asyncio.sleep(0.3)
        assert not drain.done(), "the drain must wait for the answered call's stream"
        status, _ = await bridge.post_webhook(
            "/twiml", {"CallSid": "CA" + "5" * 32, "From": "+1", "To": "+2"})
        assert status == 503
        result = await caller.run()
        assert result.media_messages_received > 0 and not result.violations
        assert result.closed_by == "caller"  # it ran its script to the end
        await asyncio.wait_for(drain, 5)
        url = bridge.settings.stream_url
        assert url is not None
        signed = {"x-twilio-signature": twilio_signature(bridge.auth_token, url)}
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=signed):
                pass
        assert refused.value.response.status_code == 403


async def test_oversized_frame_closes_with_1009() -> None:
    sim = RealtimeSimulator(script=["agent_short"], api_key=API_KEY)
    env = {"OPENAI_API_KEY": API_KEY, "BRIDGE_MAX_MESSAGE_BYTES": "4096"}
    async with sim, LocalBridge(sim.url, env=env, lean_stream=True) as bridge:
        url = bridge.settings.stream_url
        assert url is not None
        signed = {"x-twilio-signature": twilio_signature(bridge.auth_token, url)}
        async with websockets.connect(url, additional_headers=signed, max_size=None) as ws:
            await ws.send("x" * 5000)
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 5)
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        assert not sim.connections


# ------------------------------------------------------- the CallerSocket contract

class _LeanEcho(asyncio.Protocol):
    """Scaffolding: a bare handshake, then the LeanCallerSocket under test runs ``handler``."""

    def __init__(self, handler: Callable[[LeanCallerSocket], Awaitable[None]],
                 **socket_options: Any) -> None:
        self.handler = handler
        self.socket_options = socket_options
        self.ws = ServerProtocol(max_size=4096)
        self.sock: LeanCallerSocket | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if self.sock is not None:
            self.sock.feed(data)
            return
        self.ws.receive_data(data)
        for event in self.ws.events_received():
            self.ws.send_response(self.ws.accept(event))  # type: ignore[arg-type]
            self.transport.write(b"".join(self.ws.data_to_send()))  # type: ignore[attr-defined]
            self.sock = LeanCallerSocket(self.ws, self.transport,  # type: ignore[arg-type]
                                         **self.socket_options)
            asyncio.ensure_future(self.handler(self.sock))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.sock is not None:
            self.sock.connection_lost()


@contextlib.asynccontextmanager
async def _lean_server(handler: Callable[[LeanCallerSocket], Awaitable[None]],
                       **socket_options: Any) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _LeanEcho(handler, **socket_options),
                                      "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/"
    finally:
        server.close()


async def _echo_until_closed(sock: CallerSocket, seen: dict[str, Any]) -> None:
    """Echo text (``send_now`` when possible, else ``send``); record how it ended."""
    assert sock.is_open
    while (message := await sock.receive()) is not None:
        seen.setdefault("messages", []).append(message)
        if message == "close-me":
            await sock.close(4001, "asked to")
            await sock.close(4001, "asked to")  # idempotent
            break
        text = message if isinstance(message, str) else f"binary:{len(message)}"
        if not sock.send_now(text):
            await sock.send(text)
    seen["detail"] = sock.close_detail
    seen["open_after"] = sock.is_open
    await sock.send("after close")  # never raises
    seen["send_now_after"] = sock.send_now("after close")
    seen["done"] = True


async def test_lean_caller_socket_contract() -> None:
    seen: dict[str, Any] = {}
    async with _lean_server(lambda s: _echo_until_closed(s, seen)) as url:
        async with websockets.connect(url) as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01\x02")
            assert await ws.recv() == "binary:3"
            await ws.send(["frag", "mented"])  # a fragmented text message, reassembled
            assert await ws.recv() == "fragmented"
            await asyncio.wait_for(await ws.ping(), 2)
            for i in range(200):  # many writes in one tick go out joined, in order
                await ws.send(str(i))
            assert [await ws.recv() for _ in range(200)] == [str(i) for i in range(200)]
        for _ in range(100):
            if seen.get("done"):
                break
            await asyncio.sleep(0.01)
    assert seen["detail"] == "close code 1000"
    assert seen["open_after"] is False and seen["send_now_after"] is False


async def test_lean_caller_socket_server_close_and_frame_limit() -> None:
    seen: dict[str, Any] = {}
    async with _lean_server(lambda s: _echo_until_closed(s, seen)) as url:
        async with websockets.connect(url) as ws:
            await ws.send("close-me")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 2)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
        seen.clear()
        async with websockets.connect(url, max_size=None) as ws:
            await ws.send("y" * 5000)  # over the protocol's max_size=4096
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 2)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 1009
        for _ in range(100):
            if seen.get("done"):
                break
            await asyncio.sleep(0.01)
    assert seen["detail"] == "close code 1009" and "messages" not in seen


async def test_push_delivery_keeps_order_pauses_and_ends_once() -> None:
    """``deliver_to``: messages queued before it first, then each as parsed, in order;
    ``pause_reading`` holds delivery back (TCP pushes back on the peer); None comes
    exactly once, at the end."""
    got: list[str | bytes | None] = []
    ready = asyncio.Event()
    sockets: list[LeanCallerSocket] = []

    async def handler(sock: LeanCallerSocket) -> None:
        sockets.append(sock)
        await ready.wait()  # let messages queue in the inbox first
        sock.deliver_to(got.append)

    async with _lean_server(handler) as url:
        async with websockets.connect(url) as ws:
            for i in range(3):
                await ws.send(f"early {i}")
            await asyncio.sleep(0.2)
            assert got == []
            ready.set()
            for _ in range(100):
                if len(got) == 3:
                    break
                await asyncio.sleep(0.01)
            assert got == ["early 0", "early 1", "early 2"]
            sock = sockets[0]
            sock.pause_reading()
            await ws.send("held")
            await asyncio.sleep(0.3)
            assert got[-1] == "early 2"
            sock.resume_reading()
            for _ in range(100):
                if len(got) == 4:
                    break
                await asyncio.sleep(0.01)
            assert got[-1] == "held"
            await ws.send(b"\x01")
        for _ in range(200):
            if got and got[-1] is None:
                break
            await asyncio.sleep(0.01)
    assert got[4:] == [b"\x01", None]
    assert sockets[0].close_detail == "close code 1000"


async def test_keepalive_pings_keep_a_ponging_peer_and_drop_a_silent_one() -> None:
    """A peer that answers pings stays connected; one that vanished without a FIN (it
    never answers) is failed with 1011 after interval + timeout, as on the ASGI route."""
    seen: dict[str, Any] = {}
    options = {"ping_interval": 0.1, "ping_timeout": 0.2}
    async with _lean_server(lambda s: _echo_until_closed(s, seen), **options) as url:
        async with websockets.connect(url, ping_interval=None) as ws:  # the client pongs
            await asyncio.sleep(0.8)
            await ws.send("still here")
            assert await asyncio.wait_for(ws.recv(), 2) == "still here"
        seen.clear()
        # A client that reads but never writes again: no pongs.
        host, port = url.removeprefix("ws://").rstrip("/").split(":")
        reader, writer = await asyncio.open_connection(host, int(port))
        client = ClientProtocol(parse_uri(url))
        request = client.connect()
        client.send_request(request)
        writer.write(b"".join(client.data_to_send()))
        pings = 0
        started = asyncio.get_running_loop().time()
        close_code = None
        while close_code is None:
            data = await asyncio.wait_for(reader.read(65536), 3)
            if not data:
                break
            client.receive_data(data)
            for event in client.events_received():
                opcode = getattr(event, "opcode", None)
                if opcode is Opcode.PING:
                    pings += 1
                elif opcode is Opcode.CLOSE:
                    close_code = Close.parse(event.data).code  # type: ignore[attr-defined]
        elapsed = asyncio.get_running_loop().time() - started
        writer.close()
        assert pings == 1  # one ping, unanswered, then the verdict
        assert close_code == 1011
        assert 0.25 <= elapsed < 2.0
        for _ in range(100):
            if seen.get("done"):
                break
            await asyncio.sleep(0.01)
        assert seen["detail"] == "close code 1011"


async def test_starlette_caller_socket_contract() -> None:
    seen: dict[str, Any] = {}

    async def route(websocket: WebSocket) -> None:
        await websocket.accept()
        await _echo_until_closed(AsgiCallerSocket(websocket), seen)

    app = Starlette(routes=[WebSocketRoute("/ws", route)])
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", ws="websockets-sansio",
                                           lifespan="off"))
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            await ws.send("hello")
            assert await ws.recv() == "hello"
            await ws.send(b"\x00\x01")
            assert await ws.recv() == "binary:2"
        for _ in range(100):
            if seen.get("done"):
                break
            await asyncio.sleep(0.01)
        assert seen["detail"] == "close code 1000"
        assert seen["open_after"] is False and seen["send_now_after"] is False
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws") as ws:
            seen.clear()
            await ws.send("close-me")
            with pytest.raises(websockets.ConnectionClosed) as closed:
                await asyncio.wait_for(ws.recv(), 2)
            assert closed.value.rcvd is not None and closed.value.rcvd.code == 4001
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 10)
        sock.close()
