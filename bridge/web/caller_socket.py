"""The caller's WebSocket as the relay sees it, whichever server accepted it.

Why an interface: the relay should not care whether Starlette (through ASGI) or the lean
Media Streams server (``bridge.web.lean_stream``, no ASGI) accepted the upgrade.  Per
call-second the relay handles ~125 small messages, and on the ASGI path most of the CPU
goes to framework hand-offs rather than the call (docs/performance.md), so the lean path
has to be swappable without touching call logic.  :class:`CallerSocket` is the whole
contract; :class:`StarletteCallerSocket` and :class:`LeanCallerSocket` satisfy it, and
:class:`AsgiFacade` lets today's relay (which still speaks Starlette's ``WebSocket``)
drive a lean socket unchanged until it is ported to the interface.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from websockets.frames import Opcode
from websockets.protocol import State

if TYPE_CHECKING:
    from starlette.websockets import WebSocket
    from websockets.server import ServerProtocol

__all__ = ["AsgiFacade", "CallerSocket", "LeanCallerSocket", "StarletteCallerSocket"]


@runtime_checkable
class CallerSocket(Protocol):
    """One accepted caller WebSocket, as the relay sees it."""

    close_detail: str
    """Why it closed (e.g. ``"close code 1000"``), set before ``receive()`` returns None."""

    async def receive(self) -> str | bytes | None:
        """The next text/binary message; None once closed."""

    async def send(self, text: str) -> None:
        """Send a text message. Never raises: a broken socket shows as ``receive() -> None``."""

    def send_now(self, text: str) -> bool:
        """Write without awaiting if the transport isn't paused; False: await ``send()``."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close (idempotent)."""

    @property
    def is_open(self) -> bool: ...


