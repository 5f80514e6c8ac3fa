"""What the running service does for a call when its core asks: the relay's hooks.

Authorising the stream (its single-use token), choosing the agent, running
tools, calling the phone network, and keeping records and metrics.  These are
effects, not rules: the rules that decide *when* each happens live in
``bridge.core``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from bridge.audio.prompts import bundled_prompt, load_prompt
from bridge.config import VOICES, AgentConfig, Settings
from bridge.core.actions import (
    Action,
    AuthoriseStream,
    ControlCall,
    EndCall,
    Notice,
    Observed,
    RunTool,
    TranscriptLine,
    Usage,
)
from bridge.core.config import CallConfig, ControlRequest
from bridge.core.stream import StreamInfo
from bridge.logs import bind_call
from bridge.tools import ToolContext, ToolRegistry
from bridge.tools.builtins import build_registry
from bridge.twilio.twiml import PARAM_TOKEN

if TYPE_CHECKING:
    from bridge.admission import Admission
    from bridge.agents import AgentDirectory
    from bridge.call.relay import CallRelay
    from bridge.metrics import Metrics
    from bridge.store.callstore import CallStore
    from bridge.twilio.calls import TwilioCalls
    from bridge.twilio.stream_guard import PendingStreams
    from bridge.twilio.stream_token import StreamTokens, TokenClaims

log = logging.getLogger("bridge")


class ServiceHooks:
    """The relay's ``CallHooks``, backed by the process's shared collaborators."""

    def __init__(
        self,
        settings: Settings,
        agents: AgentDirectory,
        tokens: StreamTokens,
        claims: TokenClaims,
        admission: Admission,
        metrics: Metrics,
        store: CallStore | None,
        calls: TwilioCalls | None,
    ) -> None:
        self.settings = settings
        self.agents = agents
        self.tokens = tokens
        self.claims = claims
        self.admission = admission
        self.pending: PendingStreams | None = None
        """Set by the services: sockets whose stream has not started (capped)."""
        self.metrics = metrics
        self.store = store
        self.calls = calls
        # The prompts played when the model is away: loaded (and checked) once.
        self.filler_audio = (
            load_prompt(settings.filler_audio)
            if settings.filler_audio
            else bundled_prompt("one_moment")
        )
        self.apology_audio = (
            load_prompt(settings.apology_audio)
            if settings.apology_audio
            else bundled_prompt("apology")
        )
        self._registries: dict[str, ToolRegistry] = {
            name: build_registry(agent.tools) for name, agent in agents.agents.items()
        }

    # ------------------------------------------------------------ the agent

    def agent_for(self, info: StreamInfo) -> AgentConfig:
        params = info.custom_parameters
        name = params.get("agent")
        if name and name in self.agents.agents:
            return self.agents.agents[name]
        return self.agents.for_number(params.get("To"))

    def registry(self, agent: AgentConfig) -> ToolRegistry:
        """The agent's tools, built once per profile at start-up."""
        registry = self._registries.get(agent.name)
        if registry is None:
            registry = self._registries[agent.name] = build_registry(agent.tools)
        return registry

    def call_config(self, agent: AgentConfig | StreamInfo) -> CallConfig:
        if isinstance(agent, StreamInfo):
            info = agent
            agent = self.agent_for(info)
            # A caller leg may choose the voice (the softphone's picker does).
            voice = info.custom_parameters.get("voice")
            if voice in VOICES and voice != agent.voice:
                agent = replace(agent, voice=voice)
        settings = self.settings
        config = CallConfig(
            agent=agent,
            audio_mode=settings.audio_mode,
            model=settings.realtime_model,
            tools=tuple(self.registry(agent).definitions()),
            max_call_ms=settings.max_call_seconds * 1000,
            start_timeout_ms=int(settings.start_timeout_s * 1000),
            filler_audio=self.filler_audio,
            apology_audio=self.apology_audio,
            reconnect=settings.reconnect,
            reconnect_budget_ms=int(settings.reconnect_budget_s * 1000),
            filler_after_ms=settings.filler_after_ms,
            rollover_after_ms=int(settings.rollover_after_s * 1000),
            tool_filler_after_ms=settings.tool_filler_after_ms or None,
            rest_control=self.calls is not None,
        )
        if settings.tool_filler_instructions:
            config = replace(config, tool_filler_instructions=settings.tool_filler_instructions)
        return config

    # ------------------------------------------------------------- CallHooks

    async def authorise(self, info: StreamInfo) -> str | None:
        if self.settings.insecure_dev and not self.settings.twilio_auth_token:
            log.warning(
                "call %s: BRIDGE_INSECURE_DEV=1 - stream accepted without verification",
                info.call_sid,
            )
            return None
        started = time.perf_counter()
        check = await self.tokens.redeem(
            info.custom_parameters.get(PARAM_TOKEN),
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

    def _observed(self, relay: CallRelay, action: Observed) -> None:
        metrics, kind, data = self.metrics, action.kind, action.data
        if kind == "turn_latency":
            metrics.turn_latency_seconds.observe(data["ms"] / 1000)
        elif kind == "reconnected":
            metrics.reconnects.labels(str(data.get("cause", "unknown"))[:64]).inc()
            metrics.reconnect_gap_seconds.observe(data["gap_ms"] / 1000)
            log.warning(
                "call %s: model reconnected after %d ms (%s)",
                relay.call_sid,
                data["gap_ms"],
                data.get("cause"),
            )
        elif kind == "rollover":
            metrics.rollovers.inc()
        elif kind == "fallback":
            metrics.fallbacks.labels(str(data.get("cause", "unknown"))[:64]).inc()

    async def run_tool(
        self, info: StreamInfo, config: CallConfig, action: RunTool
    ) -> tuple[str, ControlRequest | None]:
        params = info.custom_parameters
        context = ToolContext(
            call_sid=info.call_sid,
            stream_sid=info.stream_sid,
            from_number=params.get("From"),
            to_number=params.get("To"),
            agent_name=config.agent.name,
            custom_parameters={k: v for k, v in params.items() if k != PARAM_TOKEN},
            transfer_numbers=self.settings.transfer_numbers,
            transfer_labels=self.agents.transfer_labels,
        )
        outcome = await self.registry(config.agent).run(action.name, action.arguments, context)
        self.metrics.tools.labels("ok" if outcome.ok else "error").inc()
        if not outcome.ok:
            log.info("call %s: tool %s failed: %s", info.call_sid, action.name, outcome.error)
        control = outcome.control
        if control is None:
            return outcome.output, None
        return outcome.output, ControlRequest(
            control.kind, control.target, control.digits, control.reason
        )

    async def control_call(self, action: ControlCall) -> None:
        calls = self.calls
        if calls is None:  # the core only asks when REST control is configured
            raise RuntimeError("Twilio REST call control is not configured")
        if action.kind == "hang_up":
            await calls.hang_up(action.call_sid)
        else:
            assert action.target is not None
            await calls.transfer(action.call_sid, action.target)

    def call_event(self, relay: CallRelay, action: Action) -> None:
        store = self.store
        if isinstance(action, Observed):
            self._observed(relay, action)
            return
        if isinstance(action, Notice):
            if action.code.startswith("model_error:"):
                self.metrics.model_errors.labels(action.code.partition(":")[2][:64]).inc()
            return
        if isinstance(action, AuthoriseStream):
            info = action.info
            self.admission.started(info.call_sid)
            bind_call(info.call_sid, info.stream_sid)
            if self.pending is not None:
                self.pending.started(relay.caller)
            params = info.custom_parameters
            agent = self.agent_for(info)
            log.info(
                "call %s started (stream %s, agent %s)", info.call_sid, info.stream_sid, agent.name
            )
            if store is not None:
                store.record_call_started(
                    info.call_sid,
                    stream_sid=info.stream_sid,
                    from_number=params.get("From"),
                    to_number=params.get("To"),
                    agent=agent.name,
                    audio_mode=self.settings.audio_mode,
                    dialect=self.settings.dialect,
                    started_at=datetime.now(UTC),
                )
            return
        stream = relay.info
        if stream is None or store is None:
            return
        info = stream
        if isinstance(action, TranscriptLine):
            store.record_turn(
                info.call_sid,
                action.seq,
                action.speaker,
                action.text,
                start_ms=action.start_ms,
                end_ms=action.end_ms,
                interrupted=action.interrupted,
            )
        elif isinstance(action, Usage):
            store.record_usage(
                info.call_sid,
                action.response_id,
                action.usage,
                audio_in_s=action.audio_in_ms / 1000,
                audio_out_s=action.audio_out_ms / 1000,
                status=action.status,
            )
        elif isinstance(action, EndCall):
            store.record_call_ended(info.call_sid, action.reason)
            stats = relay.call.stats
            fallback = relay.call.fallback
            if stats["reconnects"] or stats["rollovers"] or fallback:
                store.record_resilience(
                    info.call_sid,
                    stats["reconnects"],
                    stats["model_gap_ms"],
                    stats["rollovers"],
                    fallback,
                )

