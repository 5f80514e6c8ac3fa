"""Estimated cost of a model response, from a price table in USD per 1M tokens.

The figures are *estimates*: they are list prices copied by hand (gpt-realtime,
late 2025), they ignore discounts, taxes, transcription-model charges and anything billed
outside ``response.done`` usage, and OpenAI may change them at any time.  Override them
with the ``BRIDGE_PRICES`` environment variable (a JSON object with any subset of the
field names below, e.g. ``{"audio_in": 10, "audio_out": 20}``) or by passing
:class:`Prices` to ``open_store``.  The cost is computed when a response is recorded and
stored with it, so changing prices later does not rewrite the history of old calls.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace

from bridge.config import ConfigError
from bridge.store.records import TokenUsage

PRICES_ENV = "BRIDGE_PRICES"
_PER_TOKEN = 1e-6


@dataclass(frozen=True)
class Prices:
    """USD per 1M tokens.  Defaults are gpt-realtime's list prices (estimates)."""

    audio_in: float = 32.0
    audio_out: float = 64.0
    text_in: float = 4.0
    text_out: float = 16.0
    cached_audio_in: float = 0.40
    cached_text_in: float = 0.40

    @classmethod
    def from_json(cls, text: str) -> Prices:
        """Defaults overridden by a JSON object; raise :class:`ConfigError` listing problems."""
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError([f"{PRICES_ENV} is not valid JSON: {exc.msg}"]) from None
        if not isinstance(data, dict):
            raise ConfigError([f"{PRICES_ENV} must be a JSON object of prices per 1M tokens"])
        known = {f.name for f in fields(cls)}
        problems: list[str] = []
        changes: dict[str, float] = {}
        for key, value in data.items():
            if key not in known:
                problems.append(
                    f"{PRICES_ENV} has unknown price {key!r} (known: {', '.join(sorted(known))})"
                )
            elif isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                problems.append(f"{PRICES_ENV}[{key!r}]={value!r} is not a non-negative number")
            else:
                changes[key] = float(value)
        if problems:
            raise ConfigError(problems)
        return replace(cls(), **changes)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Prices:
        """The defaults, overridden by ``BRIDGE_PRICES`` when it is set."""
        text = (os.environ if env is None else env).get(PRICES_ENV, "").strip()
        return cls.from_json(text) if text else cls()

    def cost(self, usage: TokenUsage) -> float:
        """Estimated USD for one response.

        Cached tokens are part of the text/audio input counts, so they are taken out of
        those and billed at the cached rate.  When the server gives only a cached total
        (no text/audio split), it is split in proportion to text and audio input.
        """
        cached_text, cached_audio = _cached_split(usage)
        text_in = max(0, usage.input_text_tokens - cached_text)
        audio_in = max(0, usage.input_audio_tokens - cached_audio)
        total = (
            text_in * self.text_in
            + audio_in * self.audio_in
            + cached_text * self.cached_text_in
            + cached_audio * self.cached_audio_in
            + usage.output_text_tokens * self.text_out
            + usage.output_audio_tokens * self.audio_out
        )
        return total * _PER_TOKEN


def _cached_split(usage: TokenUsage) -> tuple[int, int]:
    """(cached text, cached audio) tokens, each clamped to its input count."""
    if usage.input_cached_text_tokens is not None or usage.input_cached_audio_tokens is not None:
        text = usage.input_cached_text_tokens or 0
        audio = usage.input_cached_audio_tokens or 0
    else:
        cached = usage.input_cached_tokens
        both = usage.input_text_tokens + usage.input_audio_tokens
        if both <= 0:
            return 0, 0
        audio = round(cached * usage.input_audio_tokens / both)
        text = cached - audio
    return (
        min(max(0, text), usage.input_text_tokens),
        min(max(0, audio), usage.input_audio_tokens),
    )


# ------------------------------------------------------------------ the cascade

#: USD per minute of transcribed audio (list prices, late 2025; see docs/cascade.md).
STT_PER_MINUTE: dict[str, float] = {
    "gpt-4o-transcribe": 0.006,
    "gpt-4o-mini-transcribe": 0.003,
    "whisper-1": 0.006,
}
#: USD per 1M tokens: (input, cached input, output).
LLM_PER_MILLION: dict[str, tuple[float, float, float]] = {
    "gpt-4.1-mini": (0.40, 0.10, 1.60),
    "gpt-4.1-nano": (0.10, 0.025, 0.40),
    "gpt-4o-mini": (0.15, 0.075, 0.60),
}
#: USD per 1M input characters, and per minute of audio out (gpt-4o-mini-tts bills
#: its audio output by tokens; OpenAI quotes the estimate per minute).
TTS_PRICES: dict[str, tuple[float, float]] = {
    "tts-1": (15.0, 0.0),
    "tts-1-hd": (30.0, 0.0),
    "gpt-4o-mini-tts": (0.60, 0.015),
}
#: Realtime audio tokens per second (OpenAI's Realtime cost guide).
REALTIME_IN_TOKENS_PER_S = 10
REALTIME_OUT_TOKENS_PER_S = 20


@dataclass(frozen=True)
class CascadeCost:
    stt: float
    llm: float
    tts: float
    known: bool
    """False when a model is missing from the tables (its stage is counted as 0)."""

    @property
    def total(self) -> float:
        return self.stt + self.llm + self.tts


def cascade_cost(usage: Mapping[str, object]) -> CascadeCost:
    """Estimated USD of one cascade response, from its ``ResponseFinished.usage``."""

    def num(key: str) -> float:
        value = usage.get(key, 0)
        return float(value) if isinstance(value, int | float) else 0.0

    known = True
    stt_rate = STT_PER_MINUTE.get(str(usage.get("stt_model")))
    llm_rate = LLM_PER_MILLION.get(str(usage.get("llm_model")))
    tts_rate = TTS_PRICES.get(str(usage.get("tts_model")))
    stt = llm = tts = 0.0
    if stt_rate is None:
        known = False
    else:
        stt = num("stt_audio_seconds") / 60 * stt_rate
    if llm_rate is None:
        known = False
    else:
        cached = min(num("llm_cached_tokens"), num("llm_prompt_tokens"))
        llm = ((num("llm_prompt_tokens") - cached) * llm_rate[0] + cached * llm_rate[1]
               + num("llm_completion_tokens") * llm_rate[2]) * _PER_TOKEN
    if tts_rate is None:
        known = False
    else:
        tts = num("tts_characters") * tts_rate[0] * _PER_TOKEN \
            + num("tts_audio_seconds") / 60 * tts_rate[1]
    return CascadeCost(stt, llm, tts, known)


def realtime_equivalent(usage: Mapping[str, object], prices: Prices | None = None) -> float:
    """What the same turn would roughly cost on the Realtime API (a lower bound).

    The caller's audio becomes input audio tokens and the agent's output audio tokens
    at the Realtime rates; the LLM prompt is counted as text input.  A Realtime
    session re-reads earlier *audio* turns as audio tokens, so real Realtime costs
    grow faster over a call than this estimate."""
    p = prices or Prices()

    def num(key: str) -> float:
        value = usage.get(key, 0)
        return float(value) if isinstance(value, int | float) else 0.0

    audio_in = num("stt_audio_seconds") * REALTIME_IN_TOKENS_PER_S
    audio_out = num("tts_audio_seconds") * REALTIME_OUT_TOKENS_PER_S
    return (audio_in * p.audio_in + audio_out * p.audio_out
            + num("llm_prompt_tokens") * p.text_in
            + num("llm_completion_tokens") * p.text_out) * _PER_TOKEN
