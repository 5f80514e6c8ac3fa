"""The live driver with an in-memory caller leg and an in-memory model backend.

No sockets: the caller socket and the model connection are queues, so these
tests pin down the driver's own duties: events in order, one timer per call,
sends to one side never waiting on the other, call control timing.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from bridge.config import Secret, Settings
from bridge.core import events as ev
from bridge.core.actions import AppendAudio, ConfigureSession, CreateResponse, ToModel
from bridge.core.stream import StreamInfo
from bridge.services import BridgeServices
from bridge.twilio.twiml import PARAM_TOKEN

TOKEN = "relay-test-auth-token-0123456789"
AUDIO = base64.b64encode(b"\xff" * 160).decode()


class MemorySocket:
    """A caller WebSocket as two queues; ``stall()`` makes every send hang."""

    def __init__(self) -> None:
        self.incoming: asyncio.Queue[str | None] = asyncio.Queue()
        self.sent: list[dict[str, Any]] = []
        self.close_detail = ""
        self.closed: tuple[int, str] | None = None
        self._stalled = asyncio.Event()
        self._stalled.set()

    def stall(self) -> None:
        self._stalled.clear()

    async def receive(self) -> str | bytes | None:
        frame = await self.incoming.get()
        if frame is None:
            self.close_detail = "close code 1000"
        return frame

    def send_now(self, text: str) -> bool:
        if not self._stalled.is_set():
            return False
        self.sent.append(json.loads(text))
        return True

    async def send(self, text: str) -> None:
        await self._stalled.wait()
        self.sent.append(json.loads(text))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self.closed = (code, reason)
        self.incoming.put_nowait(None)

    @property
    def is_open(self) -> bool:
        return self.closed is None

    def push(self, message: dict[str, Any]) -> None:
        self.incoming.put_nowait(json.dumps(message))


class PushMemorySocket(MemorySocket):
    """The same socket with push delivery (``PushCallerSocket``), as the lean path has."""

    def __init__(self) -> None:
        super().__init__()
        self.handler: Any = None
        self.paused = False
        self.held: list[str | None] = []
        self.pauses = 0

    def deliver_to(self, handler: Any) -> None:
        self.handler = handler
        while not self.incoming.empty():
            self._arrive(self.incoming.get_nowait())

    def _arrive(self, frame: str | None) -> None:
        if self.handler is None:
            self.incoming.put_nowait(frame)
        elif self.paused:
            self.held.append(frame)
        else:
            if frame is None:
                self.close_detail = "close code 1000"
            self.handler(frame)

    def push(self, message: dict[str, Any]) -> None:
        self._arrive(json.dumps(message))

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self._arrive(None)

    def pause_reading(self) -> None:
        self.paused = True
        self.pauses += 1

    def flush(self) -> None:
        return None  # send_now writes at once here

    def resume_reading(self) -> None:
        self.paused = False
        held, self.held = self.held, []
        for frame in held:
            self._arrive(frame)


class MemoryModel:
    """A model connection: records actions, yields what the test puts in."""

    def __init__(self) -> None:
        self.received: list[ToModel] = []
        self.inbox: asyncio.Queue[ev.ModelEvent | None] = asyncio.Queue()
        self.last_frame = None
        self.closed = False
        self.backed_up = False
        self.drained = asyncio.Event()

    def send(self, action: ToModel) -> bool:
        self.received.append(action)
        return not self.backed_up

    async def drain(self) -> None:
        if self.backed_up:
            await self.drained.wait()
            self.backed_up = False

    async def events(self) -> AsyncIterator[ev.ModelEvent | ev.ProtocolProblem]:
        while (event := await self.inbox.get()) is not None:
            yield event

    async def close(self) -> None:
        self.closed = True
        self.inbox.put_nowait(None)


class MemoryBackend:
    def __init__(self) -> None:
        self.connections: list[MemoryModel] = []
        self.by_call: dict[str, MemoryModel] = {}

    async def connect(self, info: StreamInfo) -> MemoryModel:
        conn = MemoryModel()
        self.connections.append(conn)
        self.by_call[info.call_sid] = conn
        return conn


def services(**settings: Any) -> tuple[BridgeServices, MemoryBackend]:
    svc = BridgeServices(
        Settings(
            twilio_auth_token=Secret(TOKEN),
            public_url="https://bridge.example",
            **settings,
        )
    )
    backend = MemoryBackend()
    svc.backend = backend  # type: ignore[assignment]
    return svc, backend


def start(socket: MemorySocket, svc: BridgeServices, call_sid: str) -> None:
    socket.push({"event": "connected", "protocol": "Call", "version": "1.0.0"})
    socket.push(
        {
            "event": "start",
            "streamSid": "MZ" + call_sid[2:],
            "start": {
                "streamSid": "MZ" + call_sid[2:],
                "callSid": call_sid,
                "customParameters": {PARAM_TOKEN: svc.mint_stream_token(call_sid)},
            },
        }
    )


async def until(predicate: Any, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.005)


async def connected_call(
    socket: MemorySocket, call_sid: str
) -> tuple[MemoryModel, asyncio.Task[str]]:
    """A call served on ``socket`` through the driver, started, its model connected;
    returns that model connection and the task serving the call."""
    svc, backend = services()
    run = asyncio.create_task(svc.serve_stream(socket))
    start(socket, svc, call_sid)
    await until(lambda: backend.connections)
    return backend.connections[0], run


async def test_a_turn_through_the_driver() -> None:
    socket = MemorySocket()
    model, run = await connected_call(socket, "CA01")
    socket.push({"event": "media", "media": {"payload": AUDIO}})
    await until(lambda: any(isinstance(a, AppendAudio) for a in model.received))
    assert isinstance(model.received[0], ConfigureSession)
    model.inbox.put_nowait(ev.ResponseStarted("r1"))
    model.inbox.put_nowait(ev.AgentAudio("a1", "r1", AUDIO, 160))
    await until(lambda: len(socket.sent) == 2)
    assert [m["event"] for m in socket.sent] == ["media", "mark"]
    assert socket.sent[0]["streamSid"] == "MZ01"
    socket.push({"event": "stop"})
    assert await asyncio.wait_for(run, 2) == "caller_hung_up"
    assert model.closed and socket.closed is not None


async def test_a_forged_stream_never_reaches_the_model() -> None:
    svc, backend = services()
    socket = MemorySocket()
    run = asyncio.create_task(svc.serve_stream(socket))
    socket.push({"event": "start", "start": {"streamSid": "MZ1", "callSid": "CA1",
                                             "customParameters": {PARAM_TOKEN: "forged"}}})
    assert await asyncio.wait_for(run, 2) == "unauthorised"
    assert backend.connections == []


async def test_a_stalled_caller_socket_does_not_hold_up_the_model_side() -> None:
    socket = MemorySocket()
    model, run = await connected_call(socket, "CA02")
    socket.stall()
    model.inbox.put_nowait(ev.ResponseStarted("r1"))
    for _ in range(5):
        model.inbox.put_nowait(ev.AgentAudio("a1", "r1", AUDIO, 160))
    await asyncio.sleep(0.05)
    assert socket.sent == []  # stuck behind the stalled socket
    for _ in range(3):
        socket.push({"event": "media", "media": {"payload": AUDIO}})
    await until(lambda: sum(isinstance(a, AppendAudio) for a in model.received) == 3)
    socket.push({"event": "stop"})
    await asyncio.wait_for(run, 3)


async def test_each_call_keeps_its_own_timers() -> None:
    """A key-entry pause fires on time in one call while another call's socket is stuck."""
    svc, backend = services()
    stuck, live = MemorySocket(), MemorySocket()
    runs = [asyncio.create_task(svc.serve_stream(s)) for s in (stuck, live)]
    start(stuck, svc, "CA03")
    start(live, svc, "CA04")
    await until(lambda: len(backend.connections) == 2)
    stuck.stall()
    stuck_model = backend.by_call["CA03"]
    stuck_model.inbox.put_nowait(ev.ResponseStarted("r"))
    stuck_model.inbox.put_nowait(ev.AgentAudio("a", "r", AUDIO, 160))
    loop = asyncio.get_running_loop()
    pressed = loop.time()
    live.push({"event": "dtmf", "dtmf": {"digit": "7"}})
    live_model = backend.by_call["CA04"]
    await until(lambda: any(isinstance(a, CreateResponse) for a in live_model.received), 3.0)
    waited = loop.time() - pressed
    assert 1.1 <= waited < 2.0  # the 1200 ms pause, not a shared 100 ms ticker's multiple
    for socket in (stuck, live):
        socket.push({"event": "stop"})
    stuck._stalled.set()
    await asyncio.wait_for(asyncio.gather(*runs), 3)


