"""The live driver of one call: Twilio's WebSocket on one side, the model's on the other.

This is the only module that touches both sockets.  It owns no call logic: every
frame goes into :class:`~bridge.core.session.CallSession` through
:func:`~bridge.core.inputs.apply_input`, and the relay carries out the actions
that come back, in order.  One task reads each socket; sends happen inline
(they only wait when the peer's buffer is full, which is the backpressure we
want); tools and REST call control run in their own tasks so a slow tool never
stalls the audio.  Ending is idempotent: whichever side goes first, both
sockets are closed exactly once and the reason is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol

from bridge.core.actions import (
    Action,
    CallControl,
    ConnectModel,
    EndCall,
    Notice,
    RunTool,
    SendModel,
    SendTwilio,
    StreamStarted,
    TranscriptLine,
    Usage,
)
from bridge.core.inputs import CallInput, apply_input
from bridge.core.session import CallSession, SessionConfig
from bridge.realtime.connection import send_now
from bridge.twilio.media import StreamInfo

if TYPE_CHECKING:
    from starlette.websockets import WebSocket
    from websockets.asyncio.client import ClientConnection

log = logging.getLogger("bridge.call")

_dumps = json.dumps


class CallHooks(Protocol):
    """What the relay needs from the rest of the service (see ``bridge.services``)."""

    async def authorise(self, info: StreamInfo) -> str | None:
        """None to accept the stream, else the reason to refuse it."""

    def session_config(self, info: StreamInfo) -> SessionConfig:
        """The agent and settings for this call (chosen from its parameters)."""

    async def connect_model(self, info: StreamInfo) -> ClientConnection:
        """An open Realtime connection for this call."""

    async def run_tool(
        self, info: StreamInfo, config: SessionConfig, action: RunTool
    ) -> tuple[str, dict[str, Any] | None]:
        """Run a tool: (output JSON, call-control request as a dict or None)."""

    async def call_control(self, action: CallControl) -> None:
        """Hang up or transfer the call through Twilio's REST API."""

    def call_event(self, relay: CallRelay, action: Action) -> None:
        """Transcript lines, usage, call start and end: for the store and metrics."""


class TapeSink(Protocol):
    def input(self, now: int, item: CallInput) -> None: ...
    def output(self, now: int, action: Action, wire: str | None) -> None: ...
    def close(self) -> None: ...


