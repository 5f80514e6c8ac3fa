"""What shapes one call's behaviour, fixed when the call is accepted."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bridge.config import AgentConfig, AudioMode


@dataclass(frozen=True)
class CallConfig:
    """The agent and the limits of one call.

    ``model`` names the model for the backend's session; ``rest_control`` says
    whether the phone network can be told to hang up or transfer (Twilio REST
    credentials): without it, hanging up means closing the stream (``<Connect>``
    has no verb after it, so Twilio ends the call) and transfers are refused.

    When the model connection is lost the call goes on (``reconnect``): caller audio
    is held (``reconnect_buffer_ms``), ``filler_audio`` (μ-law) plays if the gap
    passes ``filler_after_ms``, and a new session is seeded with the conversation so
    far (newest first, up to ``seed_max_chars``).  After ``reconnect_budget_ms`` without
    a model (or at once for a fatal error), the agent's ``on_model_failure`` decides:
    ``apology_audio`` plays, then the call is transferred or hung up.  A session older
    than ``rollover_after_ms`` is replaced at a quiet moment, before the API's cap."""

    agent: AgentConfig
    audio_mode: AudioMode = "passthrough"
    model: str = "gpt-realtime"
    tools: tuple[dict[str, Any], ...] = ()
    max_call_ms: int = 3_600_000
    start_timeout_ms: int = 5_000
    preconnect_buffer_ms: int = 5_000
    dtmf_flush_ms: int = 1_200
    control_grace_ms: int = 15_000
    after_control_ms: int = 2_000
    rest_control: bool = True
    reconnect: bool = True
    reconnect_budget_ms: int = 10_000
    reconnect_buffer_ms: int = 3_000
    filler_after_ms: int = 1_200
    filler_audio: bytes = b""
    apology_audio: bytes = b""
    rollover_after_ms: int = 55 * 60_000
    seed_max_chars: int = 16_000
    tool_filler_after_ms: int | None = 3_000
    tool_filler_instructions: str = (
        "Briefly tell the caller you are still working on it and it will take a moment more. "
        "Do not call any tool."
    )


@dataclass(frozen=True, slots=True)
class ControlRequest:
    """A call-control request from a tool, carried out once playback drains."""

    kind: str  # "hang_up" | "transfer" | "send_dtmf"
    target: str | None = None
    digits: str | None = None
    reason: str = ""
