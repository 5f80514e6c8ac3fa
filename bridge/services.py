"""The composition root: everything a running bridge shares between calls.

Built once from :class:`~bridge.config.Settings`; the relay talks to it
through the small :class:`~bridge.relay.CallHooks` interface, so the relay
stays ignorant of stores, agents, tokens and REST clients.  It also owns the
set of live calls, the one ticker that drives every call's timers, and the
draining flag used on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge.agents import AgentDirectory, load_agents
from bridge.config import VOICES, AgentConfig, Settings
from bridge.core.actions import (
    Action,
    CallControl,
    EndCall,
    RunTool,
    StreamStarted,
    TranscriptLine,
    Usage,
)
from bridge.core.session import CallSession, SessionConfig
from bridge.metrics import Metrics
from bridge.realtime.connection import ModelConnector, ModelEndpoint
from bridge.realtime.dialects import DialectSpec, dialect_for
from bridge.tools import ToolContext, ToolRegistry
from bridge.tools.builtins import build_registry
from bridge.twilio.media import StreamInfo
from bridge.twilio.stream_token import StreamTokens
from bridge.twilio.twiml import PARAM_TOKEN

if TYPE_CHECKING:
    from starlette.websockets import WebSocket
    from websockets.asyncio.client import ClientConnection

    from bridge.relay import CallRelay, TapeSink
    from bridge.store.callstore import CallStore
    from bridge.twilio.calls import CallControl as TwilioCalls

log = logging.getLogger("bridge")

STREAM_TOKEN_PARAM = PARAM_TOKEN
#: How long a webhook-admitted call holds a place before its stream must start.
ADMISSION_TTL_S = 15.0


def default_tools(agent: AgentConfig, settings: Settings) -> tuple[str, ...]:
    """The env agent's tools: as configured, else hang-up (and transfer when numbers exist)."""
    if agent.tools:
        return agent.tools
    return ("hang_up", "transfer_call") if settings.transfer_numbers else ("hang_up",)


def agent_directory(settings: Settings) -> AgentDirectory:
    """The agents to serve: the agents file's profiles, or the environment's one agent.

    Profiles inherit unset fields from the environment agent, tools included, so the
    default tools apply to both the same way."""
    base = settings.agent
    if not base.tools:
        base = AgentConfig(**{**_agent_fields(base), "tools": default_tools(base, settings)})
    if settings.agents_file:
        return load_agents(settings.agents_file, base)
    return AgentDirectory.single(base)


