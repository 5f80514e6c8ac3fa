"""Settings of the cascade's three stages, one frozen dataclass each.

Every stage has its own endpoint and key, because the point of a cascade is often
to mix vendors (a local LLM behind an OpenAI-compatible server, OpenAI for speech).
Keys stay wrapped in :class:`~bridge.config.Secret`.  ``from_env`` reads the
``CASCADE_*`` variables (see ``docs/cascade.md``) and reports every problem at once.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Literal

from bridge.config import ConfigError, Secret

__all__ = ["PROFILE_KEYS", "CascadeSettings", "LlmSettings", "SttSettings", "TtsSettings"]

SttMode = Literal["realtime", "rest"]

OPENAI_BASE_URL = "https://api.openai.com/v1"
OPENAI_REALTIME_URL = "wss://api.openai.com/v1/realtime"

#: The stage settings an agent profile may override (``[agents.<name>.cascade]``):
#: profile key -> (stage, field).  Keys and timeouts stay process-wide (environment).
PROFILE_KEYS: dict[str, tuple[str, str]] = {
    "stt_mode": ("stt", "mode"),
    "stt_model": ("stt", "model"),
    "stt_language": ("stt", "language"),
    "stt_base_url": ("stt", "base_url"),
    "stt_realtime_url": ("stt", "realtime_url"),
    "llm_model": ("llm", "model"),
    "llm_base_url": ("llm", "base_url"),
    "tts_model": ("tts", "model"),
    "tts_voice": ("tts", "voice"),
    "tts_instructions": ("tts", "instructions"),
    "tts_base_url": ("tts", "base_url"),
}


@dataclass(frozen=True)
class SttSettings:
    """Speech to text with endpointing.

    ``realtime``: a Realtime transcription-only session (``intent=transcription``)
    whose server VAD gives speech start/stop and whose transcript arrives moments
    after the stop.  ``rest``: a local energy endpointer cuts utterances and each is
    sent to ``audio.transcriptions`` (simpler, any Whisper-compatible server, but the
    whole utterance is uploaded after it ends, so it adds the upload and the
    transcription time to every turn).
    """

    mode: SttMode = "realtime"
    model: str = "gpt-4o-mini-transcribe"
    realtime_url: str = OPENAI_REALTIME_URL
    base_url: str = OPENAI_BASE_URL
    api_key: Secret | None = None
    language: str | None = None
    # server VAD (realtime) or the local endpointer (rest)
    vad_threshold: float = 0.5
    silence_duration_ms: int = 500
    prefix_padding_ms: int = 300
    open_timeout_s: float = 10.0
    request_timeout_s: float = 15.0


@dataclass(frozen=True)
class LlmSettings:
    """Any OpenAI-compatible chat-completions server: model, base URL, key."""

    model: str = "gpt-4.1-mini"
    base_url: str = OPENAI_BASE_URL
    api_key: Secret | None = None
    temperature: float | None = None
    max_tokens: int | None = 400
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class TtsSettings:
    """Streaming speech: PCM16 24 kHz from ``audio.speech``.

    ``voice`` None means the agent's own voice (from its profile); ``instructions``
    None means none (``tts-1`` rejects them)."""

    model: str = "gpt-4o-mini-tts"
    voice: str | None = None
    instructions: str | None = None
    base_url: str = OPENAI_BASE_URL
    api_key: Secret | None = None
    speed: float | None = None
    request_timeout_s: float = 30.0


@dataclass(frozen=True)
class CascadeSettings:
    stt: SttSettings = field(default_factory=SttSettings)
    llm: LlmSettings = field(default_factory=LlmSettings)
    tts: TtsSettings = field(default_factory=TtsSettings)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> CascadeSettings:
        """Read ``CASCADE_*`` (keys fall back to ``OPENAI_API_KEY``); raise ConfigError."""
        env = os.environ if env is None else env
        problems: list[str] = []

        def get(name: str) -> str | None:
            value = env.get(name, "").strip()
            return value or None

        def key(name: str) -> Secret | None:
            value = get(name) or get("OPENAI_API_KEY")
            return Secret(value) if value else None

        def number(name: str, default: float, lo: float, hi: float) -> float:
            raw = get(name)
            if raw is None:
                return default
            try:
                value = float(raw)
            except ValueError:
                problems.append(f"{name}={raw!r} is not a number")
                return default
            if not lo <= value <= hi:
                problems.append(f"{name}={raw!r} is outside {lo:g}..{hi:g}")
            return value

        mode = get("CASCADE_STT_MODE") or "realtime"
        if mode not in ("realtime", "rest"):
            problems.append(f"CASCADE_STT_MODE={mode!r} must be realtime or rest")
            mode = "realtime"
        stt = SttSettings(
            mode=mode,  # type: ignore[arg-type]
            model=get("CASCADE_STT_MODEL")
            or ("gpt-4o-mini-transcribe" if mode == "realtime" else "whisper-1"),
            realtime_url=get("CASCADE_STT_REALTIME_URL") or OPENAI_REALTIME_URL,
            base_url=get("CASCADE_STT_BASE_URL") or OPENAI_BASE_URL,
            api_key=key("CASCADE_STT_API_KEY"),
            language=get("CASCADE_STT_LANGUAGE"),
            vad_threshold=number("CASCADE_STT_VAD_THRESHOLD", 0.5, 0.0, 1.0),
            silence_duration_ms=int(number("CASCADE_STT_SILENCE_MS", 500, 100, 5000)),
            prefix_padding_ms=int(number("CASCADE_STT_PREFIX_PADDING_MS", 300, 0, 2000)),
        )
        llm = LlmSettings(
            model=get("CASCADE_LLM_MODEL") or LlmSettings.model,
            base_url=get("CASCADE_LLM_BASE_URL") or OPENAI_BASE_URL,
            api_key=key("CASCADE_LLM_API_KEY"),
        )
        tts = TtsSettings(
            model=get("CASCADE_TTS_MODEL") or TtsSettings.model,
            voice=get("CASCADE_TTS_VOICE"),
            instructions=get("CASCADE_TTS_INSTRUCTIONS"),
            base_url=get("CASCADE_TTS_BASE_URL") or OPENAI_BASE_URL,
            api_key=key("CASCADE_TTS_API_KEY"),
        )
        if problems:
            raise ConfigError(problems)
        return cls(stt=stt, llm=llm, tts=tts)

    def with_overrides(self, pairs: Iterable[tuple[str, str]]) -> CascadeSettings:
        """These settings with an agent profile's ``PROFILE_KEYS`` overrides applied.

        Switching ``stt_mode`` without naming a model picks that mode's default model
        (``whisper-1`` for rest), as ``from_env`` does.  Unknown keys raise KeyError: the
        profile loader has already rejected them with the file and line."""
        stages: dict[str, dict[str, str]] = {"stt": {}, "llm": {}, "tts": {}}
        for key, value in pairs:
            stage, name = PROFILE_KEYS[key]
            stages[stage][name] = value
        stt_changes = stages["stt"]
        mode = stt_changes.get("mode")
        if mode is not None and "model" not in stt_changes and mode != self.stt.mode:
            stt_changes["model"] = (
                "whisper-1" if mode == "rest" else "gpt-4o-mini-transcribe"
            )
        return CascadeSettings(
            stt=replace(self.stt, **stt_changes),  # type: ignore[arg-type]
            llm=replace(self.llm, **stages["llm"]),  # type: ignore[arg-type]
            tts=replace(self.tts, **stages["tts"]),  # type: ignore[arg-type]
        )
