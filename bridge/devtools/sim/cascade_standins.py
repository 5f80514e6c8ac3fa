"""The cascade's three stand-ins started together, and the bridge settings that reach them.

The demo, tape authoring, the end-to-end tests and the benchmark all need the same
pair: the OpenAI REST stand-in (chat completions, speech, transcription) and the
Realtime transcription-session stand-in.  :class:`CascadeStandIns` starts both on
127.0.0.1 and gives the ``BRIDGE_BACKEND=cascade`` / ``CASCADE_*`` environment that
points a real bridge at them, so the bridge is configured exactly as in production.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bridge.devtools.sim.openai_rest import ChatRule, OpenAIRestSimulator
from bridge.devtools.sim.realtime_transcription import TranscriptionSimulator

__all__ = ["CascadeStandIns"]


class CascadeStandIns:
    """Both stand-ins for an ``async with``; ``env()`` is the bridge's cascade config.

    ``rest`` options (latencies, rules) go to :class:`OpenAIRestSimulator`; the
    transcription latency is shared so STT costs the same in either STT mode."""

    def __init__(
        self,
        api_key: str,
        *,
        rules: Sequence[ChatRule] | None = None,
        stt_mode: str = "realtime",
        transcription_latency_ms: float = 150.0,
        **rest: Any,
    ) -> None:
        self.api_key = api_key
        self.stt_mode = stt_mode
        self.rest = OpenAIRestSimulator(
            rules, api_key=api_key, transcription_latency_ms=transcription_latency_ms, **rest
        )
        self.stt = TranscriptionSimulator(
            api_key=api_key, transcription_latency_ms=transcription_latency_ms
        )

    async def __aenter__(self) -> CascadeStandIns:
        await self.rest.start()
        try:
            await self.stt.start()
        except BaseException:
            await self.rest.stop()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stt.stop()
        await self.rest.stop()

    def env(self, *, backend_env: bool = True) -> dict[str, str]:
        """``CASCADE_*`` for both stand-ins (plus ``BRIDGE_BACKEND=cascade`` unless
        ``backend_env`` is False, for agents files that choose the backend per agent)."""
        env = {
            "OPENAI_API_KEY": self.api_key,
            "CASCADE_STT_MODE": self.stt_mode,
            "CASCADE_STT_REALTIME_URL": self.stt.url,
            "CASCADE_STT_BASE_URL": self.rest.base_url,
            "CASCADE_LLM_BASE_URL": self.rest.base_url,
            "CASCADE_TTS_BASE_URL": self.rest.base_url,
        }
        if backend_env:
            env["BRIDGE_BACKEND"] = "cascade"
        return env
