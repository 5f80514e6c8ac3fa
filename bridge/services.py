"""The composition root: everything one running bridge process shares between calls.

Built once from :class:`~bridge.config.Settings`.  It wires the collaborators
(agents, stream tokens, the model backend, the store, Twilio REST, metrics)
and runs each accepted stream as a :class:`~bridge.call.relay.CallRelay`.  It
holds no call rules (those are in ``bridge.core``), no admission policy
(``bridge.admission``) and no effects of its own (``bridge.hooks``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge.admission import Admission
from bridge.agents import AgentDirectory, load_agents
from bridge.backend_router import BackendRouter
from bridge.call.backend import ModelBackend, ModelConnection
from bridge.config import AgentConfig, ConfigError, Settings
from bridge.core.call import Call
from bridge.core.stream import StreamInfo
from bridge.hooks import ServiceHooks
from bridge.jsoncodec import json_loads
from bridge.logs import call_log_context
from bridge.metrics import Metrics
from bridge.realtime.backend import RealtimeBackend
from bridge.realtime.connection import ModelConnector, ModelEndpoint
from bridge.realtime.dialects import DialectSpec, dialect_for
from bridge.twilio.media import TwilioMediaProtocol
from bridge.twilio.stream_guard import PendingStreams
from bridge.twilio.stream_token import LocalClaims, StreamTokens, TokenClaims

if TYPE_CHECKING:
    from bridge.call.leg import CallerProtocol, CallerSocket
    from bridge.call.relay import CallRelay, TapeSink
    from bridge.store.callstore import CallStore
    from bridge.twilio.calls import TwilioCalls


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


def check_fallback_numbers(agents: AgentDirectory, settings: Settings) -> None:
    """A fallback transfer goes only to an allowed number, like the agent's own transfers."""
    allowed = set(settings.transfer_numbers) | set(agents.transfer_labels.values())
    problems = [
        f"agent {agent.name!r}: fallback_number {agent.fallback_number!r} is not in "
        "TRANSFER_NUMBERS or the agents file's [transfer] table"
        for agent in agents.agents.values()
        if agent.on_model_failure == "transfer" and agent.fallback_number not in allowed
    ]
    if problems:
        raise ConfigError(problems)


def tokens_ledger(store: CallStore | None) -> TokenClaims:
    """Where used stream tokens are remembered: the store's database, else this process."""
    if store is None:
        return LocalClaims()
    from bridge.store.claims import StoreClaims

    return StoreClaims(store.backend)


class MeteredBackend:
    """A model backend whose connects are measured: time and pre-connect hits."""

    def __init__(self, backend: ModelBackend, connector: ModelConnector, metrics: Metrics):
        self.backend = backend
        self.connector = connector
        self.metrics = metrics
        self._connected: set[str] = set()  # calls that have had a model connection

    async def connect(self, info: StreamInfo) -> ModelConnection:
        metrics = self.metrics
        started = time.perf_counter()
        # Only a call's first connect can find the webhook's pre-opened socket.  Repeat
        # connects are counted by the core, by cause (bridge_reconnects_total{cause}),
        # which tells a reconnect from a rollover's standby.
        if info.call_sid not in self._connected:
            hit = self.connector.is_warm(info.call_sid)
            metrics.preconnect.labels("hit" if hit else "miss").inc()
        connection = await self.backend.connect(info)
        metrics.model_connect_seconds.observe(time.perf_counter() - started)
        metrics.model_connects.inc()
        self._connected.add(info.call_sid)
        return connection

    def forget(self, call_sid: str) -> None:
        self._connected.discard(call_sid)


