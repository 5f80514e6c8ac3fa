"""Failure classification and the backoff schedule (pure: no sockets, no clock)."""

from __future__ import annotations

import pytest

from bridge.realtime.failures import (
    Action,
    classify_close,
    classify_error_event,
    classify_handshake,
)


def body(code: str | None, type_: str = "invalid_request_error") -> dict[str, object]:
    return {"error": {"message": "x", "type": type_, "code": code, "param": None}}


@pytest.mark.parametrize(
    ("status", "payload", "action", "reason"),
    [
        (None, None, Action.BACKOFF, "network"),
        (401, body("invalid_api_key"), Action.FATAL, "bad_api_key"),
        (401, None, Action.FATAL, "bad_api_key"),
        (403, None, Action.FATAL, "forbidden"),
        (404, body("model_not_found"), Action.FATAL, "model_not_found"),
        (429, body("rate_limit_exceeded", "requests"), Action.BACKOFF, "rate_limited"),
        (429, body("insufficient_quota", "insufficient_quota"), Action.FATAL,
         "insufficient_quota"),
        # The older body shape: type insufficient_quota, code null.
        (429, body(None, "insufficient_quota"), Action.FATAL, "insufficient_quota"),
        (429, None, Action.BACKOFF, "rate_limited"),
        (500, None, Action.BACKOFF, "http_500"),
        (502, "<html>bad gateway</html>", Action.BACKOFF, "http_502"),
        (503, None, Action.BACKOFF, "http_503"),
        (400, None, Action.FATAL, "http_400"),
    ],
)
def test_handshake_failures(status: int | None, payload: object, action: Action,
                            reason: str) -> None:
    verdict = classify_handshake(status, payload)
    assert (verdict.action, verdict.reason) == (action, reason)


@pytest.mark.parametrize(
    ("code", "reason", "action", "label"),
    [
        (1001, "Your session hit the maximum duration of 60 minutes.", Action.RETRY_NOW,
         "session_expired"),
        (1001, "", Action.RETRY_NOW, "going_away"),
        (1012, "", Action.RETRY_NOW, "service_restart"),
        (1011, "internal error", Action.BACKOFF, "close_1011"),
        (1013, "", Action.BACKOFF, "close_1013"),
        (None, "", Action.BACKOFF, "connection_lost"),
        (1006, "", Action.BACKOFF, "connection_lost"),
        (1008, "policy", Action.FATAL, "close_1008"),
        (4000, "invalid_request_error.beta_api_shape_disabled", Action.FATAL,
         "api_shape_rejected"),
        (4001, "", Action.FATAL, "close_4xxx"),
        (1000, "", Action.RETRY_NOW, "closed_normally"),
    ],
)
def test_close_codes(code: int | None, reason: str, action: Action, label: str) -> None:
    verdict = classify_close(code, reason)
    assert (verdict.action, verdict.reason) == (action, label)


def test_error_events() -> None:
    expired = {"type": "error", "error": {"type": "invalid_request_error",
                                          "code": "session_expired", "message": "..."}}
    assert classify_error_event(expired).action is Action.RETRY_NOW
    server = {"type": "error", "error": {"type": "server_error", "code": None}}
    assert classify_error_event(server).action is Action.BACKOFF
    # An invalid_request_error during a live call is about one client event: not a
    # reason to reconnect.
    truncate = {"type": "error", "error": {"type": "invalid_request_error",
                                           "code": "invalid_value"}}
    assert classify_error_event(truncate).action is Action.IGNORE
    # ...but answering our session.update it means the configuration is refused.
    assert classify_error_event(truncate, during_setup=True).reason == "session_config_rejected"
    assert classify_error_event(truncate, during_setup=True).action is Action.FATAL
    quota = {"type": "error", "error": {"type": "insufficient_quota",
                                        "code": "insufficient_quota"}}
    assert classify_error_event(quota).action is Action.FATAL
    model = {"type": "error", "error": {"type": "invalid_request_error",
                                        "code": "model_not_found"}}
    assert classify_error_event(model).reason == "model_not_found"
    # Malformed events never raise.
    for bad in ({}, {"error": "oops"}, {"error": {"code": 7}}, {"error": None}):
        assert classify_error_event(bad).action is Action.IGNORE  # type: ignore[arg-type]


def test_retryable_property() -> None:
    assert classify_handshake(503).retryable
    assert not classify_handshake(401).retryable


