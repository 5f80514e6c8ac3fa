"""Operator access to the softphone and console, over real sockets.

The credential is exchanged for a signed, HTTP-only, SameSite=Strict cookie; the softphone
socket needs a single-use, short-lived ticket bound to that cookie's session.  Everything
without them answers a bare 401 (or a refused handshake), and Twilio's routes are as before.
"""

from __future__ import annotations

import logging
import secrets
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from bridge.config import Secret
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.operator.access import COOKIE_NAME, OperatorAccess

pytestmark = pytest.mark.e2e

PROTECTED_GET = [
    "/softphone",
    "/console",
    "/softphone/config",
    "/operator/static/softphone.js",
    "/console/events",
    "/console/events/BR0123",
    "/api/calls",
    "/api/calls/BR0123",
    "/api/calls/BR0123/recording",
    "/api/calls/BR0123/tape",
]


@pytest.fixture
async def bridge():
    token = secrets.token_urlsafe(24)
    async with RealtimeSimulator(script=["agent_short"], api_key="sk-access") as sim:
        env = {"OPENAI_API_KEY": "sk-access", "BRIDGE_OPERATOR_TOKEN": token}
        async with LocalBridge(sim.url, env=env) as running:
            running.operator_token = token  # type: ignore[attr-defined]
            yield running


def ws_url(bridge: LocalBridge, ticket: str | None) -> str:
    url = f"ws://127.0.0.1:{bridge.port}/softphone/ws"
    return url + (f"?ticket={ticket}" if ticket is not None else "")


async def login(client: httpx.AsyncClient, token: str) -> httpx.Response:
    return await client.post("/login", data={"token": token}, follow_redirects=False)


async def refused(url: str, cookie: str | None) -> int:
    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"} if cookie else {}
    with pytest.raises(InvalidStatus) as caught:
        async with connect(url, additional_headers=headers, open_timeout=5):
            pass
    return caught.value.response.status_code


async def test_everything_is_401_without_the_cookie(bridge: LocalBridge) -> None:
    async with httpx.AsyncClient(base_url=bridge.base_url) as client:
        for path in PROTECTED_GET:
            response = await client.get(path)
            assert response.status_code == 401, path
            assert response.text == "unauthorized", path  # reveals nothing
            assert "set-cookie" not in response.headers
        response = await client.post("/softphone/ticket")
        assert response.status_code == 401
        # The sign-in form is the one thing served without a session.
        assert (await client.get("/login")).status_code == 200
    assert await refused(ws_url(bridge, "t1.whatever"), None) == 403


