"""Which model backend serves a call: chosen per call, once its agent is known.

The relay asks one :class:`~bridge.call.backend.ModelBackend` for a connection and
never learns which kind it got.  :class:`BackendRouter` is that backend for a
process that serves both kinds: an agent profile's ``backend = "cascade"`` (or
``BRIDGE_BACKEND=cascade`` for the environment agent) sends that agent's calls
through the STT -> LLM -> TTS cascade, everything else through the Realtime
backend.  One :class:`~bridge.cascade.backend.CascadeBackend` is built per
distinct set of stage settings (agents that override none share one, and so its
HTTP keep-alive pools), once per process, and closed at shutdown.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from bridge.call.backend import ModelBackend, ModelConnection
from bridge.config import AgentConfig, ConfigError
from bridge.core.stream import StreamInfo

if TYPE_CHECKING:
    from bridge.cascade.backend import CascadeBackend
    from bridge.cascade.settings import CascadeSettings
    from bridge.metrics import Metrics

__all__ = ["BackendRouter"]


class BackendRouter:
    """A :class:`ModelBackend` that routes ``connect(info)`` by the call's agent."""

    def __init__(
        self,
        realtime: ModelBackend,
        agent_for: Callable[[StreamInfo], AgentConfig],
        agents: Iterable[AgentConfig],
        cascade: CascadeSettings | None,
        *,
        audio_mode: str = "passthrough",
        metrics: Metrics | None = None,
    ) -> None:
        self.realtime = realtime
        self.agent_for = agent_for
        self.metrics = metrics
        self._base = cascade
        self._cascades: dict[tuple[tuple[str, str], ...], CascadeBackend] = {}
        cascade_agents = [a for a in agents if a.backend == "cascade"]
        if not cascade_agents:
            return
        if audio_mode != "passthrough":
            names = ", ".join(sorted(a.name for a in cascade_agents))
            raise ConfigError([
                f"agent(s) {names} use backend = \"cascade\", which needs "
                f"BRIDGE_AUDIO=passthrough (BRIDGE_AUDIO is {audio_mode})"
            ])
        # Imported only when an agent needs it: the openai SDK is the [cascade] extra.
        from bridge.cascade.backend import CascadeBackend
        from bridge.cascade.settings import CascadeSettings

        base = cascade or CascadeSettings()
        for agent in cascade_agents:
            if agent.cascade not in self._cascades:
                self._cascades[agent.cascade] = CascadeBackend(base.with_overrides(agent.cascade))

    def is_cascade(self, agent: AgentConfig) -> bool:
        return agent.backend == "cascade"

    def backend_for(self, agent: AgentConfig) -> ModelBackend:
        if agent.backend != "cascade":
            return self.realtime
        backend = self._cascades.get(agent.cascade)
        if backend is None:  # an agent not in the directory at start-up (tests build some)
            from bridge.cascade.backend import CascadeBackend
            from bridge.cascade.settings import CascadeSettings

            base = self._base or CascadeSettings()
            backend = self._cascades[agent.cascade] = CascadeBackend(
                base.with_overrides(agent.cascade)
            )
        return backend

    async def connect(self, info: StreamInfo) -> ModelConnection:
        backend = self.backend_for(self.agent_for(info))
        if backend is self.realtime:
            return await backend.connect(info)
        started = time.perf_counter()
        connection = await backend.connect(info)
        if self.metrics is not None:
            self.metrics.model_connect_seconds.observe(time.perf_counter() - started)
            self.metrics.model_connects.inc()
        return connection

    @property
    def cascades(self) -> list[CascadeBackend]:
        return list(self._cascades.values())

    async def aclose(self) -> None:
        """Close every cascade's shared HTTP clients (after the last call)."""
        for backend in self._cascades.values():
            await backend.aclose()
