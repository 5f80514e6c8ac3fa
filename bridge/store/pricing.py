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