async def test_wrong_credential_is_refused(bridge: LocalBridge, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    async with httpx.AsyncClient(base_url=bridge.base_url) as client:
        for wrong in ("", "nope", bridge.operator_token[:-1], bridge.operator_token + "x"):
            response = await login(client, wrong)
            assert response.status_code == 401
            assert COOKIE_NAME not in response.headers.get("set-cookie", "")
        assert (await client.get("/softphone")).status_code == 401
        response = await login(client, bridge.operator_token)
        assert response.status_code == 303
    assert bridge.operator_token not in caplog.text


async def test_login_sets_a_strict_http_only_cookie(bridge: LocalBridge) -> None:
    async with httpx.AsyncClient(base_url=bridge.base_url) as client:
        response = await login(client, bridge.operator_token)
        assert response.status_code == 303 and response.headers["location"] == "/softphone"
        cookie = response.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie and "max-age=" in cookie
        assert bridge.operator_token.lower() not in cookie
        page = await client.get("/softphone")
        assert page.status_code == 200 and "softphone.js" in page.text
        assert (await client.get("/console")).status_code == 200
        assert (await client.get("/api/calls")).json() == {"calls": []}


async def test_expired_and_forged_cookies_are_refused(bridge: LocalBridge) -> None:
    access = OperatorAccess(Secret(bridge.operator_token))
    expired = access.new_session(time.time() - access.session_ttl_s - 1)  # validly signed
    other = OperatorAccess(Secret("another-operator-token-entirely"))
    forged = other.new_session(time.time())
    good = access.new_session(time.time())
    tampered = good[:-2] + ("AA" if not good.endswith("AA") else "BB")
    for cookie in (expired, forged, tampered, "s1.garbage"):
        async with httpx.AsyncClient(
            base_url=bridge.base_url, cookies={COOKIE_NAME: cookie}
        ) as client:
            assert (await client.get("/console")).status_code == 401
            assert (await client.post("/softphone/ticket")).status_code == 401
    async with httpx.AsyncClient(base_url=bridge.base_url, cookies={COOKIE_NAME: good}) as c:
        assert (await c.get("/console")).status_code == 200


async def test_tickets_are_single_use_short_lived_and_bound_to_the_session(
    bridge: LocalBridge,
) -> None:
    async with httpx.AsyncClient(base_url=bridge.base_url) as client:
        await login(client, bridge.operator_token)
        cookie = client.cookies[COOKIE_NAME]
        grant = (await client.post("/softphone/ticket")).json()
        assert grant["call_id"].startswith("BR") and grant["expires_in_s"] <= 60
        second = (await client.post("/softphone/ticket")).json()
        # Cross-site POSTs are refused even with the cookie.
        evil = await client.post("/softphone/ticket", headers={"Origin": "http://evil.test"})
        assert evil.status_code == 401

    headers = {"Cookie": f"{COOKIE_NAME}={cookie}"}
    async with connect(ws_url(bridge, grant["ticket"]), additional_headers=headers) as ws:
        assert ws.response.status_code == 101
    # Used once: refused the second time.
    assert await refused(ws_url(bridge, grant["ticket"]), cookie) == 403
    # A ticket without the session cookie, or with another session's cookie.
    assert await refused(ws_url(bridge, second["ticket"]), None) == 403
    access = OperatorAccess(Secret(bridge.operator_token))
    assert await refused(ws_url(bridge, second["ticket"]), access.new_session(time.time())) == 403
    # Expired: validly signed for this very session, but past its expiry.
    session = access.session_id(cookie, time.time())
    assert session is not None
    old = access.new_ticket(session, "BR" + "0" * 32, time.time() - access.ticket_ttl_s - 1)
    assert await refused(ws_url(bridge, old), cookie) == 403
    assert await refused(ws_url(bridge, None), cookie) == 403
    # The unused second ticket still works with its own session.
    async with connect(ws_url(bridge, second["ticket"]), additional_headers=headers) as ws:
        assert ws.response.status_code == 101


async def test_off_without_an_operator_token_and_twilio_routes_unchanged() -> None:
    async with RealtimeSimulator(script=["agent_short"], api_key="sk-access") as sim:
        async with LocalBridge(sim.url, env={"OPENAI_API_KEY": "sk-access"}) as bridge:
            async with httpx.AsyncClient(base_url=bridge.base_url) as client:
                for path in ["/login", *PROTECTED_GET]:
                    assert (await client.get(path)).status_code == 404, path
            assert await refused(ws_url(bridge, "t1.x"), None) == 403
            # Twilio's side: the signed webhook answers TwiML; unsigned is refused.
            url, params, _ = await bridge.incoming_call()
            assert url.endswith("/media-stream") and params["streamToken"]
            status, _ = await bridge.post_webhook("/twiml", {"CallSid": "CA1"}, signed=False)
            assert status == 403


async def test_twilio_routes_unchanged_with_the_operator_side_on(bridge: LocalBridge) -> None:
    caller = await bridge.place_call(script=[], duration_ms=600)
    result = await caller.run()
    assert result.error is None and result.start_sent_ms is not None
    status, _ = await bridge.post_webhook("/twiml", {"CallSid": "CA1"}, signed=False)
    assert status == 403