class BridgeServices:
    """Shared state and collaborators of one bridge process."""

    def __init__(
        self,
        settings: Settings,
        *,
        agents: AgentDirectory | None = None,
        store: CallStore | None = None,
        calls: TwilioCalls | None = None,
    ) -> None:
        self.settings = settings
        self.dialect: DialectSpec = dialect_for(settings.dialect, settings.realtime_url)
        self.agents = agents if agents is not None else agent_directory(settings)
        check_fallback_numbers(self.agents, settings)
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
        self.json_loads = json_loads(settings.json_codec)
        self.store = store
        self.calls = calls
        self.metrics = Metrics()
        self.metered = MeteredBackend(
            RealtimeBackend(self.connector, self.dialect, settings.audio_mode, self.json_loads),
            self.connector,
            self.metrics,
        )
        self.router = BackendRouter(
            self.metered,
            lambda info: self.hooks.agent_for(info),
            self.agents.agents.values(),
            settings.cascade,
            audio_mode=settings.audio_mode,
            metrics=self.metrics,
        )
        self.backend: ModelBackend = self.router
        self.admission = Admission(settings.max_calls)
        self.hooks = ServiceHooks(
            settings,
            self.agents,
            self.tokens,
            self.claims,
            self.admission,
            self.metrics,
            store,
            calls,
        )
        self.active: set[CallRelay] = set()
        self.pending = PendingStreams(settings.max_pending_streams)
        self.hooks.pending = self.pending
        #: Per-call observers (the operator console, recordings): each factory gets the
        #: call and the caller's socket and returns a ``TapeSink`` or None.
        self.call_sinks: list[Callable[[Call, CallerProtocol], TapeSink | None]] = []
        self._export_live_gauges()

    def _export_live_gauges(self) -> None:
        """Gauges read at scrape time from the state that already holds them."""
        m = self.metrics
        m.gauge("calls_active", "Calls in progress on this replica", lambda: len(self.active))
        m.gauge(
            "calls_admitted",
            "Calls answered by the webhook whose stream has not started yet",
            self.admission.admitted_now,
        )
        m.gauge("max_calls", "BRIDGE_MAX_CALLS (per replica)", lambda: self.settings.max_calls)
        m.gauge("draining", "1 while draining after SIGTERM", lambda: int(self.draining))
        m.gauge(
            "model_preconnected",
            "Model sockets pre-opened by the webhook, not yet taken",
            lambda: self.connector.warm_count,
        )
        m.gauge(
            "streams_pending",
            "Media Stream sockets accepted and waiting for a valid start",
            lambda: self.pending.count,
        )
        m.counts(
            "model_preconnect",
            "Model sockets pre-opened at the webhook, by outcome",
            "outcome",
            lambda: self.connector.stats,
        )
        m.counts(
            "streams_pending_outcome",
            "Media Stream sockets that waited for a start, by outcome",
            "outcome",
            lambda: self.pending.stats,
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

    @property
    def draining(self) -> bool:
        return self.admission.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.admission.draining = value

    async def start(self) -> None:
        if self.store is not None:
            await self.store.start()

    async def drain(self, grace_s: float) -> None:
        """Refuse new calls, let live ones (and those whose webhook was answered but
        whose stream is still connecting) finish for ``grace_s``, then end the rest."""
        self.draining = True
        deadline = time.monotonic() + grace_s
        while (self.active or self.admission.admitted_now()) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        for relay in list(self.active):
            relay.end("shutdown", "the bridge is shutting down")
        for _ in range(20):  # give the relays a moment to close their sockets
            if not self.active:
                break
            await asyncio.sleep(0.05)

    async def close(self, grace_s: float = 0.0) -> None:
        """Drain, then release pre-opened connections, the store and the REST client."""
        await self.drain(grace_s)
        await self.connector.close()
        await self.router.aclose()
        close_claims = getattr(self.claims, "close", None)
        if close_claims is not None:
            await close_claims()
        if self.store is not None:
            await self.store.close()
        if self.calls is not None:
            self.calls.close()

    # ------------------------------------------------------------------ calls

    @property
    def at_capacity(self) -> bool:
        return self.admission.at_capacity

    def admit(self, call_sid: str) -> None:
        self.admission.admit(call_sid)

    def wants_preconnect(self, to_number: str | None) -> bool:
        """Whether the webhook should pre-open a Realtime socket for a call to this number:
        not when its agent is served by the cascade (which opens its own STT stage)."""
        return self.settings.preconnect and not self.router.is_cascade(
            self.agents.for_number(to_number)
        )

    def mint_stream_token(self, call_sid: str) -> str:
        return self.tokens.mint(call_sid, time.time())

    def new_call(self) -> Call:
        """A call for a socket just accepted; its agent is chosen when the stream starts."""
        config = self.hooks.call_config(self.agents.for_number(None))
        codec = None
        if config.audio_mode != "passthrough":
            from bridge.audio.transcoder import Pcm16Transcoder

            codec = Pcm16Transcoder()
        return Call(config, codec)

    async def serve_stream(
        self, socket: CallerSocket, leg: CallerProtocol | None = None
    ) -> str:
        """Run one accepted caller stream (Twilio Media Streams by default) to its end."""
        from bridge.call.relay import CallRelay

        call = self.new_call()
        tape: TapeSink | None = None
        if self.settings.tapes_dir:
            from bridge.tapes.recorder import open_tape

            tape = open_tape(self.settings, call)
        leg = leg or TwilioMediaProtocol(self.json_loads)
        sinks = [s for s in (make(call, leg) for make in self.call_sinks) if s]
        if sinks:
            from bridge.operator.tap import TeeSink

            tape = TeeSink([tape, *sinks]) if tape is not None else TeeSink(sinks)
        relay = CallRelay(
            socket,
            leg,
            call,
            self.backend,
            self.hooks,
            tape=tape,
            max_frame_bytes=self.settings.max_message_bytes,
        )
        self.active.add(relay)
        self.admission.live = len(self.active)
        self.metrics.calls_started.inc()
        call_log_context()  # this task and those the relay spawns log the call's ids
        try:
            return await relay.run()
        finally:
            self.active.discard(relay)
            self.admission.live = len(self.active)
            if relay.info is not None:
                self.metered.forget(relay.info.call_sid)
            self.metrics.call_finished(relay.end_reason or "unknown", relay.call.stats)
            for kind, count in relay.call.problems.counts.items():
                self.metrics.protocol_problems.labels(kind[:80]).inc(count)


def _agent_fields(agent: AgentConfig) -> dict[str, Any]:
    return {name: getattr(agent, name) for name in agent.__dataclass_fields__}
