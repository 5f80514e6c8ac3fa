"""A simulated Twilio caller: Twilio's side of a bidirectional `<Connect><Stream>`.

The bridge's hardest behaviour (barge-in, truncation, mark bookkeeping) only shows up against
something that behaves like Twilio on the wire and in time: inbound frames paced by a real
clock, outbound audio that is *buffered and played* rather than consumed instantly, marks
echoed only when their audio has played, and `clear` returning the pending marks at once.
`TwilioCaller` speaks that protocol over a real WebSocket (PROTOCOLS.md section A) so tests,
the demo, tape authoring and the load benchmark all exercise the real server code path.

Cheapness matters because the benchmark runs hundreds of calls on one core:
- one `Ticker` task can drive any number of callers on a shared absolute 20 ms grid (no
  per-call sleeping task, no drift); a lone caller just gets a private one;
- outgoing frames are pre-encoded (base64 per frame, cached per script) and the JSON is built
  by string formatting with the SIDs escaped once;
- messages are written through websockets' sans-I/O layer without an await each
  (`bridge.devtools.sim.ws_fast`), and a send never blocks the shared clock: when a connection's
  write buffer backs up, that call's messages move to its own flush task;
- nothing is logged per frame; recordings can be switched off (`record_audio`,
  `record_timing`).

Times in the results are call-relative milliseconds: 0 is the tick that sent `start` and the
first media frame (whose `timestamp` is "0"), so frame k carries `timestamp` 20*k and the
k-th 160 bytes of `heard` played from 20*k ms. Things the clock does (mark echoes at the end
of playback, DTMF) are stamped with their tick's scheduled time, exactly on that grid;
things that arrive (media, marks, clear, close) and `inbound_sent_ms` carry the measured
loop time, so under load the difference between the two is the simulator's own lag.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import logging
import os
import secrets
from array import array
from bisect import bisect_right
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twilio.request_validator import RequestValidator
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame
from websockets.protocol import Event, State

from bridge.config import Secret
from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.playback import (
    BYTES_PER_MS,
    FRAME_BYTES,
    FRAME_MS,
    SILENCE_FRAME,
    ClearRecord,
    MarkRecord,
    MediaRecord,
    Playback,
)
from bridge.devtools.sim.wav import write_wav
from bridge.devtools.sim.ws_fast import Arrivals, message_of, send_now

__all__ = [
    "CallResult",
    "CallerPool",
    "Ticker",
    "TwilioCaller",
    "Violation",
    "twilio_signature",
]

logger = logging.getLogger(__name__)

SILENCE_B64 = base64.b64encode(SILENCE_FRAME).decode("ascii")
CONNECTED_MESSAGE = '{"event":"connected","protocol":"Call","version":"1.0.0"}'
_MAX_INBOUND_MESSAGE = 16 * 2**20
"""Twilio's limit on messages it accepts is undocumented; be generous but bounded."""
_FILE_HEADERS = (b"RIFF", b".snd")


def twilio_signature(auth_token: str, url: str) -> str:
    """The `x-twilio-signature` Twilio puts on the WebSocket upgrade: the URL with no params."""
    return RequestValidator(auth_token).compute_signature(url, {})


def _new_sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


# --------------------------------------------------------------------------- script audio


@dataclass(frozen=True, slots=True)
class _CompiledScript:
    """The caller's inbound track, cut into pre-encoded 20 ms frames.

    After the last clip every frame is silence, so only the scripted part is stored.
    """

    track: bytes
    frames: tuple[str, ...]


