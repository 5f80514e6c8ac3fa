"""Per-turn latency breakdown and per-stage usage, as plain values (pure).

Both travel to the core inside ``ResponseFinished.usage`` so call records and the
console get them without a new event type: ``cascade_latency_ms`` holds the
breakdown, the ``stt_*``/``llm_*``/``tts_*`` keys the usage per stage.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["StageUsage", "TurnClock"]


def _ms(a: float | None, b: float | None) -> int | None:
    if a is None or b is None:
        return None
    return round((b - a) * 1000)


@dataclass
class TurnClock:
    """Monotonic seconds of each step of one turn; None when it did not happen.

    ``speech_stopped`` is when the cascade learnt the caller stopped (the STT's
    event arriving), ``first_audio_out`` when the first agent audio was handed to
    the core: everything between is the cascade's own latency."""

    response_started: float
    speech_stopped: float | None = None
    transcript: float | None = None
    first_token: float | None = None
    first_tts_audio: float | None = None
    first_audio_out: float | None = None

    def breakdown(self) -> dict[str, int | None]:
        origin = self.speech_stopped
        return {
            "speech_stopped_to_transcript": _ms(origin, self.transcript),
            "transcript_to_first_token": _ms(self.transcript or self.response_started,
                                             self.first_token),
            "first_token_to_first_tts_audio": _ms(self.first_token, self.first_tts_audio),
            "first_tts_audio_to_first_audio_out": _ms(self.first_tts_audio,
                                                      self.first_audio_out),
            "speech_stopped_to_first_audio_out": _ms(origin, self.first_audio_out),
            "response_started_to_first_audio_out": _ms(self.response_started,
                                                       self.first_audio_out),
        }


@dataclass
class StageUsage:
    """What one response consumed at each stage (the units each stage is priced in)."""

    stt_model: str
    llm_model: str
    tts_model: str
    stt_audio_seconds: float = 0.0
    llm_prompt_tokens: int = 0
    llm_completion_tokens: int = 0
    llm_cached_tokens: int = 0
    tts_characters: int = 0
    tts_audio_seconds: float = 0.0

    def as_dict(self, clock: TurnClock) -> dict[str, Any]:
        return {
            "backend": "cascade",
            "stt_model": self.stt_model,
            "stt_audio_seconds": round(self.stt_audio_seconds, 3),
            "llm_model": self.llm_model,
            "llm_prompt_tokens": self.llm_prompt_tokens,
            "llm_completion_tokens": self.llm_completion_tokens,
            "llm_cached_tokens": self.llm_cached_tokens,
            "tts_model": self.tts_model,
            "tts_characters": self.tts_characters,
            "tts_audio_seconds": round(self.tts_audio_seconds, 3),
            "cascade_latency_ms": clock.breakdown(),
        }
