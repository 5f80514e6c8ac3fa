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
    has no verb after it, so Twilio ends the call) and transfers are refused."""

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
