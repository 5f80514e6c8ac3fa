"""The Realtime API as a model backend: one WebSocket per call, events parsed at the edge."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import AsyncIterator
from typing import Literal

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from bridge.call.backend import BackendUnavailable
from bridge.config import AudioMode
from bridge.core import events as ev
from bridge.core.actions import ToModel
from bridge.core.stream import StreamInfo
from bridge.jsoncodec import JsonLoads
from bridge.realtime.connection import ModelConnectError, ModelConnector, send_now
from bridge.realtime.dialects import DialectSpec
from bridge.realtime.failures import Action as FailureAction
from bridge.realtime.failures import classify_close
from bridge.realtime.wire import RealtimeProtocol

#: Client events queued behind a busy socket before the driver is asked to wait.
HIGH_WATER = 128

#: The failure classes of ``bridge.realtime.failures`` in the core's terms.
_RETRY: dict[FailureAction, Literal["now", "backoff", "never"]] = {
    FailureAction.RETRY_NOW: "now",
    FailureAction.BACKOFF: "backoff",
    FailureAction.FATAL: "never",
    FailureAction.IGNORE: "backoff",
}


class RealtimeConnection:
    """One call's Realtime WebSocket (see ``bridge.call.backend.ModelConnection``)."""

    def __init__(self, socket: ClientConnection, protocol: RealtimeProtocol) -> None:
        self.socket = socket
        self.protocol = protocol
        self.last_frame: str | bytes | None = None
        self._queue: deque[str] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._closed = False

    def send(self, action: ToModel) -> bool:
        text = self.protocol.serialise(action)
        if self._closed:
            return True
        if not self._queue and send_now(self.socket, text):
            return True
        self._queue.append(text)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._write_queued())
        return len(self._queue) < HIGH_WATER

    async def _write_queued(self) -> None:
        queue = self._queue
        while queue:
            try:
                await self.socket.send(queue[0])
            except Exception:  # noqa: BLE001 - events() reports the close
                queue.clear()
                return
            queue.popleft()

    async def drain(self) -> None:
        writer = self._writer
        if writer is not None and not writer.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(writer)

    async def events(self) -> AsyncIterator[ev.ModelEvent | ev.ProtocolProblem]:
        parse = self.protocol.parse
        socket = self.socket
        detail = ""
        try:
            async for frame in socket:
                self.last_frame = frame
                yield parse(frame)
        except ConnectionClosed:
            pass
        except Exception as exc:  # noqa: BLE001 - a broken socket is a disconnect
            detail = exc.__class__.__name__
        self.last_frame = None
        if self._closed:
            return
        code, reason = socket.close_code, socket.close_reason or ""
        verdict = classify_close(code, reason)
        yield ev.ModelDisconnected(code, detail or reason, _RETRY[verdict.action], verdict.reason)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
        try:
            await asyncio.wait_for(self.socket.close(), 1.0)
        except Exception:  # noqa: BLE001 - make sure the socket goes away regardless
            self.socket.transport.abort()


class RealtimeBackend:
    """Opens Realtime connections for calls, adopting one pre-opened at the webhook."""

    def __init__(
        self,
        connector: ModelConnector,
        dialect: DialectSpec,
        audio_mode: AudioMode,
        loads: JsonLoads = json.loads,
    ) -> None:
        self.connector = connector
        self.dialect = dialect
        self.audio_mode = audio_mode
        self.loads = loads

    async def connect(self, info: StreamInfo) -> RealtimeConnection:
        try:
            socket = await self.connector.take(info.call_sid)
        except asyncio.CancelledError:
            raise
        except ModelConnectError as exc:
            retry = _RETRY[exc.verdict.action]
            raise BackendUnavailable(str(exc)[:300], retry, exc.verdict.reason) from None
        except Exception as exc:  # noqa: BLE001 - a network failure: worth another try
            raise BackendUnavailable(f"{exc.__class__.__name__}: {exc}"[:300]) from None
        protocol = RealtimeProtocol(self.dialect, self.audio_mode, self.loads)
        return RealtimeConnection(socket, protocol)