def _compile(script: Sequence[tuple[float, str | bytes]]) -> _CompiledScript:
    track = bytearray()
    for at_ms, clip in sorted(script, key=lambda item: item[0]):
        if at_ms < 0:
            raise ValueError(f"script time must be >= 0, got {at_ms}")
        audio = load_clip(clip) if isinstance(clip, str) else bytes(clip)
        pos = round(at_ms * BYTES_PER_MS)
        end = pos + len(audio)
        if end > len(track):
            track.extend(SILENCE_FRAME[:1] * (end - len(track)))
        track[pos:end] = audio  # a later clip talks over an earlier one
    pad = -len(track) % FRAME_BYTES
    track.extend(SILENCE_FRAME[:1] * pad)
    frames = tuple(
        SILENCE_B64
        if track[i : i + FRAME_BYTES] == SILENCE_FRAME
        else base64.b64encode(track[i : i + FRAME_BYTES]).decode("ascii")
        for i in range(0, len(track), FRAME_BYTES)
    )
    return _CompiledScript(bytes(track), frames)


@functools.lru_cache(maxsize=64)
def _compile_named(script: tuple[tuple[float, str], ...]) -> _CompiledScript:
    """Scripts made only of clip names are shared by every caller that uses them."""
    return _compile(script)


def _compile_script(script: Sequence[tuple[float, str | bytes]]) -> _CompiledScript:
    if all(isinstance(clip, str) for _, clip in script):
        return _compile_named(tuple((float(t), str(c)) for t, c in script))
    return _compile(script)


# --------------------------------------------------------------------------- shared clock


class TickClient(Protocol):
    """Anything a `Ticker` can drive; `scheduled` is the tick's due time on the loop clock.

    `on_tick` is synchronous: it runs for every call every 20 ms, and a coroutine per call
    per tick is a measurable share of the load generator. Anything that has to wait is
    spawned as a task instead.
    """

    def on_tick(self, scheduled: float) -> None: ...


class Ticker:
    """One task, one absolute 20 ms grid, any number of callers.

    Ticks are due at `base + n * period`; a late tick is run as soon as possible and the next
    one keeps its original due time, so pacing never drifts (a stall shows up as a burst,
    as it would from a real network). Every client sees every tick once, in order.
    The task starts with the first client and ends when the last one leaves.
    """

    def __init__(self, period_ms: float = FRAME_MS, *, late_ms: float = 10.0) -> None:
        self.period = period_ms / 1000.0
        self.late_ms = late_ms
        self.ticks = 0
        self.late_ticks = 0
        """Ticks that started more than `late_ms` after their due time (benchmark figure)."""
        self.max_lag_ms = 0.0
        self._clients: dict[TickClient, None] = {}
        self._snapshot: tuple[TickClient, ...] | None = None
        self._task: asyncio.Task[None] | None = None
        self._base = 0.0
        self._next = 0

    @property
    def clients(self) -> int:
        return len(self._clients)

    @property
    def running(self) -> bool:
        return self._task is not None

    def add(self, client: TickClient) -> float:
        """Attach a client; returns the loop time its first tick is due."""
        loop = asyncio.get_running_loop()
        if self._task is None:
            self._base = loop.time()
            self._next = 0
            self._task = loop.create_task(self._run(), name="sim-twilio-ticker")
        self._clients[client] = None
        self._snapshot = None
        return self._base + self._next * self.period

    def discard(self, client: TickClient) -> None:
        if client in self._clients:
            del self._clients[client]
            self._snapshot = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._clients:
                n = self._next
                due = self._base + n * self.period
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                elif -delay * 1000.0 > self.late_ms:
                    self.late_ticks += 1
                    self.max_lag_ms = max(self.max_lag_ms, -delay * 1000.0)
                self._next = n + 1  # clients added from now on start at the next tick
                self.ticks += 1
                if self._snapshot is None:
                    self._snapshot = tuple(self._clients)
                for client in self._snapshot:
                    if client not in self._clients:
                        continue  # left during this tick
                    try:
                        client.on_tick(due)
                    except Exception:
                        # A broken client must not stop the clock for everyone else.
                        logger.exception("simulated caller failed on tick; detaching it")
                        self.discard(client)
        finally:
            self._task = None


# --------------------------------------------------------------------------- results


