"""The caller's WebSocket without ASGI: ``bridge.call.leg.CallerSocket`` on a raw transport.

Per call-second the relay handles ~125 small messages, and on the ASGI path most of the
CPU goes to framework hand-offs rather than the call (docs/performance.md).  The relay
talks to the caller only through ``CallerSocket``, so the lean Media Streams server
(``bridge.web.lean_stream``) hands it a :class:`LeanCallerSocket` where the Starlette route
hands it a ``bridge.call.asgi_socket.AsgiCallerSocket``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING

from websockets.frames import Opcode
from websockets.protocol import State

if TYPE_CHECKING:
    from websockets.server import ServerProtocol

__all__ = ["LeanCallerSocket"]


READ_HIGH_WATER = 64
"""Messages queued unread before the socket stops reading from TCP: the caller then feels
backpressure through TCP instead of the bridge buffering without bound."""
READ_LOW_WATER = 16
PING_INTERVAL_S = 20.0
"""Keep-alive pings, as uvicorn's ``ws_ping_interval``/``ws_ping_timeout`` defaults on the
ASGI path: a peer that vanished without a FIN (a NAT dropped the flow, a host died) is
found within ``PING_INTERVAL_S + PING_TIMEOUT_S`` instead of at the call's length limit."""
PING_TIMEOUT_S = 20.0


class LeanCallerSocket:
    """``CallerSocket`` over websockets' sans-I/O ``ServerProtocol`` on a raw transport.

    The transport's protocol (``bridge.web.lean_stream.LeanStreamProtocol``) feeds bytes
    in with :meth:`feed`; messages go to an in-process deque and straight to a waiting
    ``receive()``, with no ASGI queue, no per-message dict and no per-message
    pause/resume of reading.  Writes due in the same loop iteration (a media message and
    its mark, say) are joined into one ``transport.write``: one system call, not two.
    """

    def __init__(self, protocol: ServerProtocol, transport: asyncio.Transport,
                 *, close_timeout: float = 2.0, ping_interval: float | None = PING_INTERVAL_S,
                 ping_timeout: float = PING_TIMEOUT_S) -> None:
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
        self._handler: Callable[[str | bytes | None], None] | None = None
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._ping_sent_at: float | None = None  # an unanswered ping's send time
        self._last_ping_at = self._loop.time()
        self._ping_handle: asyncio.TimerHandle | None = None
        if ping_interval is not None:
            self._ping_handle = self._loop.call_later(ping_interval, self._keepalive)

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
            elif opcode is Opcode.PONG:
                self._ping_sent_at = None  # any pong answers: the peer is alive
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
        handler = self._handler
        if handler is not None:
            handler(message)
            return
        self._inbox.append(message)
        if len(self._inbox) >= READ_HIGH_WATER:
            self.pause_reading()
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

    def _keepalive(self) -> None:
        """Ping every interval; no pong within the timeout fails the connection (1011)."""
        self._ping_handle = None
        interval = self._ping_interval
        if not self.is_open or interval is None:
            return
        now = self._loop.time()
        sent = self._ping_sent_at
        if sent is not None and now - sent >= self._ping_timeout:
            self.protocol.fail(1011, "keepalive ping timeout")
            self._after_protocol_step()
            if not self._lost:
                self.transport.abort()  # a peer that does not pong will not close either
            return
        if sent is None and now - self._last_ping_at >= interval:
            sent = self._ping_sent_at = self._last_ping_at = now
            self.protocol.send_ping(b"ka")
            self._queue_writes()
        due = sent + self._ping_timeout if sent is not None else self._last_ping_at + interval
        self._ping_handle = self._loop.call_at(due, self._keepalive)

    def _detail_from_protocol(self) -> str:
        protocol = self.protocol
        frame = protocol.close_rcvd or protocol.close_sent
        if frame is None:
            return "close code 1006"
        return f"close code {frame.code}"

    def connection_lost(self) -> None:
        self._lost = True
        if self._ping_handle is not None:
            self._ping_handle.cancel()
            self._ping_handle = None
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
        if self._ended:
            return
        self._ended = True
        self._wake()
        handler = self._handler
        if handler is not None:
            handler(None)

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # ------------------------------------------------------------ to the relay

    def deliver_to(self, handler: Callable[[str | bytes | None], None]) -> None:
        """Push delivery (``bridge.call.leg.PushCallerSocket``): from now on every message
        goes to ``handler`` as it is parsed, then None once, at the end.

        Why: the pull path costs a future, a task wake-up and a coroutine resume per
        message; at 50 caller frames per second per call that hand-off is one of the
        larger shares of the bridge's CPU (docs/performance.md).  Messages that arrived
        before this call are handed over first, in order."""
        self._handler = handler
        inbox = self._inbox
        while inbox and self._handler is handler:
            handler(inbox.popleft())
        self.resume_reading()  # paused at the inbox's high-water mark, if it got there
        if self._ended:
            handler(None)

    def pause_reading(self) -> None:
        """Stop reading from TCP (the model side is backed up): TCP pushes back on the
        caller instead of the bridge buffering."""
        if not self._read_paused and not self._lost:
            self._read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._read_paused and not self._lost:
            self._read_paused = False
            self.transport.resume_reading()

    async def receive(self) -> str | bytes | None:
        inbox = self._inbox
        while not inbox:
            if self._ended:
                return None
            self._waiter = self._loop.create_future()
            await self._waiter
        message = inbox.popleft()
        if self._read_paused and len(inbox) <= READ_LOW_WATER:
            self.resume_reading()
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

    def flush(self) -> None:
        """Write what is queued now rather than at the loop's next iteration.

        The driver calls it once it has carried out everything one model event caused
        (a media message and its mark, say): they still go out joined, in one write,
        without waiting behind the other callbacks of this loop iteration."""
        handle = self._flush_handle
        if handle is not None:
            handle.cancel()
            self._flush()

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
