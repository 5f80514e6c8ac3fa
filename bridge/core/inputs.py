"""Everything that can happen to a call, as one record type, applied in one place.

The live relay and the tape replayer both feed the core through
:func:`apply_input`, so a recorded call replays through exactly the code path
it took live: same methods, same arguments, same order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.core.actions import Action
from bridge.core.session import CallSession, ControlRequest, SessionConfig

InputKind = Literal[
    "twilio",  # a text frame from Twilio
    "model",  # a text frame from the Realtime server
    "accept",  # the stream was authorised (optionally with the chosen SessionConfig)
    "model_connected",
    "model_failed",
    "tool_result",
    "tick",
    "twilio_closed",
    "model_closed",
    "end",
]


@dataclass(slots=True)
class CallInput:
    kind: InputKind
    frame: str | bytes | None = None
    data: dict[str, Any] = field(default_factory=dict)
    config: SessionConfig | None = None


def apply_input(session: CallSession, item: CallInput, now: int) -> list[Action]:
    """Feed one input to ``session`` and return its actions."""
    kind, data = item.kind, item.data
    if kind == "twilio":
        return session.twilio_frame(item.frame or "", now)
    if kind == "model":
        return session.model_frame(item.frame or "", now)
    if kind == "tick":
        return session.tick(now)
    if kind == "accept":
        return session.accept_stream(now, item.config)
    if kind == "model_connected":
        return session.model_connected(now)
    if kind == "model_failed":
        return session.model_failed(str(data.get("detail", "")), now)
    if kind == "tool_result":
        control = data.get("control")
        return session.tool_result(
            str(data["call_id"]),
            str(data["output"]),
            now,
            ControlRequest(**control) if control else None,
        )
    if kind == "twilio_closed":
        return session.twilio_closed(now, str(data.get("detail", "")))
    if kind == "model_closed":
        return session.model_closed(now, data.get("code"), str(data.get("detail", "")))
    if kind == "end":
        return session.end(str(data["reason"]), str(data.get("detail", "")), now)
    raise ValueError(f"unknown call input kind {kind!r}")