async def test_a_socket_that_never_starts_is_closed() -> None:
    svc, backend = services()
    socket = MemorySocket()
    relay_call = svc.new_call  # shorten the start timeout for this call only

    def quick() -> Any:
        from dataclasses import replace

        call = relay_call()
        call.config = replace(call.config, start_timeout_ms=150)
        return call

    svc.new_call = quick  # type: ignore[method-assign]
    assert await asyncio.wait_for(svc.serve_stream(socket), 2) == "no_start"
    assert socket.closed is not None and backend.connections == []


async def test_without_rest_credentials_a_hang_up_closes_the_stream() -> None:
    socket = MemorySocket()
    model, run = await connected_call(socket, "CA05")
    model.inbox.put_nowait(ev.SessionConfigured("audio/pcmu", "audio/pcmu"))
    model.inbox.put_nowait(ev.ToolCallRequested("c1", "hang_up", "{}", None))
    # The tool asks for a goodbye first; the model says it and the caller hears it.
    await until(lambda: any(isinstance(a, CreateResponse) for a in model.received))
    model.inbox.put_nowait(ev.ResponseStarted("r2"))
    model.inbox.put_nowait(ev.AgentAudio("bye", "r2", AUDIO, 160))
    model.inbox.put_nowait(ev.ResponseFinished("r2", "completed"))
    await until(lambda: any(m["event"] == "mark" for m in socket.sent))
    mark = next(m for m in socket.sent if m["event"] == "mark")
    socket.push({"event": "mark", "mark": mark["mark"]})
    assert await asyncio.wait_for(run, 2) == "agent_hung_up"


async def test_push_delivery_pauses_the_caller_while_the_model_is_backed_up() -> None:
    """On the push path (no reader task) a backed-up model socket pauses reading the
    caller until it drains; nothing is lost or reordered, and the call ends normally."""
    socket = PushMemorySocket()
    model, run = await connected_call(socket, "CA07")
    await until(lambda: socket.handler is not None)
    model.backed_up = True
    for i in range(3):
        socket.push({"event": "media", "media": {"payload": AUDIO, "chunk": str(i)}})
    assert socket.paused and socket.pauses == 1
    assert len(socket.held) == 2  # the first frame went in, then reading paused
    model.drained.set()
    await until(lambda: not socket.paused)
    await until(lambda: sum(isinstance(a, AppendAudio) for a in model.received) == 3)
    socket.push({"event": "stop"})
    assert await asyncio.wait_for(run, 2) == "caller_hung_up"
    assert model.closed