class BridgeServices:
    """Shared state and collaborators of one bridge process."""

    def __init__(
        self,
        settings: Settings,
        *,
        agents: AgentDirectory | None = None,
        store: CallStore | None = None,
        calls: TwilioCalls | None = None,
        tick_ms: int = 100,
    ) -> None:
        self.settings = settings
        self.dialect: DialectSpec = dialect_for(settings.dialect, settings.realtime_url)
        if agents is None:
            agents = agent_directory(settings)
        self.agents = agents
        self._registries: dict[str, ToolRegistry] = {
            name: build_registry(agent.tools) for name, agent in agents.agents.items()
        }
        self.tokens = StreamTokens.from_auth_token(settings.twilio_auth_token)
        self.connector = ModelConnector(
            ModelEndpoint(
                url=settings.realtime_url,
                model=settings.realtime_model,
                dialect=self.dialect,
                api_key=settings.openai_api_key,
            )
        )
        self.store = store
        self.calls = calls
        self.metrics = Metrics()
        self.active: set[CallRelay] = set()
        self.draining = False
        self.tick_ms = tick_ms
        self._ticker: asyncio.Task[None] | None = None
        self._turn_seq: dict[str, int] = {}
        self._admitted: dict[str, float] = {}
        #: Per-call observers (the operator console, recordings): each factory gets the
        #: session and the caller's socket and returns a ``TapeSink`` or None.
        self.call_sinks: list[Callable[[CallSession, WebSocket], TapeSink | None]] = []

    # ------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        if self.store is not None:
            await self.store.start()
        self._ticker = asyncio.create_task(self._tick_forever(), name="bridge-ticker")

    async def drain(self, grace_s: float) -> None:
        """Refuse new calls, let live ones finish for ``grace_s``, then end the rest."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while self.active and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for relay in list(self.active):
            await relay.end("shutdown", "the bridge is shutting down")
        # Give the relays a moment to close their sockets.
        for _ in range(20):
            if not self.active:
                break
            await asyncio.sleep(0.05)

    async def close(self, grace_s: float = 0.0) -> None:
        """Drain, then release the ticker, pre-opened connections, store and REST client."""
        await self.drain(grace_s)
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await self.connector.close()
        if self.store is not None:
            await self.store.close()
        if self.calls is not None:
            self.calls.close()

    async def _tick_forever(self) -> None:
        """One timer for every call: cheaper than a sleeping task per call."""
        interval = self.tick_ms / 1000
        while True:
            await asyncio.sleep(interval)
            for relay in list(self.active):
                try:
                    await relay.tick()
                except Exception:  # a fault in one call never touches another
                    log.exception("call %s: tick failed", relay.call_sid)

    # ------------------------------------------------------------------ calls

    @property
    def at_capacity(self) -> bool:
        """Live calls plus calls answered by the webhook whose stream has not started yet.

        Counting the admitted-but-not-started calls keeps a burst of incoming calls from
        all passing the check before any of their streams arrives."""
        return len(self.active) + self._admitted_count() >= self.settings.max_calls

    def admit(self, call_sid: str) -> None:
        """The webhook answered ``call_sid`` with a stream: hold its place for a while."""
        self._admitted[call_sid] = time.monotonic() + ADMISSION_TTL_S

    def _admitted_count(self) -> int:
        now = time.monotonic()
        for sid in [s for s, until in self._admitted.items() if until < now]:
            del self._admitted[sid]
        return len(self._admitted)

    def new_session(self) -> CallSession:
        return CallSession(self.session_config(self.agents.for_number(None)))

    def session_config(self, agent: AgentConfig | StreamInfo) -> SessionConfig:
        if isinstance(agent, StreamInfo):
            info = agent
            agent = self.agent_for(info)
            # A caller leg may choose the voice (the softphone's picker does).
            voice = info.custom_parameters.get("voice")
            if voice in VOICES and voice != agent.voice:
                agent = replace(agent, voice=voice)
        registry = self._registry(agent)
        config = SessionConfig(
            agent=agent,
            dialect=self.dialect,
            audio_mode=self.settings.audio_mode,
            model=self.settings.realtime_model,
            tools=tuple(registry.definitions()),
            max_call_ms=self.settings.max_call_seconds * 1000,
            tool_filler_after_ms=self.settings.tool_filler_after_ms or None,
        )
        if self.settings.tool_filler_instructions:
            config = replace(
                config, tool_filler_instructions=self.settings.tool_filler_instructions
            )
        return config

    def _registry(self, agent: AgentConfig) -> ToolRegistry:
        """The agent's tools, built once per profile at start-up."""
        registry = self._registries.get(agent.name)
        if registry is None:
            registry = self._registries[agent.name] = build_registry(agent.tools)
        return registry

    def agent_for(self, info: StreamInfo) -> AgentConfig:
        params = info.custom_parameters
        name = params.get("agent")
        if name and name in self.agents.agents:
            return self.agents.agents[name]
        return self.agents.for_number(params.get("To"))

    def mint_stream_token(self, call_sid: str) -> str:
        return self.tokens.mint(call_sid, time.time())

    # ---------------------------------------------------------- CallHooks

    def authorise(self, info: StreamInfo) -> str | None:
        if self.settings.insecure_dev and not self.settings.twilio_auth_token:
            log.warning(
                "call %s: BRIDGE_INSECURE_DEV=1 - stream accepted without verification",
                info.call_sid,
            )
            return None
        check = self.tokens.verify(
            info.custom_parameters.get(STREAM_TOKEN_PARAM), info.call_sid, time.time()
        )
        if check.ok:
            return None
        self.metrics.calls_rejected[f"stream_token_{check.reason}"] += 1
        return f"stream token {check.reason}"

    async def connect_model(self, info: StreamInfo) -> ClientConnection:
        started = time.monotonic()
        connection = await self.connector.take(info.call_sid)
        self.metrics.model_connect_ms_sum += int((time.monotonic() - started) * 1000)
        self.metrics.model_connect_count += 1
        return connection

    async def run_tool(
        self, info: StreamInfo, config: SessionConfig, action: RunTool
    ) -> tuple[str, dict[str, Any] | None]:
        registry = self._registry(config.agent)
        params = info.custom_parameters
        context = ToolContext(
            call_sid=info.call_sid,
            stream_sid=info.stream_sid,
            from_number=params.get("From"),
            to_number=params.get("To"),
            agent_name=config.agent.name,
            custom_parameters={k: v for k, v in params.items() if k != STREAM_TOKEN_PARAM},
            transfer_numbers=self.settings.transfer_numbers,
            transfer_labels=self.agents.transfer_labels,
        )
        outcome = await registry.run(action.name, action.arguments, context)
        self.metrics.tools["ok" if outcome.ok else "error"] += 1
        if not outcome.ok:
            log.info("call %s: tool %s failed: %s", info.call_sid, action.name, outcome.error)
        control = asdict(outcome.control) if outcome.control is not None else None
        return outcome.output, control

    async def call_control(self, action: CallControl) -> None:
        relay = next((r for r in self.active if r.call_sid == action.call_sid), None)
        if self.calls is None:
            if action.kind == "transfer":
                raise RuntimeError(
                    "transfer needs Twilio REST credentials (TWILIO_ACCOUNT_SID and "
                    "TWILIO_AUTH_TOKEN or an API key pair)"
                )
            # Without REST credentials, closing the stream ends the call: <Connect> has
            # no verb after it, so Twilio hangs up.
            if relay is not None:
                await relay.end("agent_hung_up", "closed the stream (no REST credentials)")
            return
        if action.kind == "hang_up":
            await self.calls.hang_up(action.call_sid)
        else:
            assert action.target is not None
            await self.calls.transfer(action.call_sid, action.target)
        if relay is not None:
            reason = "agent_hung_up" if action.kind == "hang_up" else "transferred"
            # Twilio will send stop; end now anyway so the model socket closes promptly.
            asyncio.get_running_loop().call_later(
                2.0, lambda: asyncio.ensure_future(relay.end(reason, "after call control"))
            )

    def call_event(self, relay: CallRelay, action: Action) -> None:
        store = self.store
        info = relay.info
        if isinstance(action, StreamStarted):
            self._admitted.pop(action.info.call_sid, None)
            params = action.info.custom_parameters
            agent = self.agent_for(action.info)
            log.info(
                "call %s started (stream %s, agent %s)",
                action.info.call_sid,
                action.info.stream_sid,
                agent.name,
            )
            if store is not None:
                store.record_call_started(
                    action.info.call_sid,
                    stream_sid=action.info.stream_sid,
                    from_number=params.get("From"),
                    to_number=params.get("To"),
                    agent=agent.name,
                    audio_mode=self.settings.audio_mode,
                    dialect=self.dialect.name,
                    started_at=datetime.now(UTC),
                )
            return
        if info is None:
            return
        if isinstance(action, TranscriptLine):
            log.debug("call %s %s: %s", info.call_sid, action.speaker, action.text)
            if store is not None:
                seq = self._turn_seq.get(info.call_sid, 0) + 1
                self._turn_seq[info.call_sid] = seq
                store.record_turn(
                    info.call_sid,
                    seq,
                    action.speaker,
                    action.text,
                    start_ms=action.start_ms,
                    end_ms=action.end_ms,
                    interrupted=action.interrupted,
                )
        elif isinstance(action, Usage):
            if store is not None:
                store.record_usage(
                    info.call_sid,
                    action.response_id,
                    action.usage,
                    audio_in_s=action.audio_in_ms / 1000,
                    audio_out_s=action.audio_out_ms / 1000,
                    status=action.status,
                )
        elif isinstance(action, EndCall):
            self._turn_seq.pop(info.call_sid, None)
            if store is not None:
                store.record_call_ended(info.call_sid, action.reason)

    # ----------------------------------------------------------- the relay

    async def serve_stream(self, websocket: WebSocket) -> str:
        """Run one accepted Media Stream to its end."""
        from bridge.relay import CallRelay

        tape: TapeSink | None = None
        session = self.new_session()
        if self.settings.tapes_dir:
            from bridge.tapes.recorder import open_tape

            tape = open_tape(self.settings, session)
        sinks = [s for s in (make(session, websocket) for make in self.call_sinks) if s]
        if len(sinks) == 1 and tape is None:
            tape = sinks[0]
        elif sinks:
            from bridge.operator.tap import TeeSink

            tape = TeeSink([tape, *sinks] if tape is not None else sinks)
        relay = CallRelay(
            websocket,
            session,
            self,
            tape=tape,
            max_frame_bytes=self.settings.max_message_bytes,
        )
        self.active.add(relay)
        self.metrics.calls_active = len(self.active)
        self.metrics.calls_started += 1
        try:
            return await relay.run()
        finally:
            self.active.discard(relay)
            self.metrics.calls_active = len(self.active)
            self.metrics.call_finished(relay.end_reason or "unknown", relay.session.stats)


def _agent_fields(agent: AgentConfig) -> dict[str, Any]:
    return {name: getattr(agent, name) for name in agent.__dataclass_fields__}
