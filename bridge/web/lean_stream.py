"""Media Streams without ASGI: ``/media-stream`` on a raw asyncio protocol, same port.

Why: at 50 calls the bridge's own logic is ~8 % of its CPU; the rest is per-message
framework work (uvicorn's ASGI queue and per-message pause/resume of reading,
Starlette's ``receive``/``send``, one ``write`` per message).  This server keeps the
library that parses and frames WebSocket messages (websockets' sans-I/O
``ServerProtocol``, the same one uvicorn's ``websockets-sansio`` uses) and drops only
the hand-offs around it.

How it shares the port: uvicorn is given :func:`router_protocol` as its ``http``
protocol class.  Each new connection is read up to the end of its request line; a
``GET /media-stream`` is served here, anything else is handed, bytes and transport, to
uvicorn's usual HTTP protocol (``transport.set_protocol``), so Starlette keeps every
other route, its lifespan, and even ``/media-stream`` for clients that reuse a
keep-alive connection.

The upgrade passes the same checks as ``bridge.app.media_stream``: Twilio's signature
over the ``wss://`` stream URL (403 and ``calls_rejected["bad_ws_signature"]`` when it
is missing or wrong), refusal without an auth token unless ``BRIDGE_INSECURE_DEV``,
refusal while draining, and the cap on streams not yet started (``services.pending``; all
answered 403, as uvicorn answers a close before accept).
Frames over ``BRIDGE_MAX_MESSAGE_BYTES`` fail the connection with close code 1009
(websockets' ``max_size``, as ``ws_max_size`` does on the ASGI path).  Capacity is
enforced by the webhook, exactly as before.  Keep-alive pings every 20 s, with a 20 s
pong timeout, as uvicorn's defaults on the ASGI path.

This is what ``serve`` uses unless ``BRIDGE_STREAM_SERVER=asgi``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from websockets.datastructures import Headers
from websockets.http11 import Request
from websockets.server import ServerProtocol

from bridge.twilio.security import SIGNATURE_HEADER, validate_websocket
from bridge.web.caller_socket import LeanCallerSocket

if TYPE_CHECKING:
    from starlette.applications import Starlette

    from bridge.services import BridgeServices

log = logging.getLogger("bridge")

STREAM_PATH = b"/media-stream"
MAX_REQUEST_LINE = 8192
"""Bytes read while looking for the request line; beyond it the HTTP protocol decides."""
MAX_HANDSHAKE = 64 * 1024


def refusal(services: BridgeServices, headers: Headers) -> str | None:
    """Why this upgrade is refused (None: accept), with the route's checks and counters."""
    settings = services.settings
    token = settings.twilio_auth_token
    if token is not None:
        assert settings.stream_url is not None
        if not validate_websocket(token, settings.stream_url, headers.get(SIGNATURE_HEADER)):
            services.metrics.reject("bad_ws_signature")
            log.warning("refused a Media Stream upgrade with a missing or invalid signature")
            return "invalid Twilio signature"
    elif not settings.insecure_dev:
        return "unsigned upgrades are refused"
    if not services.admission.takes_stream():
        return "draining"
    return None


def _is_stream_request_line(line: bytes) -> bool:
    parts = line.split(b" ")
    if len(parts) != 3 or parts[0] != b"GET":
        return False
    path = parts[1].split(b"?", 1)[0]
    return path == STREAM_PATH