class CallRelay:
    """Runs one call until either side ends it."""

    def __init__(
        self,
        twilio: WebSocket,
        session: CallSession,
        hooks: CallHooks,
        *,
        clock: Callable[[], float] = time.monotonic,
        tape: TapeSink | None = None,
        max_frame_bytes: int = 256 * 1024,
    ) -> None:
        self.twilio = twilio
        self.session = session
        self.hooks = hooks
        self.tape = tape
        self.max_frame_bytes = max_frame_bytes
        self._clock = clock
        self.model: ClientConnection | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._model_task: asyncio.Task[None] | None = None
        self._done = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._closing = False
        self.end_reason: str | None = None
        self.started_wall = time.time()
        self.info: StreamInfo | None = None

    def now(self) -> int:
        return int(self._clock() * 1000)

    @property
    def call_sid(self) -> str | None:
        return self.info.call_sid if self.info else None

    # ---------------------------------------------------------------- inputs

    async def step(self, item: CallInput) -> None:
        """Feed one input to the core and carry out what it asks, in order."""
        now = self.now()
        if self.tape is not None:
            self.tape.input(now, item)
        actions = apply_input(self.session, item, now)
        if actions:
            await self._perform(actions, now)

    async def run(self) -> str:
        """Read Twilio until the call ends; return the end reason."""
        reader = asyncio.create_task(self._read_twilio(), name="twilio-reader")
        self._tasks.add(reader)
        try:
            await self._done.wait()
        finally:
            await self._shutdown()
        return self.end_reason or "unknown"

    async def tick(self) -> None:
        if not self._closing:
            await self.step(CallInput("tick"))

    async def end(self, reason: str, detail: str = "") -> None:
        """End the call from outside (shutdown, call control); a no-op once it is ending."""
        if self._closing:
            return
        await self.step(CallInput("end", data={"reason": reason, "detail": detail}))

    async def _read_twilio(self) -> None:
        receive = self.twilio.receive
        detail = ""
        try:
            while not self._closing:
                message = await receive()
                if message["type"] != "websocket.receive":
                    detail = f"close code {message.get('code')}"
                    break
                frame = message.get("text")
                if frame is None:
                    frame = message.get("bytes") or b""
                if len(frame) > self.max_frame_bytes:
                    log.warning(
                        "call %s: dropping oversized Twilio frame (%d bytes)",
                        self.call_sid,
                        len(frame),
                    )
                    continue
                await self.step(CallInput("twilio", frame))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # the socket broke under us
            detail = f"{exc.__class__.__name__}"
        if not self._closing:
            await self.step(CallInput("twilio_closed", data={"detail": detail}))

    async def _read_model(self, model: ClientConnection) -> None:
        from websockets.exceptions import ConnectionClosed

        code: int | None = None
        detail = ""
        try:
            async for frame in model:
                if self._closing:
                    return
                await self.step(CallInput("model", frame))
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            detail = exc.__class__.__name__
        if model.close_code is not None:
            code = model.close_code
            detail = detail or (model.close_reason or "")
        if not self._closing:
            await self.step(CallInput("model_closed", data={"code": code, "detail": detail}))

    # --------------------------------------------------------------- actions

    async def _perform(self, actions: list[Action], now: int) -> None:
        """Carry out ``actions`` in order.

        One lock is held for the whole list: another task's step may compute its
        actions while ours are still being written, and its frames must go out after
        ours, never in between (audio appends would reorder).  Only ``StreamStarted``
        releases it, because authorising the stream feeds the core again.
        """
        lock = self._send_lock
        await lock.acquire()
        try:
            for action in actions:
                kind = type(action)
                if kind is SendTwilio or kind is SendModel:
                    await self._send(action, now)  # type: ignore[arg-type]
                    continue
                if self.tape is not None:
                    self.tape.output(now, action, None)
                if kind is StreamStarted:
                    lock.release()
                    try:
                        await self._perform_other(action)
                    finally:
                        await lock.acquire()
                else:
                    await self._perform_other(action)
        finally:
            lock.release()

    async def _send(self, action: SendTwilio | SendModel, now: int) -> None:
        if type(action) is SendTwilio:
            text = action.wire or _dumps(action.message)  # type: ignore[union-attr]
            if self.tape is not None:
                self.tape.output(now, action, text)
            if not self._closing:
                try:
                    await self.twilio.send_text(text)
                except Exception:  # noqa: BLE001 - the reader sees the close and ends the call
                    pass
            return
        text = action.wire or _dumps(action.event)  # type: ignore[union-attr]
        if self.tape is not None:
            self.tape.output(now, action, text)
        model = self.model
        if model is not None and not self._closing:
            try:
                if not send_now(model, text):
                    await model.send(text)
            except Exception:  # noqa: BLE001 - the model reader sees the close
                pass

    async def _perform_other(self, action: Action) -> None:
        if isinstance(action, StreamStarted):
            self.info = action.info
            refusal = await self.hooks.authorise(action.info)
            if refusal is not None:
                await self.step(
                    CallInput("end", data={"reason": "unauthorised", "detail": refusal})
                )
                return
            config = self.hooks.session_config(action.info)
            self.hooks.call_event(self, action)
            await self.step(CallInput("accept", config=config))
        elif isinstance(action, ConnectModel):
            self._spawn(self._connect_model(), "model-connect")
        elif isinstance(action, RunTool):
            self._spawn(self._run_tool(action), f"tool-{action.name}")
        elif isinstance(action, CallControl):
            self._spawn(self._call_control(action), f"control-{action.kind}")
        elif isinstance(action, Notice):
            level = getattr(logging, action.level.upper(), logging.INFO)
            log.log(level, "call %s: %s (%s)", self.call_sid, action.message, action.code)
        elif isinstance(action, (TranscriptLine, Usage)):
            self.hooks.call_event(self, action)
        elif isinstance(action, EndCall):
            self.end_reason = action.reason
            self._closing = True
            log.info("call %s ended: %s %s", self.call_sid, action.reason, action.detail)
            self.hooks.call_event(self, action)
            self._done.set()

    def _spawn(self, coro: Awaitable[None], name: str) -> None:
        task = asyncio.ensure_future(coro)
        task.set_name(name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect_model(self) -> None:
        assert self.info is not None
        try:
            model = await self.hooks.connect_model(self.info)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            detail = f"{exc.__class__.__name__}: {exc}"[:300]
            await self.step(CallInput("model_failed", data={"detail": detail}))
            return
        if self._closing:
            await model.close()
            return
        self.model = model
        await self.step(CallInput("model_connected"))
        self._model_task = asyncio.create_task(self._read_model(model), name="model-reader")
        self._tasks.add(self._model_task)

    async def _run_tool(self, action: RunTool) -> None:
        assert self.info is not None
        output, control = await self.hooks.run_tool(self.info, self.session.config, action)
        if not self._closing:
            await self.step(
                CallInput(
                    "tool_result",
                    data={"call_id": action.call_id, "output": output, "control": control},
                )
            )

    async def _call_control(self, action: CallControl) -> None:
        try:
            await self.hooks.call_control(action)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.error("call %s: %s failed: %s", self.call_sid, action.kind, exc)
            return
        log.info("call %s: %s done", self.call_sid, action.kind)

    # --------------------------------------------------------------- closing

    async def _shutdown(self) -> None:
        """Close both sockets exactly once, promptly, whatever state they are in."""
        self._closing = True
        current = asyncio.current_task()
        for task in list(self._tasks):
            if task is not current and not task.done() and task.get_name() != "model-connect":
                task.cancel()
        model, self.model = self.model, None
        closers = []
        if model is not None:
            closers.append(asyncio.wait_for(model.close(), timeout=1.0))
        closers.append(asyncio.wait_for(self._close_twilio(), timeout=1.0))
        results = await asyncio.gather(*closers, return_exceptions=True)
        if model is not None and isinstance(results[0], BaseException):
            model.transport.abort()
        for task in list(self._tasks):
            if task.get_name() == "model-connect" and not task.done():
                task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=1.0)
        if self.tape is not None:
            self.tape.close()

    async def _close_twilio(self) -> None:
        from starlette.websockets import WebSocketState

        if self.twilio.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.twilio.close(code=1000, reason=(self.end_reason or "")[:100])
