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
from dataclasses import asdict, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from bridge.agents import AgentDirectory, load_agents
from bridge.config import AgentConfig, Settings
from bridge.core.actions import (
    Action,
    CallControl,
    EndCall,
    Notice,
    RunTool,
    StreamStarted,
    TranscriptLine,
    Usage,
)
from bridge.core.session import CallSession, SessionConfig
from bridge.logs import bind_call, call_log_context
from bridge.metrics import Metrics
from bridge.realtime.connection import ModelConnector, ModelEndpoint
from bridge.realtime.dialects import DialectSpec, dialect_for
from bridge.tools import ToolContext, ToolRegistry
from bridge.tools.builtins import build_registry
from bridge.twilio.media import StreamInfo
from bridge.twilio.stream_token import LocalClaims, StreamTokens, TokenClaims
from bridge.twilio.twiml import PARAM_TOKEN

if TYPE_CHECKING:
    from starlette.websockets import WebSocket
    from websockets.asyncio.client import ClientConnection

    from bridge.relay import CallRelay
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


def tokens_ledger(store: CallStore | None) -> TokenClaims:
    """Where used stream tokens are remembered: the store's database, else this process."""
    if store is None:
        return LocalClaims()
    from bridge.store.claims import StoreClaims

    return StoreClaims(store.backend)


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
        # Replay memory: the shared store when there is one (a fleet shares its database),
        # else this process's memory.
        self.claims: TokenClaims = tokens_ledger(store)
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
        self._connected: set[str] = set()  # calls that have had a model connection
        self._caller_spoke_ms: dict[str, int] = {}  # call -> end of the caller's last turn
        self._export_live_gauges()

    def _export_live_gauges(self) -> None:
        """Gauges read at scrape time from the state that already holds them."""
        m = self.metrics
        m.gauge("calls_active", "Calls in progress on this replica", lambda: len(self.active))
        m.gauge(
            "calls_admitted",
            "Calls answered by the webhook whose stream has not started yet",
            # Read from the scrape thread: copy, never evict (no mutation off the loop).
            lambda: sum(1 for until in list(self._admitted.values()) if until >= time.monotonic()),
        )
        m.gauge(
            "max_calls", "BRIDGE_MAX_CALLS (per replica)", lambda: self.settings.max_calls
        )
        m.gauge("draining", "1 while draining after SIGTERM", lambda: int(self.draining))
        m.gauge(
            "model_preconnected",
            "Model sockets pre-opened by the webhook, not yet taken",
            lambda: self.connector.warm_count,
        )
        m.gauge(
            "stream_tokens_remembered",
            "Used stream tokens in this process's memory",
            lambda: self.tokens.remembered,
        )
        if self.store is not None:
            store = self.store
            m.gauge(
                "store_pending_records",
                "Call records queued, not yet written (the store backlog)",
                lambda: store.stats.pending,
            )
            m.gauge(
                "store_failing",
                "1 while the call-record database is failing (records are held)",
                lambda: int(store.stats.failing),
            )
            m.gauge(
                "store_dropped_records",
                "Records dropped: queue overflow plus rows the database refused",
                lambda: store.stats.dropped_overflow + store.stats.dropped_bad,
            )

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
        close_claims = getattr(self.claims, "close", None)
        if close_claims is not None:
            await close_claims()
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
            agent = self.agent_for(agent)
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

    async def authorise(self, info: StreamInfo) -> str | None:
        if self.settings.insecure_dev and not self.settings.twilio_auth_token:
            log.warning(
                "call %s: BRIDGE_INSECURE_DEV=1 - stream accepted without verification",
                info.call_sid,
            )
            return None
        started = time.perf_counter()
        check = await self.tokens.redeem(
            info.custom_parameters.get(STREAM_TOKEN_PARAM),
            info.call_sid,
            time.time(),
            self.claims,
            local_on_outage=self.settings.replay_outage == "local",
        )
        self.metrics.token_check_seconds.observe(time.perf_counter() - started)
        if check.ok:
            return None
        self.metrics.reject(f"stream_token_{check.reason}".replace(" ", "_"))
        return f"stream token {check.reason}"

    async def connect_model(self, info: StreamInfo) -> ClientConnection:
        started = time.perf_counter()
        if info.call_sid in self._connected:
            self.metrics.model_reconnects.inc()
        else:
            warm = self.connector.is_warm(info.call_sid)
            self.metrics.preconnect.labels("hit" if warm else "miss").inc()
        connection = await self.connector.take(info.call_sid)
        self.metrics.model_connect_seconds.observe(time.perf_counter() - started)
        self.metrics.model_connects.inc()
        self._connected.add(info.call_sid)
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
        self.metrics.tools.labels("ok" if outcome.ok else "error").inc()
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
            bind_call(action.info.call_sid, action.info.stream_sid)
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
        if isinstance(action, Notice):
            # Only reaches here if the relay forwards notices (see the report to the lead).
            if action.code.startswith("model_error:"):
                self.metrics.model_errors.labels(action.code.partition(":")[2][:64]).inc()
            return
        if isinstance(action, TranscriptLine):
            self._observe_turn(info.call_sid, action)
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
            self._connected.discard(info.call_sid)
            self._caller_spoke_ms.pop(info.call_sid, None)
            if store is not None:
                store.record_call_ended(info.call_sid, action.reason)

    def _observe_turn(self, call_sid: str, line: TranscriptLine) -> None:
        """Turn latency from transcript timings: caller's end of speech → agent's first audio.

        The core has no latency event yet; the transcript's call-relative timestamps are
        the closest thing it exposes.  Needs caller transcription on (the default)."""
        if line.speaker == "caller":
            self._caller_spoke_ms[call_sid] = line.end_ms
        elif line.speaker == "agent":
            spoke = self._caller_spoke_ms.pop(call_sid, None)
            if spoke is not None and line.start_ms >= spoke:
                self.metrics.turn_latency_seconds.observe((line.start_ms - spoke) / 1000)

    # ----------------------------------------------------------- the relay

    async def serve_stream(self, websocket: WebSocket) -> str:
        """Run one accepted Media Stream to its end."""
        from bridge.relay import CallRelay

        tape = None
        session = self.new_session()
        if self.settings.tapes_dir:
            from bridge.tapes.recorder import open_tape

            tape = open_tape(self.settings, session)
        relay = CallRelay(
            websocket,
            session,
            self,
            tape=tape,
            max_frame_bytes=self.settings.max_message_bytes,
        )
        self.active.add(relay)
        self.metrics.calls_started.inc()
        call_log_context()  # this task and those the relay spawns log the call's ids
        try:
            return await relay.run()
        finally:
            self.active.discard(relay)
            self.metrics.call_finished(relay.end_reason or "unknown", relay.session.stats)


def _agent_fields(agent: AgentConfig) -> dict[str, Any]:
    return {name: getattr(agent, name) for name in agent.__dataclass_fields__}
