"""The live driver of one call: a caller leg on one side, a model backend on the other.

It owns no call rules.  Every frame is parsed at the edge (the leg's or the
backend's protocol), handed to :class:`~bridge.core.call.Call` as a typed event
with the current time, and the actions that come back are carried out in
order.  What the relay adds is I/O discipline:

- one task reads each side; sends never block the reader of the other side:
  each direction has its own ordered outbox, written at once when the socket
  takes it and otherwise by that direction's own writer task;
- one timer per call (``loop.call_at``), set from the core's ``WakeAt``, so no
  call's timers wait on another call;
- tools and phone-network call control run in their own tasks and report back
  as events, so a slow tool never stalls the audio;
- ending is idempotent: whichever side goes first, both are closed exactly once.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from bridge.call.backend import BackendUnavailable, ModelBackend, ModelConnection
from bridge.call.leg import CallerProtocol, CallerSocket, PushCallerSocket
from bridge.core import events as ev
from bridge.core.actions import (
    TO_CALLER,
    TO_MODEL,
    Action,
    AuthoriseStream,
    ClearPlayback,
    ConnectModel,
    ControlCall,
    DiscardStandby,
    EndCall,
    Notice,
    PrepareStandby,
    RunTool,
    SwitchToStandby,
    ToStandby,
    WakeAt,
)
from bridge.core.call import Call
from bridge.core.config import CallConfig, ControlRequest
from bridge.core.stream import StreamInfo

log = logging.getLogger("bridge.call")


class CallHooks(Protocol):
    """What the relay needs from the rest of the service (see ``bridge.services``)."""

    async def authorise(self, info: StreamInfo) -> str | None:
        """None to accept the stream, else the reason to refuse it."""

    def call_config(self, info: StreamInfo) -> CallConfig:
        """The agent and limits for this call (chosen from its parameters)."""

    async def run_tool(
        self, info: StreamInfo, config: CallConfig, action: RunTool
    ) -> tuple[str, ControlRequest | None]:
        """Run a tool: its output JSON and any call-control request it made."""

    async def control_call(self, action: ControlCall) -> None:
        """Hang up or transfer through the phone network; raises on failure."""

    def call_event(self, relay: CallRelay, action: Action) -> None:
        """Everything else the core says (transcripts, usage, notices, timeline, end)."""


class TapeSink(Protocol):
    def event(self, now: int, event: ev.Event, frame: str | bytes | None, peer: str) -> None: ...
    def action(self, now: int, action: Action) -> None: ...
    def close(self) -> None: ...


class _Outbox:
    """One direction's ordered writes, with one writer at a time.

    A write that the socket takes at once goes out at once.  Otherwise frames queue,
    and either the model reader that produced them writes them itself (``flush``:
    natural backpressure, no task), or a writer task does (``kick``: timers, tools,
    the caller reader, which must never wait on the caller's own socket)."""

    def __init__(
        self,
        write_now: Callable[[Any], bool],
        write: Callable[[Any], Awaitable[None]],
        name: str,
    ) -> None:
        self._write_now = write_now
        self._write = write
        self._queue: deque[Any] = deque()
        self._busy: asyncio.Future[None] | None = None  # set while someone is writing
        self._task: asyncio.Task[None] | None = None
        self._name = name

    def put(self, item: Any) -> None:
        if not self._queue and self._busy is None and self._write_now(item):
            return
        self._queue.append(item)

    def replace_queued(self, item: Any) -> None:
        """Drop what is still queued and send ``item`` next.

        For ``clear``: it empties the caller's playback buffer, so audio and marks
        not yet written would be discarded on arrival anyway (and the ledger has
        already forgotten their marks).  Jumping the queue stops the agent sooner."""
        if self._queue:
            head = self._queue[0] if self._busy is not None else None
            self._queue.clear()
            if head is not None:
                self._queue.append(head)  # being written right now; it stays first
        self.put(item)

    @property
    def pending(self) -> bool:
        return bool(self._queue)

    async def flush(self) -> None:
        """Write what is queued, in order; if someone else is writing, wait for them."""
        busy = self._busy
        if busy is not None:
            await asyncio.shield(busy)
            return
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._busy = done
        queue = self._queue
        try:
            while queue:
                try:
                    await self._write(queue[0])
                except Exception:  # noqa: BLE001 - the reader of that side sees the close
                    queue.clear()
                    break
                if queue:
                    queue.popleft()
        finally:
            self._busy = None
            done.set_result(None)

    def kick(self) -> None:
        """Have a writer task write what is queued (no one else will flush it)."""
        if self._queue and self._busy is None and (self._task is None or self._task.done()):
            self._task = asyncio.ensure_future(self.flush())
            self._task.set_name(self._name)

    def cancel(self) -> None:
        self._queue.clear()
        if self._task is not None:
            self._task.cancel()


class CallRelay:
    """Runs one call until either side ends it."""

    def __init__(
        self,
        caller: CallerSocket,
        leg: CallerProtocol,
        call: Call,
        backend: ModelBackend,
        hooks: CallHooks,
        *,
        clock: Callable[[], float] = time.monotonic,
        tape: TapeSink | None = None,
        max_frame_bytes: int = 256 * 1024,
    ) -> None:
        self.caller = caller
        self.leg = leg
        self.call = call
        self.backend = backend
        self.hooks = hooks
        self.tape = tape
        self.max_frame_bytes = max_frame_bytes
        self._clock = clock
        self.model: ModelConnection | None = None
        self.standby: ModelConnection | None = None  # the next session, during a rollover
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done = asyncio.Event()
        self._closing = False
        self._timer: asyncio.TimerHandle | None = None
        self.end_reason: str | None = None
        self.info: StreamInfo | None = None
        self._to_caller = _Outbox(caller.send_now, caller.send, "to-caller")
        #: Set when the socket hands frames over as parsed (no reader task, see run()).
        self._push = caller if isinstance(caller, PushCallerSocket) else None
        self._model_backed_up = False
        self._drain_pending = False

    def now(self) -> int:
        return int(self._clock() * 1000)

    @property
    def call_sid(self) -> str | None:
        return self.info.call_sid if self.info else None

    # ---------------------------------------------------------------- inputs

    def feed(
        self,
        event: ev.Event,
        frame: str | bytes | None = None,
        peer: str = "bridge",
        *,
        reader: bool = False,
    ) -> None:
        """Hand one event to the core and carry out what it asks, in order.

        A socket reader (``reader=True``) then writes the caller frames it caused itself
        (``flush``), which costs no task; anything else starts the outbox's writer."""
        if self._closing:
            return
        now = self.now()
        if self.tape is not None:
            self.tape.event(now, event, frame, peer)
        actions = self.call.handle(event, now)
        if actions:
            self._perform(actions, now)
            if not reader:
                self._to_caller.kick()

    async def run(self) -> str:
        """Read the caller until the call ends; return the end reason."""
        self.feed(ev.LegOpened())
        if self._push is not None:
            self._push.deliver_to(self._on_caller_frame)
        else:
            self._spawn(self._read_caller(), "caller-reader")
        try:
            await self._done.wait()
        finally:
            await self._shutdown()
        return self.end_reason or "unknown"

    def end(self, reason: str, detail: str = "") -> None:
        """End the call from outside (shutdown, an operator); a no-op once it is ending."""
        self.feed(ev.EndRequested(reason, detail))

    def _caller_frame(self, frame: str | bytes | None) -> bool:
        """One caller frame into the core, however it was read; False once the caller
        is gone.  An oversized frame is a problem, not an end."""
        if frame is None:
            self.feed(ev.CallerGone(self.caller.close_detail), peer="twilio")
            return False
        if len(frame) > self.max_frame_bytes:
            problem = ev.ProtocolProblem(
                "caller", "oversized_frame", f"dropping a {len(frame)}-byte frame"
            )
            self.feed(problem, peer="twilio")
        else:
            self.feed(self.leg.parse(frame), frame, "twilio")
        return True

    async def _read_caller(self) -> None:
        """The pull path: a task awaits each frame; a backed-up model socket is waited on."""
        receive = self.caller.receive
        while not self._closing:
            if not self._caller_frame(await receive()):
                return
            if self._model_backed_up and self.model is not None:
                await self.model.drain()
                self._model_backed_up = False

    def _on_caller_frame(self, frame: str | bytes | None) -> None:
        """The push path, called from the socket's own parser.

        A backed-up model socket stops the caller being read by pausing its transport
        until it drains; an exception ends this call only, as a failed reader task's
        would (:meth:`_failed`)."""
        push = self._push
        if self._closing or push is None:
            return
        try:
            self._caller_frame(frame)
            if self._model_backed_up and self.model is not None and not self._drain_pending:
                self._drain_pending = True
                push.pause_reading()
                self._spawn(self._drain_model(self.model, push), "model-drain")
        except Exception as exc:  # noqa: BLE001 - reported as a failed reader task is
            self._failed("caller-reader", exc)

    async def _drain_model(self, model: ModelConnection, push: PushCallerSocket) -> None:
        try:
            await model.drain()
        finally:
            self._model_backed_up = False
            self._drain_pending = False
            push.resume_reading()

    async def _read_model(self, model: ModelConnection) -> None:
        """Feed one connection's events while it is the call's model connection.

        A standby (the next session during a rollover) is only watched until the
        switch: its confirmation and its failure are driver events; anything else it
        says before it is in use is not the call's business."""
        flush_now = self._push.flush if self._push is not None else None
        async for event in model.events():
            if self._closing:
                return
            if model is self.standby:
                self._standby_event(model, event)
                continue
            if model is not self.model:
                return
            if isinstance(event, ev.ModelDisconnected):
                self.model = None
                self._spawn(model.close(), "model-close")
            self.feed(event, getattr(model, "last_frame", None), "model", reader=True)
            if self._to_caller.pending:
                await self._to_caller.flush()
            elif flush_now is not None:
                flush_now()  # the frames this event caused, joined, before other callbacks

    def _standby_event(self, model: ModelConnection, event: ev.Event) -> None:
        if isinstance(event, ev.SessionConfigured):
            self.feed(ev.StandbyReady(event.mismatch))
        elif isinstance(event, ev.ModelDisconnected):
            self.standby = None
            self.feed(ev.StandbyFailed(f"closed before the switch: {event.detail}"[:300]))

    # --------------------------------------------------------------- actions

    def _perform(self, actions: list[Action], now: int) -> None:
        tape = self.tape
        for action in actions:
            kind = type(action)
            if tape is not None and kind is not WakeAt:
                tape.action(now, action)
            if kind in TO_CALLER:
                if not self._closing:
                    text = self.leg.serialise(action)  # type: ignore[arg-type]
                    if kind is ClearPlayback:
                        self._to_caller.replace_queued(text)
                    else:
                        self._to_caller.put(text)
                continue
            if kind in TO_MODEL:
                model = self.model
                if model is not None and not self._closing and not model.send(action):  # type: ignore[arg-type]
                    self._model_backed_up = True
                continue
            self._perform_other(action)

    def _perform_other(self, action: Action) -> None:
        if isinstance(action, WakeAt):
            self._set_timer(action.at)
            return
        extra = self.leg.observe(action)
        if extra is not None and not self._closing:
            self._to_caller.put(extra)
        if isinstance(action, AuthoriseStream):
            self.info = action.info
            self._spawn(self._authorise(action.info), "authorise")
        elif isinstance(action, ConnectModel):
            self._spawn(self._connect_model(), "model-connect")
        elif isinstance(action, PrepareStandby):
            self._spawn(self._open_standby(), "standby-connect")
        elif isinstance(action, ToStandby):
            if self.standby is not None:
                for item in action.actions:
                    self.standby.send(item)
        elif isinstance(action, SwitchToStandby):
            old, self.model, self.standby = self.model, self.standby, None
            if old is not None:
                self._spawn(old.close(), "model-close")
        elif isinstance(action, DiscardStandby):
            standby, self.standby = self.standby, None
            if standby is not None:
                self._spawn(standby.close(), "model-close")
        elif isinstance(action, RunTool):
            self._spawn(self._run_tool(action), f"tool-{action.name}")
        elif isinstance(action, ControlCall):
            self._spawn(self._control_call(action), f"control-{action.kind}")
        elif isinstance(action, Notice):
            level = getattr(logging, action.level.upper(), logging.INFO)
            log.log(level, "call %s: %s (%s)", self.call_sid, action.message, action.code)
        elif isinstance(action, EndCall):
            self.end_reason = action.reason
            self._closing = True
            log.info("call %s ended: %s %s", self.call_sid, action.reason, action.detail)
        self.hooks.call_event(self, action)
        if isinstance(action, EndCall):
            self._done.set()

    def _set_timer(self, at_ms: int) -> None:
        if self._timer is not None:
            self._timer.cancel()
        loop = asyncio.get_running_loop()
        delay = max(0.0, at_ms / 1000 - self._clock())
        self._timer = loop.call_at(loop.time() + delay, self._fire)

    def _fire(self) -> None:
        self._timer = None
        self.feed(ev.TimerFired())

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            exc = task.exception()
            if exc is not None:
                self._failed(task.get_name(), exc)

    def _failed(self, name: str, exc: BaseException) -> None:
        """A piece of this call's I/O failed: log it and end this call, no other."""
        log.error("call %s: %s failed", self.call_sid, name, exc_info=exc)
        self.feed(ev.EndRequested("internal_error", f"{name} failed"))

    async def _authorise(self, info: StreamInfo) -> None:
        refusal = await self.hooks.authorise(info)
        if refusal is not None:
            self.feed(ev.StreamRefused(refusal))
            return
        self.feed(ev.StreamAccepted(self.hooks.call_config(info)))

    async def _connect_model(self) -> None:
        assert self.info is not None
        try:
            model = await self.backend.connect(self.info)
        except BackendUnavailable as exc:
            self.feed(ev.ModelUnavailable(exc.detail[:300], exc.retry, exc.cause), peer="model")
            return
        if self._closing:
            await model.close()
            return
        self.model = model
        self.feed(ev.ModelConnected(), peer="model")
        self._spawn(self._read_model(model), "model-reader")

    async def _open_standby(self) -> None:
        assert self.info is not None
        try:
            standby = await self.backend.connect(self.info)
        except BackendUnavailable as exc:
            self.feed(ev.StandbyFailed(exc.detail[:300]))
            return
        if self._closing:
            await standby.close()
            return
        self.standby = standby
        self.feed(ev.StandbyConnected())
        self._spawn(self._read_model(standby), "standby-reader")

    async def _run_tool(self, action: RunTool) -> None:
        assert self.info is not None
        output, control = await self.hooks.run_tool(self.info, self.call.config, action)
        self.feed(ev.ToolFinished(action.call_id, output, control))

    async def _control_call(self, action: ControlCall) -> None:
        try:
            await self.hooks.control_call(action)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported to the core, which decides
            self.feed(ev.ControlFinished(action.kind, False, f"{exc.__class__.__name__}: {exc}"))
            return
        log.info("call %s: %s done", self.call_sid, action.kind)
        self.feed(ev.ControlFinished(action.kind, True))

    # --------------------------------------------------------------- closing

    async def _shutdown(self) -> None:
        """Close both sides exactly once, promptly, whatever state they are in."""
        self._closing = True
        if self._timer is not None:
            self._timer.cancel()
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current and not task.done():
                task.cancel()
        model, self.model = self.model, None
        standby, self.standby = self.standby, None
        closers: list[Awaitable[Any]] = [
            asyncio.wait_for(self.caller.close(1000, (self.end_reason or "")[:100]), 1.0)
        ]
        for connection in (model, standby):
            if connection is not None:
                closers.append(asyncio.wait_for(connection.close(), 1.0))
        await asyncio.gather(*closers, return_exceptions=True)
        self._to_caller.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        if self.tape is not None:
            self.tape.close()
