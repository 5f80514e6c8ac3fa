"""What the store keeps about a call, as plain dataclasses.

These are the *read* side (what ``list_calls``/``get_call`` return and what the CLI
prints) plus :class:`TokenUsage`, the parsed ``response.done`` usage block.  They carry
no database types so that the CLI, the app and the tests never depend on which backend
produced them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Speaker = Literal["caller", "agent", "system"]
SPEAKERS: tuple[Speaker, ...] = ("caller", "agent", "system")


def _count(block: Mapping[str, Any] | None, key: str) -> int:
    """A token count from a usage block; missing, null or junk counts as zero.

    The usage block comes from the network, so a malformed value must not raise in the
    audio path; an estimate of zero is better than a dropped call.
    """
    if not block:
        return 0
    value = block.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(0, int(value))


@dataclass(frozen=True)
class TokenUsage:
    """Token counts of one model response, as reported in ``response.done``.

    ``input_cached_tokens`` is a *subset* of ``input_tokens`` (cached tokens are also
    counted as text or audio input); pricing relies on that.  ``input_cached_text_tokens``
    and ``input_cached_audio_tokens`` are ``None`` when the server did not split them.
    """

    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    input_cached_text_tokens: int | None = None
    input_cached_audio_tokens: int | None = None

    @classmethod
    def from_event(cls, usage: Mapping[str, Any] | None) -> TokenUsage:
        """Parse ``response.done``'s ``response.usage`` (tolerates missing parts)."""
        if not usage:
            return cls()
        details_in = usage.get("input_token_details") or {}
        details_out = usage.get("output_token_details") or {}
        cached_split = details_in.get("cached_tokens_details") or None
        return cls(
            total_tokens=_count(usage, "total_tokens"),
            input_tokens=_count(usage, "input_tokens"),
            output_tokens=_count(usage, "output_tokens"),
            input_text_tokens=_count(details_in, "text_tokens"),
            input_audio_tokens=_count(details_in, "audio_tokens"),
            input_cached_tokens=_count(details_in, "cached_tokens"),
            output_text_tokens=_count(details_out, "text_tokens"),
            output_audio_tokens=_count(details_out, "audio_tokens"),
            input_cached_text_tokens=(
                _count(cached_split, "text_tokens") if cached_split else None
            ),
            input_cached_audio_tokens=(
                _count(cached_split, "audio_tokens") if cached_split else None
            ),
        )


@dataclass(frozen=True)
class Turn:
    """One line of the transcript.  Offsets are milliseconds since the call started."""

    seq: int
    speaker: Speaker
    text: str
    start_ms: int | None = None
    end_ms: int | None = None
    interrupted: bool = False


#: The cascade's per-turn latency spans (``ResponseFinished.usage["cascade_latency_ms"]``),
#: in pipeline order; each is a column ``<span>_ms`` of ``responses``.
LATENCY_SPANS = (
    "speech_stopped_to_transcript",
    "transcript_to_first_token",
    "first_token_to_first_tts_audio",
    "first_tts_audio_to_first_audio_out",
    "speech_stopped_to_first_audio_out",
    "response_started_to_first_audio_out",
)


@dataclass(frozen=True)
class StageCosts:
    """A cascade response's estimated cost per stage and what Realtime would have cost."""

    stt_usd: float = 0.0
    llm_usd: float = 0.0
    tts_usd: float = 0.0
    realtime_equivalent_usd: float = 0.0


@dataclass(frozen=True)
class ResponseUsage:
    """Usage and estimated cost of one model response (``response.done``).

    ``backend`` is ``"cascade"`` for cascade responses, which also carry ``stages``
    (cost per stage) and ``latency_ms`` (span -> ms, None where a step did not happen);
    None for Realtime responses (and rows written before migration 4)."""

    response_id: str
    status: str | None
    tokens: TokenUsage
    audio_in_s: float
    audio_out_s: float
    cost_usd: float
    recorded_at: datetime | None = None
    backend: str | None = None
    stages: StageCosts | None = None
    latency_ms: Mapping[str, int | None] = field(default_factory=dict)


