"""Opening Realtime connections, including ahead of time.

Twilio fetches the TwiML, then opens the Media Stream, then sends ``start``:
that takes a round trip or two.  Opening the model's WebSocket (TLS + HTTP
upgrade, often 100-300 ms) during that gap, keyed by CallSid, means the model
is ready the moment ``start`` arrives.  A pre-opened connection nobody claims
is closed after a short while so it never leaks.

Two things can go wrong with a pre-opened socket, and both are counted (see
:class:`ModelConnector` ``stats``) so the metrics show them: nobody claims it (the
caller hung up during the TwiML fetch, or Twilio never opened the stream), and it dies
while it waits (the server closed it, the network dropped it).  The first is closed at
its TTL; the second is discarded at ``take`` and replaced by a fresh connection, never
handed to a call half-dead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus
from websockets.protocol import State

from bridge.config import Secret
from bridge.realtime.dialects import DialectSpec
from bridge.realtime.failures import Action, Verdict, classify_handshake

log = logging.getLogger("bridge.realtime")


class ModelConnectError(ConnectionError):
    """A connect that failed, with what the reconnect logic needs to decide what next.

    ``status`` is the HTTP status the upgrade was answered with (None: a network error,
    no answer at all) and ``body`` its parsed JSON, if any; ``verdict`` classifies them
    (a 401 is fatal, a 503 worth a retry).  The message names the host, never the key.
    """

    def __init__(self, message: str, status: int | None, body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.body = body
        self.verdict: Verdict = classify_handshake(status, body)


def _error_body(raw: bytes | bytearray | None) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None


@dataclass(frozen=True)
class ModelEndpoint:
    """Where and how to reach the Realtime server (the key stays wrapped)."""

    url: str
    model: str
    dialect: DialectSpec
    api_key: Secret | None
    open_timeout_s: float = 10.0
    max_frame_bytes: int = 16 * 2**20

    async def open(self) -> ClientConnection:
        """Connect; the error message names the host, never the key."""
        key = self.api_key.reveal() if self.api_key else ""
        url = self.dialect.connect_url(self.url, self.model)
        try:
            return await connect(
                url,
                additional_headers=self.dialect.headers(key),
                open_timeout=self.open_timeout_s,
                close_timeout=1.0,
                max_size=self.max_frame_bytes,
                compression=None,
                max_queue=64,
                user_agent_header="twilio-realtime-bridge",
                proxy=None,
            )
        except Exception as exc:
            # websockets' InvalidStatus message carries the status line only; keep the
            # class and the text but make sure the key never slips into it.
            status, body = None, None
            if isinstance(exc, InvalidStatus):
                status = exc.response.status_code
                body = _error_body(exc.response.body)
            text = str(exc).replace(key, "***") if key else str(exc)
            raise ModelConnectError(
                f"cannot reach the Realtime server at {url}: {text}", status, body
            ) from None


#: Above this many bytes waiting in the socket's buffer, sends go through the library's
#: own path, which waits for the buffer to drain (backpressure).
FAST_SEND_BUFFER_LIMIT = 64 * 1024


def send_now(connection: ClientConnection, text: str) -> bool:
    """Write one text frame without awaiting, when that is safe; False means "use send()".

    ``ClientConnection.send`` enters an async context manager, checks state and awaits a
    drain for every message; at 50 audio frames per second per call that bookkeeping is
    a measurable share of the bridge's CPU (docs/performance.md).  When the connection
    is open, no fragmented message is in progress and the transport's buffer is nearly
    empty, the library's own sans-I/O protocol frames the message and ``send_data``
    writes it: the same bytes, without the per-message await.  Anything unusual (closing,
    a full buffer) falls back to ``send()``, which handles it.
    """
    if (
        connection.protocol.state is not State.OPEN
        or connection.send_in_progress is not None
        or connection.transport.get_write_buffer_size() > FAST_SEND_BUFFER_LIMIT
    ):
        return False
    connection.protocol.send_text(text.encode())
    connection.send_data()
    return True


class ModelConnector:
    """Opens model connections, optionally before the stream starts."""

    def __init__(self, endpoint: ModelEndpoint, warm_ttl_s: float = 15.0) -> None:
        self.endpoint = endpoint
        self.warm_ttl_s = warm_ttl_s
        self._warm: dict[str, asyncio.Task[ClientConnection]] = {}
        self.stats: Counter[str] = Counter()
        """Pre-opened connections by fate: ``used``, ``expired`` (closed unclaimed at the
        TTL), ``dead_replaced`` (closed before ``take``, replaced), ``failed`` (the
        pre-open itself failed), ``discarded`` (closed at shutdown)."""

    def preconnect(self, call_sid: str) -> None:
        """Start opening a connection for ``call_sid`` now (from the TwiML webhook)."""
        if call_sid in self._warm:
            return
        task = asyncio.ensure_future(self.endpoint.open())
        self._warm[call_sid] = task
        asyncio.get_running_loop().call_later(self.warm_ttl_s, self._expire, call_sid, task)

    def _expire(self, call_sid: str, task: asyncio.Task[ClientConnection]) -> None:
        if self._warm.get(call_sid) is not task:
            return
        del self._warm[call_sid]
        self.stats["expired"] += 1
        log.info("call %s: stream never started; closing the pre-opened model connection", call_sid)
        asyncio.ensure_future(_discard(task))

    async def take(self, call_sid: str) -> ClientConnection:
        """The pre-opened connection for ``call_sid`` if it worked, else a fresh one."""
        task = self._warm.pop(call_sid, None)
        if task is not None:
            try:
                connection = await task
            except ModelConnectError as exc:
                self.stats["failed"] += 1
                if exc.verdict.action is Action.FATAL:
                    raise  # a bad key or model fails the same way a second time
                log.info("pre-opened model connection failed (%s); retrying", exc.verdict.reason)
            except Exception as exc:  # noqa: BLE001 - fall back to a fresh attempt
                self.stats["failed"] += 1
                log.info("pre-opened model connection failed (%s); retrying", exc)
            else:
                if connection.state is State.OPEN and connection.close_code is None:
                    self.stats["used"] += 1
                    return connection
                self.stats["dead_replaced"] += 1
                log.info(
                    "call %s: pre-opened model connection died before the stream started "
                    "(close %s); opening a fresh one",
                    call_sid,
                    connection.close_code,
                )
                with contextlib.suppress(Exception):
                    await connection.close()
        return await self.endpoint.open()

    def is_warm(self, call_sid: str) -> bool:
        """Whether this process pre-opened a socket for ``call_sid`` (a fleet's hit rate)."""
        return call_sid in self._warm

    @property
    def warm_count(self) -> int:
        return len(self._warm)

    async def close(self) -> None:
        tasks = list(self._warm.values())
        self._warm.clear()
        self.stats["discarded"] += len(tasks)
        await asyncio.gather(*(_discard(t) for t in tasks), return_exceptions=True)


async def _discard(task: asyncio.Task[ClientConnection]) -> None:
    if not task.done():
        task.cancel()
    with contextlib.suppress(BaseException):
        connection = await task
        await connection.close()