@dataclass(slots=True)
class Violation:
    """Something the server sent that Twilio would reject (it would fail the stream)."""

    at_ms: float
    reason: str
    excerpt: str


@dataclass
class CallResult:
    """Everything the simulated caller observed, live while the call runs.

    Byte positions are offsets in the outbound stream (all accepted media payloads
    concatenated, see `bridge.devtools.sim.playback`); times are call-relative ms
    (0 = stream start).
    """

    call_sid: str
    stream_sid: str
    account_sid: str
    playback: Playback
    t0: float | None = None
    """Loop time (`loop.time()`) of call ms 0, to correlate with other components."""
    media: list[MediaRecord] = field(default_factory=list)
    """Outbound media accepted, with receive time and stream position (if `record_timing`)."""
    marks: list[MarkRecord] = field(default_factory=list)
    violations: list[Violation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    dtmf_sent: list[tuple[float, str]] = field(default_factory=list)
    inbound_sent_ms: array = field(default_factory=lambda: array("d"))
    """Send time of inbound frame k (bytes 160k..160k+159), if `record_timing`."""
    frames_sent: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    media_messages_received: int = 0
    media_bytes_received: int = 0
    marks_echoed: int = 0
    start_sent_ms: float | None = None
    stop_sent_ms: float | None = None
    hangup_ms: float | None = None
    close_code: int | None = None
    """Close code the server sent (1006 when the TCP connection ended without one)."""
    close_reason: str | None = None
    closed_ms: float | None = None
    closed_by: str | None = None
    """"server" (server closed first), "caller" (we hung up), "abort" (we dropped TCP),
    or "network" (the connection died without a close frame from either side)."""
    error: str | None = None
    track: bytes = b""
    """The caller's scripted inbound audio (silence after it ends)."""

    # -- audio -------------------------------------------------------------------------
    @property
    def heard(self) -> bytes:
        """What the caller heard: 160 mu-law bytes per 20 ms tick from ms 0, gaps as 0xFF."""
        return bytes(self.playback.heard)

    @property
    def spoken(self) -> bytes:
        """What the caller sent, aligned like `heard` (one frame per tick sent)."""
        n = self.frames_sent * FRAME_BYTES
        return self.track[:n].ljust(n, SILENCE_FRAME[:1])

    def save_wav(self, path: str | os.PathLike[str], *, stereo: bool = False) -> None:
        """Write `heard` as a playable WAV; stereo puts `spoken` on the right channel."""
        write_wav(path, self.heard, right=self.spoken if stereo else None)

    # -- positions ---------------------------------------------------------------------
    @property
    def clears(self) -> list[ClearRecord]:
        return self.playback.clears

    @property
    def outbound_bytes(self) -> int:
        """Length of the outbound stream so far (== the next media's position)."""
        return self.playback.received_bytes

    def played_bytes_at_clear(self, n: int = 0) -> int:
        """Stream position playback had reached when the n-th `clear` (0-based) arrived.

        A 20 ms frame counts once it started playing: a clear does not cut it off.
        """
        return self.clears[n].played_position

    @property
    def mark_positions(self) -> dict[str, int]:
        """Mark name -> stream position (the last one wins if a name repeats)."""
        return {m.name: m.position for m in self.marks}

    def mark(self, name: str) -> MarkRecord:
        """The last mark with this name (KeyError if none)."""
        for m in reversed(self.marks):
            if m.name == name:
                return m
        raise KeyError(name)

    def played_bytes_in(self, start: int, end: int) -> int:
        """How much of stream range `[start, end)` reached the caller's ear."""
        return self.playback.played_bytes_in(start, end)

    def position_played_at(self, ms: float) -> int:
        """Stream position playback had reached by call time `ms` (needs `record_audio`)."""
        k = int(ms // FRAME_MS)
        ticks = self.playback.cursor_by_tick
        if k <= 0 or not ticks:
            return 0
        return ticks[min(k, len(ticks)) - 1]

    # -- latency hooks -----------------------------------------------------------------
    def inbound_sent_ms_at(self, offset: int) -> float:
        """When the inbound byte at `offset` (caller's track) was sent, call ms."""
        return self.inbound_sent_ms[offset // FRAME_BYTES]

    def outbound_received_ms(self, offset: int) -> float:
        """When the outbound stream byte at `offset` arrived, call ms (needs record_timing)."""
        i = bisect_right(self.media, offset, key=lambda m: m.position) - 1
        if i < 0 or offset >= self.media[i].position + self.media[i].size:
            raise KeyError(offset)
        return self.media[i].at_ms

    def timeline(self) -> list[tuple[float, str, dict[str, Any]]]:
        """All recorded events merged in time order, for printing and debugging."""
        ev: list[tuple[float, str, dict[str, Any]]] = []
        ev += [(m.at_ms, "media", {"position": m.position, "size": m.size}) for m in self.media]
        for mk in self.marks:
            ev.append((mk.queued_ms, "mark", {"name": mk.name, "position": mk.position}))
            if mk.echoed_ms is not None:
                ev.append((mk.echoed_ms, "mark_echo", {"name": mk.name, "cleared": mk.cleared}))
        ev += [
            (c.at_ms, "clear", {"played": c.played_position, "discarded": c.discarded_bytes})
            for c in self.clears
        ]
        ev += [(t, "dtmf", {"digit": d}) for t, d in self.dtmf_sent]
        ev += [(v.at_ms, "violation", {"reason": v.reason}) for v in self.violations]
        if self.stop_sent_ms is not None:
            ev.append((self.stop_sent_ms, "stop", {}))
        if self.closed_ms is not None:
            ev.append(
                (
                    self.closed_ms,
                    "closed",
                    {"by": self.closed_by, "code": self.close_code, "reason": self.close_reason},
                )
            )
        ev.sort(key=lambda e: e[0])
        return ev


# --------------------------------------------------------------------------- the caller


class _CallerConnection(ClientConnection):
    """A client connection that hands each message to `on_message` as it is parsed.

    Handling a media message costs less than the library's queue-and-wake on the way to
    `recv()`; see `bridge.devtools.sim.ws_fast` for when a message may skip it without overtaking
    earlier ones (and what still goes through `recv()`).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.on_message: Callable[[str | bytes], None] | None = None
        self._arrivals = Arrivals(self)

    def process_event(self, event: Event) -> None:
        if not self._arrivals.took(event, self._take_now):
            super().process_event(event)

    def _take_now(self, frame: Frame) -> bool:
        handler = self.on_message
        if handler is None or not self._arrivals.ready(frame):
            return False
        message = message_of(frame)
        if message is None:
            return False
        handler(message)
        return True


def _drop(message: str | bytes) -> None:
    """`on_message` after a failure: what follows is not looked at (as before, when the
    read loop stopped at the first error)."""


class TwilioCaller:
    """Twilio's end of one bidirectional Media Stream, over a real WebSocket.

    Typical use: `result = await TwilioCaller(url=..., script=[(0, "caller_question")],
    hangup_at_ms=8000).run()`. For hostile tests: `auto_start=False`, then `connect()`,
    `send_raw(...)`, `start_stream()`, `hangup(...)` by hand.
    """

    def __init__(
        self,
        *,
        url: str,
        call_sid: str | None = None,
        stream_sid: str | None = None,
        account_sid: str | None = None,
        custom_parameters: dict[str, str] | None = None,
        auth_token: str | Secret | None = None,
        script: Sequence[tuple[float, str | bytes]] = (),
        dtmf: Sequence[tuple[float, str]] = (),
        hangup_at_ms: float | None = None,
        abrupt_hangup: bool = False,
        duration_ms: float | None = None,
        auto_start: bool = True,
        send_connected: bool = True,
        record_audio: bool = True,
        record_timing: bool = True,
        ticker: Ticker | None = None,
        open_timeout: float = 10.0,
        close_timeout: float = 5.0,
        sign_url: str | None = None,
    ) -> None:
        """`url` is signed exactly as given (use the public wss:// URL the server expects).

        `sign_url`, when given, is signed instead of `url`: to reach one replica of a fleet
        directly with the signature Twilio computes over the fleet's public stream URL.

        `hangup_at_ms` and `duration_ms` both end the call from the caller's side at that
        call time (stop, then close); the earlier wins. `abrupt_hangup` makes that ending a
        dropped TCP connection instead: no `stop`, no close frame.
        """
        self.url = url
        self.sign_url = sign_url or url
        self.call_sid = call_sid or _new_sid("CA")
        self.stream_sid = stream_sid or _new_sid("MZ")
        self.account_sid = account_sid or _new_sid("AC")
        self.custom_parameters = dict(custom_parameters or {})
        # Held as a Secret so no repr, log or traceback of the caller can show it.
        self._auth_token = Secret(auth_token) if isinstance(auth_token, str) else auth_token
        self._script = _compile_script(script)
        self._dtmf = sorted(dtmf, key=lambda d: d[0])
        ends = [t for t in (hangup_at_ms, duration_ms) if t is not None]
        self._end_at_ms: float | None = min(ends) if ends else None
        self.abrupt_hangup = abrupt_hangup
        self.auto_start = auto_start
        self.send_connected = send_connected
        self.record_timing = record_timing
        self.ticker = ticker
        self._open_timeout = open_timeout
        self._close_timeout = close_timeout

        self.result = CallResult(
            call_sid=self.call_sid,
            stream_sid=self.stream_sid,
            account_sid=self.account_sid,
            playback=Playback(record_heard=record_audio),
            track=self._script.track,
        )
        self._playback = self.result.playback
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ws: ClientConnection | None = None
        self._reader: asyncio.Task[None] | None = None
        self._flusher: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._outbox: deque[str | bytes] = deque()
        self._closed = asyncio.Event()
        self._origin = 0.0  # loop time of call ms 0 (provisional until start_stream)
        self._seq = 0
        self._k = 0
        self._dtmf_i = 0
        self._send_start = True
        self._streaming = False
        self._ending = False
        self._sid_json = json.dumps(self.stream_sid)

    # -- lifecycle ---------------------------------------------------------------------
    async def __aenter__(self) -> TwilioCaller:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def run(self) -> CallResult:
        """Connect, stream, and return once the socket is closed (by either side)."""
        if self._ws is None:
            await self.connect()
        if self.auto_start and not self._streaming:
            self.start_stream()
        await self.wait_closed()
        return self.result

    async def connect(self) -> None:
        """Open the WebSocket (signed when `auth_token` is set) and send `connected`.

        A handshake answered with anything but 101 raises `websockets.InvalidStatus`; on
        real Twilio that is error 31920.
        """
        headers: dict[str, str] = {}
        if self._auth_token is not None:
            token = self._auth_token.reveal()
            headers["x-twilio-signature"] = twilio_signature(token, self.sign_url)
        self._loop = asyncio.get_running_loop()
        self._ws = await connect(
            self.url,
            additional_headers=headers,
            compression=None,
            proxy=None,
            ping_interval=None,
            open_timeout=self._open_timeout,
            close_timeout=self._close_timeout,
            max_size=_MAX_INBOUND_MESSAGE,
            create_connection=_CallerConnection,
        )
        assert isinstance(self._ws, _CallerConnection)
        self._ws.on_message = self._receive_now
        self._origin = self._loop.time()
        self._reader = self._loop.create_task(self._read_loop(), name=f"sim-caller-{self.call_sid}")
        if self.send_connected:
            self._emit(CONNECTED_MESSAGE)
            self._pump()

    def start_stream(self, *, send_start: bool = True) -> None:
        """Join the clock: the next tick sends `start` (unless `send_start=False`) and frame 1.

        With `send_start=False` a test can send its own (hostile) start via `send_raw` first;
        the caller still treats the stream as started.
        """
        if self._streaming:
            raise RuntimeError("stream already started")
        if self._ws is None:
            raise RuntimeError("connect() first")
        self._streaming = True
        self._send_start = send_start
        if self.ticker is None:
            self.ticker = Ticker()
        self._origin = self.ticker.add(self)
        self.result.t0 = self._origin

    async def send_raw(self, message: str | bytes) -> None:
        """Send a frame verbatim (for hostile tests); consumes no sequence number.

        Returns once the frame is written to the socket (or the connection is gone).
        """
        self._emit(message)
        self._pump()
        if self._flusher is not None:
            await self._flusher

    def next_sequence_number(self) -> str:
        """Take the next `sequenceNumber`, for hand-built messages that should fit in."""
        self._seq += 1
        return str(self._seq)

    async def hangup(
        self, *, send_stop: bool = True, abort: bool = False, code: int = 1000, reason: str = ""
    ) -> None:
        """End the call from Twilio's side: `stop` then close, or drop TCP with `abort`."""
        if self._ending or self._ws is None:
            await self.wait_closed()
            return
        self._ending = True
        self._leave_clock()
        ws = self._ws
        r = self.result
        r.hangup_ms = self._now_ms()
        if abort:
            self._outbox.clear()
            r.closed_by = "abort"
            ws.transport.abort()
        else:
            if send_stop and self._streaming and ws.state is State.OPEN:
                self._emit(self._stop_message())
                r.stop_sent_ms = self._now_ms()
            self._pump()
            if self._flusher is not None:
                await self._flusher
            r.closed_by = "caller"
            await ws.close(code, reason)
        await self.wait_closed()

    async def close(self) -> None:
        """Tidy shutdown for `async with`: hang up politely if still connected."""
        if self._ws is not None and not self._closed.is_set():
            await self.hangup(send_stop=self._streaming)
        await self.wait_closed()

    async def wait_closed(self) -> None:
        if self._ws is None:
            return
        await self._closed.wait()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()

    # -- the clock ---------------------------------------------------------------------
    def on_tick(self, scheduled: float) -> None:
        """One 20 ms step: send frame k (plus due DTMF), then advance playback."""
        r = self.result
        k = self._k
        ms = k * FRAME_MS
        if self._end_at_ms is not None and ms >= self._end_at_ms:
            self._leave_clock()
            abrupt = self.abrupt_hangup
            self._spawn(self.hangup(send_stop=not abrupt, abort=abrupt))
            return
        if k == 0 and self._send_start:
            self._emit(self._start_message())
            r.start_sent_ms = 0.0
        frames = self._script.frames
        payload = frames[k] if k < len(frames) else SILENCE_B64
        self._seq += 1
        self._emit(
            f'{{"event":"media","sequenceNumber":"{self._seq}","media":{{"track":"inbound",'
            f'"chunk":"{k + 1}","timestamp":"{ms}","payload":"{payload}"}},'
            f'"streamSid":{self._sid_json}}}'
        )
        self._k = k + 1
        r.frames_sent = k + 1
        assert self._loop is not None
        now_ms = (self._loop.time() - self._origin) * 1000.0
        if self.record_timing:
            r.inbound_sent_ms.append(now_ms)
        while self._dtmf_i < len(self._dtmf) and self._dtmf[self._dtmf_i][0] <= ms:
            digit = self._dtmf[self._dtmf_i][1]
            self._dtmf_i += 1
            self._seq += 1
            self._emit(
                json.dumps(
                    {
                        "event": "dtmf",
                        "streamSid": self.stream_sid,
                        "sequenceNumber": str(self._seq),
                        "dtmf": {"track": "inbound_track", "digit": digit},
                    }
                )
            )
            r.dtmf_sent.append((float(ms), digit))
        for mark in self._playback.tick(float(ms)):
            self._echo(mark)
        self._pump()

    def _leave_clock(self) -> None:
        if self.ticker is not None:
            self.ticker.discard(self)

    # -- sending -----------------------------------------------------------------------
    def _emit(self, message: str | bytes) -> None:
        self._outbox.append(message)

    def _pump(self) -> None:
        """Send what is queued now, without ever blocking the shared clock.

        Each message is written straight through websockets' sans-I/O layer (`send_now`):
        no await per message, which at 50 frames a second per call was the largest cost of
        the load generator. When that is not safe (the write buffer backs up past
        `SEND_NOW_BUFFER_LIMIT`, writing is paused), the rest of this call's messages move
        to a flush task of its own that uses `send()` and its backpressure.
        """
        ws = self._ws
        out = self._outbox
        if ws is None or self._flusher is not None:
            return
        r = self.result
        while out:
            if ws.state is not State.OPEN:
                out.clear()  # nothing can be sent any more; Twilio would drop it too
                return
            if not send_now(ws, out[0]):
                self._flusher = self._spawn(self._flush())
                return
            out.popleft()
            r.messages_sent += 1

    async def _flush(self) -> None:
        ws = self._ws
        assert ws is not None
        try:
            while self._outbox and ws.state is State.OPEN:
                await ws.send(self._outbox.popleft())
                self.result.messages_sent += 1
        except ConnectionClosed:
            pass
        finally:
            if ws.state is not State.OPEN:
                self._outbox.clear()
            self._flusher = None

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        assert self._loop is not None
        task: asyncio.Task[Any] = self._loop.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _start_message(self) -> str:
        self._seq += 1
        return json.dumps(
            {
                "event": "start",
                "sequenceNumber": str(self._seq),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "mediaFormat": {
                        "encoding": "audio/x-mulaw",
                        "sampleRate": 8000,
                        "channels": 1,
                    },
                    "customParameters": self.custom_parameters,
                },
                "streamSid": self.stream_sid,
            }
        )

    def _stop_message(self) -> str:
        self._seq += 1
        return json.dumps(
            {
                "event": "stop",
                "sequenceNumber": str(self._seq),
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
                "streamSid": self.stream_sid,
            }
        )

    def _echo(self, mark: MarkRecord) -> None:
        self._seq += 1
        self.result.marks_echoed += 1
        self._emit(
            json.dumps(
                {
                    "event": "mark",
                    "sequenceNumber": str(self._seq),
                    "streamSid": self.stream_sid,
                    "mark": {"name": mark.name},
                }
            )
        )

    # -- receiving ---------------------------------------------------------------------
    def _now_ms(self) -> float:
        """Call-relative ms; before `start_stream()` it counts from the handshake."""
        assert self._loop is not None
        return (self._loop.time() - self._origin) * 1000.0

    async def _read_loop(self) -> None:
        ws = self._ws
        assert ws is not None
        r = self.result
        try:
            async for message in ws:
                if r.error is not None:
                    continue  # failed on arrival (see _fail): look no further
                self._on_message(message)
                if self._outbox:
                    self._pump()
        except ConnectionClosed:
            pass
        except Exception as exc:  # keep the record; the call is over either way
            self._fail(exc)
        finally:
            self._leave_clock()
            self._ending = True
            await ws.wait_closed()
            r.closed_ms = self._now_ms()
            rcvd = ws.protocol.close_rcvd
            r.close_code = rcvd.code if rcvd is not None else 1006
            r.close_reason = rcvd.reason if rcvd is not None else None
            if r.closed_by is None:
                r.closed_by = "server" if rcvd is not None else "network"
            self._closed.set()

    def _receive_now(self, message: str | bytes) -> None:
        """A message handed over as it arrived (`_CallerConnection`): the read loop's work."""
        try:
            self._on_message(message)
            if self._outbox:
                self._pump()
        except Exception as exc:  # keep the record; the call is over either way
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        ws = self._ws
        assert isinstance(ws, _CallerConnection)
        self.result.error = f"{type(exc).__name__}: {exc}"
        ws.on_message = _drop
        ws.transport.abort()

    def _violation(self, now_ms: float, reason: str, raw: str | bytes) -> None:
        excerpt = raw[:200] if isinstance(raw, str) else repr(raw[:60])
        self.result.violations.append(Violation(now_ms, reason, excerpt))

    def _on_message(self, raw: str | bytes) -> None:
        """Apply one server message to the playback model, as Twilio would."""
        r = self.result
        r.messages_received += 1
        now = self._now_ms()
        if isinstance(raw, bytes):
            self._violation(now, "binary frame (Twilio expects JSON text)", raw)
            return
        try:
            msg = json.loads(raw)
        except ValueError:
            self._violation(now, "not JSON", raw)
            return
        if not isinstance(msg, dict) or not isinstance(msg.get("event"), str):
            self._violation(now, "not a JSON object with an 'event'", raw)
            return
        event = msg["event"]
        if event not in ("media", "mark", "clear"):
            self._violation(now, f"unknown event {event!r}", raw)
            return
        if not self._streaming:
            self._violation(now, f"{event} before start", raw)
            return
        if msg.get("streamSid") != self.stream_sid:
            self._violation(now, f"{event} with wrong or missing streamSid", raw)
            return
        if event == "media":
            self._on_media(msg, now, raw)
        elif event == "mark":
            body = msg.get("mark")
            name = body.get("name") if isinstance(body, dict) else None
            if not isinstance(name, str):
                self._violation(now, "mark without a string mark.name", raw)
                return
            rec = self._playback.push_mark(name, now)
            r.marks.append(rec)
            if rec.echoed_ms is not None:
                self._echo(rec)
        else:
            _, flushed = self._playback.clear(now)
            for mark in flushed:
                self._echo(mark)

    def _on_media(self, msg: dict[str, Any], now: float, raw: str) -> None:
        r = self.result
        body = msg.get("media")
        payload = body.get("payload") if isinstance(body, dict) else None
        if not isinstance(payload, str):
            self._violation(now, "media without a string media.payload", raw)
            return
        try:
            audio = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            self._violation(now, "media payload is not valid base64", raw)
            return
        if audio[:4] in _FILE_HEADERS:
            # Twilio: the payload "should not contain audio file type header bytes".
            self._violation(now, "media payload starts with an audio file header", raw[:200])
        rec = self._playback.push_media(audio, now)
        if rec is None:
            if not r.warnings:
                r.warnings.append("31931: more than 10 minutes of audio buffered; media dropped")
            return
        r.media_messages_received += 1
        r.media_bytes_received += len(audio)
        if self.record_timing:
            r.media.append(rec)


# --------------------------------------------------------------------------- many calls


class CallerPool:
    """Run many simulated calls on one shared `Ticker` (the load-benchmark pattern).

    `pool.caller(url=..., ...)` builds callers bound to the pool's clock; `run()` starts them
    (optionally ramped) and gathers their results, exceptions included, so one failed
    handshake doesn't hide the other 299 calls.
    """

    def __init__(self, period_ms: float = FRAME_MS) -> None:
        self.ticker = Ticker(period_ms)

    def caller(self, **kwargs: Any) -> TwilioCaller:
        return TwilioCaller(ticker=self.ticker, **kwargs)

    async def run(
        self, callers: Iterable[TwilioCaller], *, ramp_ms: float = 0.0
    ) -> list[CallResult | BaseException]:
        """Run `callers` concurrently; the i-th starts `i * ramp_ms` after the first."""

        async def one(i: int, caller: TwilioCaller) -> CallResult:
            if ramp_ms:
                await asyncio.sleep(i * ramp_ms / 1000.0)
            return await caller.run()

        batch = list(callers)
        for c in batch:
            if c.ticker is None:
                c.ticker = self.ticker
        runs = (one(i, c) for i, c in enumerate(batch))
        return await asyncio.gather(*runs, return_exceptions=True)