@dataclass(frozen=True)
class UsageTotals:
    """Sums over a call's responses; ``cost_usd`` is an estimate (see ``pricing``)."""

    responses: int = 0
    total_tokens: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    input_text_tokens: int = 0
    input_audio_tokens: int = 0
    input_cached_tokens: int = 0
    output_text_tokens: int = 0
    output_audio_tokens: int = 0
    audio_in_s: float = 0.0
    audio_out_s: float = 0.0
    cost_usd: float = 0.0
    cascade_responses: int = 0
    stages: StageCosts = field(default_factory=StageCosts)
    """Sums over the cascade responses only."""

    @classmethod
    def of(cls, responses: list[ResponseUsage]) -> UsageTotals:
        staged = [r.stages for r in responses if r.stages is not None]
        return cls(
            cascade_responses=len(staged),
            stages=StageCosts(
                stt_usd=sum(s.stt_usd for s in staged),
                llm_usd=sum(s.llm_usd for s in staged),
                tts_usd=sum(s.tts_usd for s in staged),
                realtime_equivalent_usd=sum(s.realtime_equivalent_usd for s in staged),
            ),
            responses=len(responses),
            total_tokens=sum(r.tokens.total_tokens for r in responses),
            input_tokens=sum(r.tokens.input_tokens for r in responses),
            output_tokens=sum(r.tokens.output_tokens for r in responses),
            input_text_tokens=sum(r.tokens.input_text_tokens for r in responses),
            input_audio_tokens=sum(r.tokens.input_audio_tokens for r in responses),
            input_cached_tokens=sum(r.tokens.input_cached_tokens for r in responses),
            output_text_tokens=sum(r.tokens.output_text_tokens for r in responses),
            output_audio_tokens=sum(r.tokens.output_audio_tokens for r in responses),
            audio_in_s=sum(r.audio_in_s for r in responses),
            audio_out_s=sum(r.audio_out_s for r in responses),
            cost_usd=sum(r.cost_usd for r in responses),
        )


@dataclass(frozen=True)
class CallSummary:
    """One row of ``calls``: what the listing shows.

    Every field but ``call_sid`` may be ``None``: Twilio's status callback can arrive
    before the bridge has recorded the call (or for a call whose stream never started),
    and such a row is kept rather than thrown away.
    """

    call_sid: str
    stream_sid: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    agent: str | None = None
    audio_mode: str | None = None
    dialect: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    end_reason: str | None = None
    twilio_status: str | None = None
    twilio_duration_s: int | None = None
    turn_count: int = 0
    cost_usd: float = 0.0
    recording_path: str | None = None
    reconnects: int = 0
    model_gap_ms: int = 0
    rollovers: int = 0
    fallback: str | None = None

    @property
    def duration_s(self) -> float | None:
        """Twilio's billed duration when known (it is authoritative), else our own clock."""
        if self.twilio_duration_s is not None:
            return float(self.twilio_duration_s)
        if self.started_at is not None and self.ended_at is not None:
            return max(0.0, (self.ended_at - self.started_at).total_seconds())
        return None


@dataclass(frozen=True)
class CallRecord(CallSummary):
    """A call with its transcript, per-response usage and totals (``get_call``)."""

    turns: tuple[Turn, ...] = ()
    responses: tuple[ResponseUsage, ...] = ()
    totals: UsageTotals = field(default_factory=UsageTotals)


def utc(moment: datetime | None) -> datetime:
    """``moment`` as an aware UTC datetime; naive values are taken to be UTC already.

    Accepting naive datetimes (instead of raising) keeps a caller's mistake out of the
    audio path; the store only ever writes UTC.
    """
    if moment is None:
        return datetime.now(UTC)
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)
