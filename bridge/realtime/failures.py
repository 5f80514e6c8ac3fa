"""What a model-connection failure means for the call: retry now, back off, or give up.

A reconnect loop that treats every failure alike either hammers the API with a bad key
(401 forever, every call, until someone notices) or gives up on a deploy that would have
cleared in a second.  The live API tells the cases apart by the handshake's HTTP status,
by the WebSocket close code and by the ``error`` event's ``code``; this module turns
those into one :class:`Verdict`, with a reason short enough for a metric label.

Pure on purpose (no asyncio, no sockets, no clock): the reconnect state machine in the
core asks it, and tests table it.  Facts used (see ``../shared/PROTOCOLS.md`` B6 and the
OpenAI error-code guide):

* handshake 401 ``invalid_api_key`` ("Incorrect API key provided"): fatal;
* 403 (project or region not allowed) and 404 (``model_not_found``): fatal;
* 429 is two different things with one status: ``rate_limit_exceeded`` (wait, then it
  works) and ``insufficient_quota`` (no credit left: retrying never helps);
* 5xx and network errors: transient;
* close 1001 with "maximum duration" (``session_expired``): the 60-minute cap, reconnect
  at once with the conversation re-seeded; 1011 (server error), 1012/1013 (restart, try
  again later) and 1006 (no close frame): transient;
* close 1008 (policy) and 4000-class application codes (e.g. ``beta_api_shape_disabled``
  closes with 4000): the request itself is wrong, fatal;
* ``error`` events: ``server_error`` is transient; ``session_expired`` reconnects; an
  ``invalid_request_error`` answering our own ``session.update`` means the configuration
  is rejected, fatal; other ``invalid_request_error`` codes (a truncate past the end, a
  cancel with no response) are the normal noise of a live call, not a connection problem.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


class Action(enum.Enum):
    """What to do about a failure."""

    RETRY_NOW = "retry_now"
    """Reconnect immediately (a planned close: session cap, server restart)."""
    BACKOFF = "backoff"
    """Transient: reconnect on the backoff schedule."""
    FATAL = "fatal"
    """Retrying cannot help this call (key, quota, model, configuration)."""
    IGNORE = "ignore"
    """Not a connection failure at all (an ``error`` event about one client event)."""


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    """A short, fixed vocabulary word for logs and metric labels (never the message)."""

    @property
    def retryable(self) -> bool:
        return self.action in (Action.RETRY_NOW, Action.BACKOFF)


_FATAL_CODES = {
    "invalid_api_key": "bad_api_key",
    "insufficient_quota": "insufficient_quota",
    "model_not_found": "model_not_found",
    "model_not_allowed": "model_not_allowed",
    "beta_api_shape_disabled": "api_shape_rejected",
    "unsupported_country_region_territory": "region_not_supported",
}
_TRANSIENT_CODES = {
    "server_error": "server_error",
    "rate_limit_exceeded": "rate_limited",
    "service_unavailable": "server_error",
    "overloaded": "server_error",
}


def classify_handshake(status: int | None, body: Any = None) -> Verdict:
    """A refused or failed connect: ``status`` is the HTTP status of the upgrade's
    answer, or None for a network error (DNS, refused, reset, TLS, timeout).

    ``body`` is the answer's parsed JSON, if any, in the API's shape
    ``{"error": {"message", "type", "code", "param"}}``; it tells quota from rate limit.
    """
    if status is None:
        return Verdict(Action.BACKOFF, "network")
    code, type_ = _error_fields(body)
    if code in _FATAL_CODES:
        return Verdict(Action.FATAL, _FATAL_CODES[code])
    if type_ == "insufficient_quota":  # the older shape puts it in ``type``, code null
        return Verdict(Action.FATAL, "insufficient_quota")
    if status == 401:
        return Verdict(Action.FATAL, "bad_api_key")
    if status == 403:
        return Verdict(Action.FATAL, "forbidden")
    if status == 404:
        return Verdict(Action.FATAL, "model_not_found")
    if status == 429:
        return Verdict(Action.BACKOFF, "rate_limited")
    if status == 408 or status >= 500:
        return Verdict(Action.BACKOFF, f"http_{status}" if status < 600 else "http_5xx")
    if 400 <= status < 500:
        return Verdict(Action.FATAL, f"http_{status}")
    return Verdict(Action.BACKOFF, "http_unexpected")


def classify_close(code: int | None, reason: str = "") -> Verdict:
    """The model socket closed under a live call with ``code`` (None or 1006: no close
    frame, the TCP connection just went away)."""
    if code is None or code == 1006:
        return Verdict(Action.BACKOFF, "connection_lost")
    text = reason.lower()
    if "maximum duration" in text or "session_expired" in text:
        return Verdict(Action.RETRY_NOW, "session_expired")
    if code == 1000:
        # A normal close the bridge did not ask for: the server ended the session.
        return Verdict(Action.RETRY_NOW, "closed_normally")
    if code == 1001:
        return Verdict(Action.RETRY_NOW, "going_away")
    if code == 1012:
        return Verdict(Action.RETRY_NOW, "service_restart")
    if code in (1011, 1013, 1014):
        return Verdict(Action.BACKOFF, f"close_{code}")
    if code in (1002, 1003, 1007, 1008, 1009, 1010):
        return Verdict(Action.FATAL, f"close_{code}")
    if 4000 <= code <= 4999:
        for known, label in _FATAL_CODES.items():
            if known in text:
                return Verdict(Action.FATAL, label)
        return Verdict(Action.FATAL, "close_4xxx")
    return Verdict(Action.BACKOFF, "close_other")


def classify_error_event(event: dict[str, Any], *, during_setup: bool = False) -> Verdict:
    """An ``error`` server event.  ``during_setup``: it came before the session was
    confirmed (``session.updated``), so an ``invalid_request_error`` means the bridge's
    own ``session.update`` was refused and every retry would be refused the same way."""
    code, type_ = _error_fields(event)
    if code == "session_expired":
        return Verdict(Action.RETRY_NOW, "session_expired")
    if code in _FATAL_CODES:
        return Verdict(Action.FATAL, _FATAL_CODES[code])
    if type_ == "insufficient_quota":
        return Verdict(Action.FATAL, "insufficient_quota")
    if code in _TRANSIENT_CODES or type_ == "server_error":
        return Verdict(Action.BACKOFF, _TRANSIENT_CODES.get(code or "", "server_error"))
    if during_setup and type_ == "invalid_request_error":
        return Verdict(Action.FATAL, "session_config_rejected")
    return Verdict(Action.IGNORE, "client_event_rejected")


def _error_fields(payload: Any) -> tuple[str | None, str | None]:
    """``(code, type)`` from ``{"error": {...}}`` (HTTP body or ``error`` event) or from
    the inner object itself; anything malformed gives ``(None, None)``."""
    if not isinstance(payload, dict):
        return None, None
    inner = payload.get("error", payload)
    if not isinstance(inner, dict):
        return None, None
    code, type_ = inner.get("code"), inner.get("type")
    return (code if isinstance(code, str) else None, type_ if isinstance(type_, str) else None)