class StarletteCallerSocket:
    """:class:`CallerSocket` over an accepted Starlette ``WebSocket`` (the ASGI path)."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.close_detail = ""
        self._closed = False

    async def receive(self) -> str | bytes | None:
        if self._closed:
            return None
        try:
            message = await self.websocket.receive()
        except Exception as exc:  # noqa: BLE001 - a broken socket is a close, not a crash
            self._gone(exc.__class__.__name__)
            return None
        if message["type"] != "websocket.receive":
            self._gone(f"close code {message.get('code')}")
            return None
        text = message.get("text")
        if text is not None:
            return text  # type: ignore[no-any-return]
        return message.get("bytes") or b""

    def _gone(self, detail: str) -> None:
        self.close_detail = self.close_detail or detail
        self._closed = True

    async def send(self, text: str) -> None:
        if self._closed:
            return
        with contextlib.suppress(Exception):  # the reader sees the close and ends the call
            await self.websocket.send_text(text)

    def send_now(self, text: str) -> bool:
        # ASGI's send is a coroutine all the way down: there is no write without awaiting.
        return False

    async def close(self, code: int = 1000, reason: str = "") -> None:
        from starlette.websockets import WebSocketState

        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=code, reason=reason)

    @property
    def is_open(self) -> bool:
        from starlette.websockets import WebSocketState

        return not self._closed and self.websocket.application_state == WebSocketState.CONNECTED


READ_HIGH_WATER = 64
"""Messages queued unread before the socket stops reading from TCP: the caller then feels
backpressure through TCP instead of the bridge buffering without bound."""
READ_LOW_WATER = 16


class LeanCallerSocket:
    """:class:`CallerSocket` over websockets' sans-I/O ``ServerProtocol`` on a raw transport.

    The transport's protocol (``bridge.web.lean_stream.LeanStreamProtocol``) feeds bytes
    in with :meth:`feed`; messages go to an in-process deque and straight to a waiting
    ``receive()``, with no ASGI queue, no per-message dict and no per-message
    pause/resume of reading.  Writes due in the same loop iteration (a media message and
    its mark, say) are joined into one ``transport.write``: one system call, not two.
    """

    def __init__(self, protocol: ServerProtocol, transport: asyncio.Transport,
                 *, close_timeout: float = 2.0) -> None:
        self.protocol = protocol
        self.transport = transport
        self.close_detail = ""
        self._loop = asyncio.get_running_loop()
        self._inbox: deque[str | bytes] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._fragments: list[bytes] = []
        self._fragment_text = False
        self._ended = False  # no more messages will arrive
        self._lost = False  # TCP is gone
        self._read_paused = False
        self._write_paused = False
        self._writable: asyncio.Future[None] | None = None
        self._out: list[bytes] = []
        self._flush_handle: asyncio.Handle | None = None
        self._close_timer: asyncio.TimerHandle | None = None
        self._close_timeout = close_timeout

    # ------------------------------------------------------------ from the transport

    def feed(self, data: bytes) -> None:
        """Bytes from TCP: parse, queue whole messages, answer pings and closes."""
        protocol = self.protocol
        protocol.receive_data(data)
        for event in protocol.events_received():
            opcode = event.opcode  # type: ignore[union-attr]
            if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
                self._fragment_text = opcode is Opcode.TEXT
                if event.fin:  # type: ignore[union-attr]
                    self._deliver(event.data)  # type: ignore[union-attr]
                else:
                    self._fragments = [bytes(event.data)]  # type: ignore[union-attr]
            elif opcode is Opcode.CONT:
                self._fragments.append(bytes(event.data))  # type: ignore[union-attr]
                if event.fin:  # type: ignore[union-attr]
                    data_all, self._fragments = b"".join(self._fragments), []
                    self._deliver(data_all)
        self._after_protocol_step()

    def _deliver(self, data: bytes | bytearray | memoryview) -> None:
        if self._ended:
            return
        message: str | bytes
        if self._fragment_text:
            try:
                message = bytes(data).decode()
            except UnicodeDecodeError:
                self.protocol.fail(1007, "invalid UTF-8")  # as websockets' own recv() would
                return
        else:
            message = bytes(data)
        self._inbox.append(message)
        if len(self._inbox) >= READ_HIGH_WATER and not self._read_paused:
            self._read_paused = True
            self.transport.pause_reading()
        self._wake()

    def _after_protocol_step(self) -> None:
        """Write what the protocol queued (pongs, close replies, 1009/1002 failures)."""
        protocol = self.protocol
        for chunk in protocol.data_to_send():
            if chunk:
                self._out.append(chunk)
            else:  # websockets' end-of-stream marker: half-close our side
                self._flush()
                if self.transport.can_write_eof():
                    with contextlib.suppress(OSError):
                        self.transport.write_eof()
        if self._out:
            self._flush()
        if protocol.state is not State.OPEN and not self._ended:
            self._end(self._detail_from_protocol())
        if protocol.close_expected() and self._close_timer is None and not self._lost:
            self._close_timer = self._loop.call_later(self._close_timeout, self.transport.abort)

    def _detail_from_protocol(self) -> str:
        protocol = self.protocol
        frame = protocol.close_rcvd or protocol.close_sent
        if frame is None:
            return "close code 1006"
        return f"close code {frame.code}"

    def connection_lost(self) -> None:
        self._lost = True
        if self._close_timer is not None:
            self._close_timer.cancel()
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        self._out.clear()
        with contextlib.suppress(Exception):
            self.protocol.receive_eof()
        self._end(self._detail_from_protocol() if self.protocol.close_rcvd else "close code 1006")
        self._set_writable()

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        self._set_writable()

    def _set_writable(self) -> None:
        waiter, self._writable = self._writable, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _end(self, detail: str) -> None:
        self.close_detail = self.close_detail or detail
        self._ended = True
        self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ to the relay

    async def receive(self) -> str | bytes | None:
        inbox = self._inbox
        while not inbox:
            if self._ended:
                return None
            self._waiter = self._loop.create_future()
            await self._waiter
        message = inbox.popleft()
        if self._read_paused and len(inbox) <= READ_LOW_WATER and not self._lost:
            self._read_paused = False
            self.transport.resume_reading()
        return message

    def send_now(self, text: str) -> bool:
        if self._write_paused or not self.is_open:
            return False
        self.protocol.send_text(text.encode())
        self._queue_writes()
        return True

    async def send(self, text: str) -> None:
        while self._write_paused and not self._lost:
            if self._writable is None:
                self._writable = self._loop.create_future()
            await self._writable
        if self.is_open:
            self.protocol.send_text(text.encode())
            self._queue_writes()

    def _queue_writes(self) -> None:
        self._out.extend(self.protocol.data_to_send())
        if self._flush_handle is None:
            # Joined with whatever else is written before the loop's next iteration.
            self._flush_handle = self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_handle = None
        out = self._out
        if not out or self._lost:
            out.clear()
            return
        data = out[0] if len(out) == 1 else b"".join(out)
        out.clear()
        self.transport.write(data)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.protocol.state is State.OPEN and not self._lost:
            self.protocol.send_close(code, reason)
            self._after_protocol_step()
        self._end(f"close code {code}")

    @property
    def is_open(self) -> bool:
        return self.protocol.state is State.OPEN and not self._lost

    def shutdown(self) -> None:
        """Server shutdown (uvicorn calls this on every connection): going away, 1012."""
        if self.is_open:
            self.protocol.send_close(1012)
            self._after_protocol_step()
        self.transport.close()


class AsgiFacade:
    """The slice of Starlette's ``WebSocket`` today's relay uses, over a :class:`CallerSocket`.

    Only for driving the current ``bridge.relay.CallRelay`` from the lean server while the
    relay is being ported to :class:`CallerSocket`; it allocates the ASGI-shaped dicts the
    relay still expects, which the ported relay will not need.
    """

    def __init__(self, socket: CallerSocket) -> None:
        self.socket = socket

    async def receive(self) -> dict[str, Any]:
        message = await self.socket.receive()
        if message is None:
            code = self.socket.close_detail.removeprefix("close code ")
            return {"type": "websocket.disconnect", "code": int(code) if code.isdigit() else 1006}
        if isinstance(message, str):
            return {"type": "websocket.receive", "text": message}
        return {"type": "websocket.receive", "bytes": message}

    async def send_text(self, text: str) -> None:
        if not self.socket.send_now(text):
            await self.socket.send(text)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        await self.socket.close(code, reason)

    @property
    def application_state(self) -> Any:
        from starlette.websockets import WebSocketState

        return WebSocketState.CONNECTED if self.socket.is_open else WebSocketState.DISCONNECTED
