"""Faults the Realtime simulator can inject, as one plan the server consults.

Why a separate plan: reconnect and fallback logic is only as good as the failures it was
tested against, and the live API fails in a handful of specific ways (PROTOCOLS.md B6):
a close with 1011 or 1001, the 60-minute cap (an ``error`` ``session_expired`` then close
1001 with the same message), handshakes refused with 5xx / 429 / 401, and ``error``
events.  Keeping them out of the protocol code (``realtime_server``) means the server
asks three questions only: "refuse this handshake?", "which timers for this connection?"
and "close after this many responses?".

Every fault can be limited to some connections (``connections``, 1-based in connect
order), so a test can drop the first session and let the reconnect succeed.  The plan is
mutable on purpose: a test may arm ``refuse_next`` between two connects.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

#: What the live API says when a session reaches its maximum age: the text of the
#: ``error`` event (type ``invalid_request_error``, code ``session_expired``) and the
#: reason of the 1001 close that follows.  Observed in the wild (see issue reports in
#: openai-realtime-api-beta, pipecat and livekit); the minutes follow the cap in force.
SESSION_EXPIRED_MESSAGE = "Your session hit the maximum duration of {minutes} minutes."

RefusalKind = Literal["server_error", "unavailable", "rate_limit", "quota", "bad_key"]

#: Status and JSON body of each refusal, in the API's error shape
#: ``{"error": {"message", "type", "param", "code"}}``.  The bad-key message of the real
#: API echoes a masked form of the key; the simulator never echoes any part of it.
_REFUSALS: dict[str, tuple[int, dict[str, object]]] = {
    "server_error": (500, {
        "message": "The server had an error while processing your request. Sorry about that!",
        "type": "server_error", "param": None, "code": None}),
    "unavailable": (503, {
        "message": "The server is overloaded or not ready yet.",
        "type": "server_error", "param": None, "code": None}),
    "rate_limit": (429, {
        "message": "Rate limit reached for requests. Please try again in 1s.",
        "type": "requests", "param": None, "code": "rate_limit_exceeded"}),
    "quota": (429, {
        "message": "You exceeded your current quota, please check your plan and billing "
                   "details.",
        "type": "insufficient_quota", "param": None, "code": "insufficient_quota"}),
    "bad_key": (401, {
        "message": "Incorrect API key provided. You can find your API key at "
                   "https://platform.openai.com/account/api-keys.",
        "type": "invalid_request_error", "param": None, "code": "invalid_api_key"}),
}


def refusal_response(kind: RefusalKind) -> tuple[int, str]:
    """``(HTTP status, body text)`` of a refused handshake of this kind."""
    status, error = _REFUSALS[kind]
    return status, json.dumps({"error": error}, indent=2) + "\n"


@dataclass
class ErrorFault:
    """An ``error`` event sent ``after_ms`` after the connection opened."""

    after_ms: float
    type: str = "server_error"
    code: str | None = "server_error"
    message: str = "The server had an error while processing your request. Sorry about that!"
    param: str | None = None
    close_code: int | None = None
    """If set, close the connection with this code right after the event."""


@dataclass
class FaultPlan:
    """What goes wrong, and on which connections (``None``: all of them)."""

    close_after_ms: float | None = None
    """Close this long after the connection opened."""
    close_after_responses: int | None = None
    """Close right after the Nth ``response.done`` of the connection."""
    close_code: int = 1011
    close_reason: str = "simulated failure"
    max_session_ms: float | None = None
    """The session cap: ``error`` ``session_expired`` then close 1001, like the live API."""
    max_session_minutes_label: int = 60
    """The minutes the expiry message names (the real cap), whatever ``max_session_ms``."""
    errors: list[ErrorFault] = field(default_factory=list)
    refuse_next: int = 0
    """Refuse this many of the next handshakes (decremented as they are refused)."""
    refuse_kind: RefusalKind = "unavailable"
    connections: Collection[int] | None = None
    """1-based connection numbers the close/expiry/error faults apply to."""

    def __post_init__(self) -> None:
        if self.refuse_kind not in _REFUSALS:
            raise ValueError(f"unknown refusal kind {self.refuse_kind!r}")
        for value in (self.close_after_ms, self.max_session_ms):
            if value is not None and value < 0:
                raise ValueError("fault times must be >= 0")

    def applies_to(self, conn_id: int) -> bool:
        return self.connections is None or conn_id in self.connections

    def take_refusal(self) -> tuple[int, str] | None:
        """The answer for a handshake that should be refused now, else None."""
        if self.refuse_next <= 0:
            return None
        self.refuse_next -= 1
        return refusal_response(self.refuse_kind)

    def refuse(self, count: int, kind: RefusalKind = "unavailable") -> None:
        """Arm: refuse the next ``count`` handshakes with ``kind``."""
        if kind not in _REFUSALS:
            raise ValueError(f"unknown refusal kind {kind!r}")
        self.refuse_next, self.refuse_kind = count, kind

    @property
    def expiry_message(self) -> str:
        return SESSION_EXPIRED_MESSAGE.format(minutes=self.max_session_minutes_label)


def parse_fault_args(
    *,
    close_after_ms: float | None = None,
    close_after_responses: int | None = None,
    close_code: int = 1011,
    close_reason: str = "simulated failure",
    max_session_ms: float | None = None,
    refuse: str | None = None,
    error_at: list[str] | None = None,
    connections: str | None = None,
) -> FaultPlan:
    """A plan from CLI-style strings: ``refuse="3:rate_limit"``, ``error_at=["1500:
    server_error:server_error"]`` (ms:type[:code]), ``connections="1,3"``."""
    plan = FaultPlan(close_after_ms=close_after_ms, close_after_responses=close_after_responses,
                     close_code=close_code, close_reason=close_reason,
                     max_session_ms=max_session_ms)
    if refuse:
        count, _, kind = refuse.partition(":")
        plan.refuse(int(count), kind or "unavailable")  # type: ignore[arg-type]
    for spec in error_at or []:
        parts = spec.split(":")
        if len(parts) < 2:
            raise ValueError(f"--error-at wants MS:TYPE[:CODE], got {spec!r}")
        code = parts[2] if len(parts) > 2 else parts[1]
        plan.errors.append(ErrorFault(after_ms=float(parts[0]), type=parts[1], code=code))
    if connections:
        plan.connections = {int(n) for n in connections.split(",") if n.strip()}
    return plan