class LeanStreamProtocol(asyncio.Protocol):
    """One TCP connection: first routed by request line, then (maybe) a lean Media Stream."""

    streams_accepted = 0
    """Upgrades accepted on the lean path in this process (tests check the path was used)."""

    def __init__(self, app: Starlette, fallback: Any, config: Any,
                 server_state: Any, app_state: dict[str, Any],
                 _loop: asyncio.AbstractEventLoop | None = None) -> None:
        self.app = app
        self.fallback_args = (fallback, config, server_state, app_state, _loop)
        self.server_state = server_state
        self.max_size = getattr(config, "ws_max_size", 256 * 1024)
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.ws: ServerProtocol | None = None
        self.socket: LeanCallerSocket | None = None
        self.task: asyncio.Task[Any] | None = None

    # ---------------------------------------------------------------- routing

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if self.socket is not None:
            self.socket.feed(data)
            return
        if self.ws is not None:
            self._handshake(data)
            return
        self.buffer += data
        end = self.buffer.find(b"\r\n")
        if end < 0:
            if len(self.buffer) > MAX_REQUEST_LINE:
                self._hand_over()
            return
        if _is_stream_request_line(bytes(self.buffer[:end])):
            self.ws = ServerProtocol(max_size=self.max_size, logger=log)
            self.server_state.connections.add(self)
            data, self.buffer = bytes(self.buffer), bytearray()
            self._handshake(data)
        else:
            self._hand_over()

    def _hand_over(self) -> None:
        """Not ours: uvicorn's HTTP protocol takes the transport and the bytes read so far."""
        fallback, config, server_state, app_state, loop = self.fallback_args
        proto = fallback(config=config, server_state=server_state, app_state=app_state,
                         _loop=loop)
        assert self.transport is not None
        transport = self.transport
        self.transport = None
        transport.set_protocol(proto)
        proto.connection_made(transport)
        data, self.buffer = bytes(self.buffer), bytearray()
        proto.data_received(data)

    # -------------------------------------------------------------- handshake

    def _handshake(self, data: bytes) -> None:
        ws, transport = self.ws, self.transport
        assert ws is not None and transport is not None
        ws.receive_data(data)
        request = next((e for e in ws.events_received() if isinstance(e, Request)), None)
        if request is None:
            if ws.parser_exc is not None or len(data) > MAX_HANDSHAKE:
                transport.close()
            return
        services: BridgeServices | None = getattr(self.app.state, "services", None)
        reason = "not ready" if services is None else refusal(services, request.headers)
        socket = LeanCallerSocket(ws, transport)
        if reason is None and services is not None and not services.pending.try_admit(socket):
            reason = "too many streams not started"  # the route's pending-stream cap
        if reason is not None:
            response = ws.reject(403, reason)
        else:
            response = ws.accept(request)
        ws.send_response(response)
        transport.write(b"".join(ws.data_to_send()))
        if response.status_code != 101:
            if reason is None and services is not None:
                services.pending.release(socket)  # admitted, but the handshake was invalid
            transport.close()
            return
        assert services is not None
        LeanStreamProtocol.streams_accepted += 1
        self.socket = socket
        self.task = asyncio.ensure_future(self._serve(services, socket))
        self.server_state.tasks.add(self.task)
        self.task.add_done_callback(self.server_state.tasks.discard)

    async def _serve(self, services: BridgeServices, socket: LeanCallerSocket) -> None:
        try:
            await services.serve_stream(socket)
        except Exception:
            log.exception("lean media stream failed")
        finally:
            services.pending.release(socket)
            await socket.close()

    # ------------------------------------------------------ transport callbacks

    def connection_lost(self, exc: Exception | None) -> None:
        self.server_state.connections.discard(self)
        if self.socket is not None:
            self.socket.connection_lost()

    def pause_writing(self) -> None:
        if self.socket is not None:
            self.socket.pause_writing()

    def resume_writing(self) -> None:
        if self.socket is not None:
            self.socket.resume_writing()

    def shutdown(self) -> None:
        """uvicorn's server shutdown: going away (1012), or drop a half-done handshake."""
        if self.socket is not None:
            self.socket.shutdown()
        elif self.transport is not None:
            self.transport.close()


def router_protocol(app: Starlette, fallback: Any = None) -> Any:
    """A protocol factory for ``uvicorn.Config(http=...)``: lean ``/media-stream``, the rest
    to ``fallback`` (default: uvicorn's ``auto`` HTTP protocol, httptools or h11)."""
    if fallback is None:
        from uvicorn.protocols.http.auto import AutoHTTPProtocol

        fallback = AutoHTTPProtocol

    def factory(config: Any, server_state: Any, app_state: dict[str, Any],
                _loop: asyncio.AbstractEventLoop | None = None) -> LeanStreamProtocol:
        return LeanStreamProtocol(app, fallback, config, server_state, app_state, _loop)

    return factory


__all__ = ["LeanStreamProtocol", "refusal", "router_protocol"]
