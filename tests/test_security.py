"""Twilio signatures (real ``RequestValidator``) and per-call stream tokens."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import logging
from collections.abc import AsyncIterator, Iterator
from urllib.parse import parse_qsl

import httpx
import pytest
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from twilio.request_validator import RequestValidator

from bridge.config import Secret, websocket_url
from bridge.twilio.security import (
    SIGNATURE_HEADER,
    signed_url,
    validate_http_request,
    validate_websocket,
)
from bridge.twilio.stream_token import StreamTokens, TokenCheck, derive_stream_secret

pytestmark = pytest.mark.e2e

TOKEN = "0123456789abcdef0123456789abcdef"
AUTH = Secret(TOKEN)
PUBLIC_URL = "https://bridge.example.com"
WSS_URL = websocket_url(PUBLIC_URL, "/media-stream")
FORM = {
    "CallSid": "CA" + "a" * 32,
    "AccountSid": "AC" + "b" * 32,
    "From": "+15550100001",
    "To": "+15550100002",
    "CallStatus": "ringing",
}


def twilio_sign(url: str, params: dict[str, str]) -> str:
    """What Twilio sends: computed by the library, as Twilio's backend does."""
    return str(RequestValidator(TOKEN).compute_signature(url, params))


# -- HTTP webhooks ----------------------------------------------------------------------


def test_signature_matches_twilios_documented_algorithm() -> None:
    """Independent of the library: HMAC-SHA1(url + sorted name+value), base64."""
    url = signed_url(PUBLIC_URL, "/twiml", "agent=sales")
    assert url == "https://bridge.example.com/twiml?agent=sales"
    data = url + "".join(k + FORM[k] for k in sorted(FORM))
    by_hand = base64.b64encode(hmac.new(TOKEN.encode(), data.encode(), hashlib.sha1).digest())
    assert validate_http_request(AUTH, PUBLIC_URL, "/twiml", "agent=sales", FORM, by_hand.decode())


def test_valid_webhook() -> None:
    sig = twilio_sign("https://bridge.example.com/twiml", FORM)
    assert validate_http_request(AUTH, PUBLIC_URL, "/twiml", "", FORM, sig)


def test_public_url_base_path_is_part_of_the_signed_url() -> None:
    sig = twilio_sign("https://example.com/bridge/twiml", FORM)
    assert validate_http_request(AUTH, "https://example.com/bridge", "/twiml", "", FORM, sig)
    assert not validate_http_request(AUTH, "https://example.com", "/twiml", "", FORM, sig)


@pytest.mark.parametrize(
    ("path", "query"),
    [("/status", ""), ("/twiml", "x=1"), ("/twiml/", "")],
)
def test_tampered_url_is_rejected(path: str, query: str) -> None:
    sig = twilio_sign("https://bridge.example.com/twiml", FORM)
    assert not validate_http_request(AUTH, PUBLIC_URL, path, query, FORM, sig)


def test_tampered_param_is_rejected() -> None:
    sig = twilio_sign("https://bridge.example.com/twiml", FORM)
    assert not validate_http_request(
        AUTH, PUBLIC_URL, "/twiml", "", {**FORM, "From": "+15559999999"}, sig
    )
    assert not validate_http_request(AUTH, PUBLIC_URL, "/twiml", "", {**FORM, "Extra": "1"}, sig)


@pytest.mark.parametrize("signature", [None, ""])
def test_missing_signature_is_rejected(signature: str | None) -> None:
    assert not validate_http_request(AUTH, PUBLIC_URL, "/twiml", "", FORM, signature)


def test_wrong_auth_token_is_rejected() -> None:
    sig = twilio_sign("https://bridge.example.com/twiml", FORM)
    assert not validate_http_request(Secret("other"), PUBLIC_URL, "/twiml", "", FORM, sig)
    assert not validate_http_request(Secret(""), PUBLIC_URL, "/twiml", "", FORM, sig)


def test_failed_validation_logs_no_secret(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    validate_http_request(AUTH, PUBLIC_URL, "/twiml", "", FORM, "bm9wZQ==")
    validate_websocket(AUTH, WSS_URL, "bm9wZQ==")
    assert caplog.records  # something was said...
    assert TOKEN not in caplog.text  # ...but never the token


# -- WebSocket upgrade ------------------------------------------------------------------


def test_websocket_signature_over_wss_url_with_no_params() -> None:
    sig = twilio_sign(WSS_URL, {})
    assert WSS_URL == "wss://bridge.example.com/media-stream"
    assert validate_websocket(AUTH, WSS_URL, sig)


def test_websocket_signature_invalid_cases() -> None:
    assert not validate_websocket(AUTH, WSS_URL, None)
    assert not validate_websocket(
        AUTH, WSS_URL, twilio_sign("https://bridge.example.com/media-stream", {})
    )
    assert not validate_websocket(AUTH, WSS_URL, twilio_sign("wss://evil.example/media-stream", {}))
    assert not validate_websocket(Secret("other"), WSS_URL, twilio_sign(WSS_URL, {}))


# -- the URL comes from PUBLIC_URL, not from Host / proxy headers ------------------------


def _app() -> Starlette:
    """A tiny app wired the way the real one should be (request data + PUBLIC_URL)."""

    async def twiml(request: Request) -> PlainTextResponse:
        # Starlette's request.form() needs python-multipart; Twilio posts plain
        # urlencoded bodies, which the stdlib parses.
        form = dict(parse_qsl((await request.body()).decode(), keep_blank_values=True))
        ok = validate_http_request(
            AUTH,
            PUBLIC_URL,
            request.url.path,
            request.url.query,
            form,
            request.headers.get(SIGNATURE_HEADER),
        )
        return PlainTextResponse("ok" if ok else "forbidden", status_code=200 if ok else 403)

    async def media(ws: WebSocket) -> None:
        if not validate_websocket(AUTH, WSS_URL, ws.headers.get(SIGNATURE_HEADER)):
            await ws.close(code=1008)
            return
        await ws.accept()
        await ws.send_text("hello")
        await ws.close()

    return Starlette(
        routes=[Route("/twiml", twiml, methods=["POST"]), WebSocketRoute("/media-stream", media)]
    )


class _QuietServer(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:  # leave Ctrl-C to pytest
        yield


@pytest.fixture
async def app_url() -> AsyncIterator[str]:
    """The tiny app served by uvicorn on a real socket (as Twilio would reach it)."""
    config = uvicorn.Config(_app(), host="127.0.0.1", port=0, log_level="warning", lifespan="off")
    server = _QuietServer(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.005)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    await task


async def test_forged_host_does_not_change_the_signed_url(app_url: str) -> None:
    good = twilio_sign("https://bridge.example.com/twiml", FORM)
    forged = twilio_sign("https://evil.example/twiml", FORM)
    spoof = {
        "host": "evil.example",
        "x-forwarded-host": "evil.example",
        "x-forwarded-proto": "https",
    }
    async with httpx.AsyncClient(base_url=f"http://{app_url}") as client:
        # An honest Twilio request arriving through a proxy (internal Host) is accepted.
        response = await client.post("/twiml", data=FORM, headers={"X-Twilio-Signature": good})
        assert response.status_code == 200
        # A signature made for the attacker's host is refused, whatever Host says.
        response = await client.post(
            "/twiml", data=FORM, headers={**spoof, "X-Twilio-Signature": forged}
        )
        assert response.status_code == 403
        # ...and the real signature still validates with spoofed headers present.
        response = await client.post(
            "/twiml", data=FORM, headers={**spoof, "X-Twilio-Signature": good}
        )
        assert response.status_code == 200


async def test_websocket_handshake_accepts_valid_and_refuses_invalid(app_url: str) -> None:
    url = f"ws://{app_url}/media-stream"
    headers = {"x-twilio-signature": twilio_sign(WSS_URL, {})}
    async with websockets.connect(url, additional_headers=headers) as ws:
        assert await ws.recv() == "hello"
    # Signed over the URL the socket really has (ws://127.0.0.1...), or not signed at all.
    for bad in ({}, {"x-twilio-signature": twilio_sign(url, {})}):
        with pytest.raises(websockets.InvalidStatus) as refused:
            async with websockets.connect(url, additional_headers=bad):
                pass
        assert refused.value.response.status_code == 403


# -- stream tokens ----------------------------------------------------------------------

CALL = "CA" + "c" * 32
SECRET = b"k" * 32


def test_token_round_trip() -> None:
    tokens = StreamTokens(SECRET, ttl_s=60)
    token = tokens.mint(CALL, now=1000.0)
    assert len(token) < 120 and token.isascii()
    check = tokens.verify(token, CALL, now=1001.0)
    assert check == TokenCheck(True) and check and check.reason is None
    second = tokens.verify(token, CALL, now=1001.0)  # single use
    assert not second and second.reason == "replayed"


@pytest.mark.parametrize("token", [None, ""])
def test_token_missing(token: str | None) -> None:
    assert StreamTokens(SECRET).verify(token, CALL, 0.0) == TokenCheck(False, "missing")


def test_token_expired_at_ttl() -> None:
    tokens = StreamTokens(SECRET, ttl_s=30)
    early, late = tokens.mint(CALL, 0.0), tokens.mint(CALL, 0.0)
    assert tokens.verify(early, CALL, 29.999).ok
    assert tokens.verify(late, CALL, 30.0) == TokenCheck(False, "expired")


def test_token_wrong_call() -> None:
    tokens = StreamTokens(SECRET)
    token = tokens.mint(CALL, 0.0)
    assert tokens.verify(token, "CA" + "d" * 32, 1.0) == TokenCheck(False, "wrong call")
    assert tokens.verify(token, CALL, 1.0).ok  # a failed check does not consume it


def test_token_replayed() -> None:
    tokens = StreamTokens(SECRET)
    token = tokens.mint(CALL, 0.0)
    assert tokens.verify(token, CALL, 1.0).ok
    assert tokens.verify(token, CALL, 2.0) == TokenCheck(False, "replayed")


@pytest.mark.parametrize(
    "token",
    [
        "garbage",
        "v1.a.b.c.d",
        "v2" + "x" * 80,
        "v1..60000..",
        "v1.AAAAAAAAAAAAAAAA.-5.AAAAAAAAAAA." + "A" * 43,
    ],
)
def test_token_malformed(token: str) -> None:
    assert StreamTokens(SECRET).verify(token, CALL, 0.0) == TokenCheck(False, "malformed")


def test_token_bad_signature() -> None:
    tokens = StreamTokens(SECRET, ttl_s=60)
    token = tokens.mint(CALL, 0.0)
    version, token_id, expires, tag, mac = token.split(".")
    flipped = mac[:-2] + ("A" if mac[-2] != "A" else "B") + mac[-1]
    longer = str(int(expires) + 3_600_000)
    for forged in (
        ".".join([version, token_id, expires, tag, flipped]),
        ".".join([version, token_id, longer, tag, mac]),  # extend own lifetime
        StreamTokens(b"o" * 32).mint(CALL, 0.0),  # another key (another deployment)
    ):
        assert tokens.verify(forged, CALL, 1.0) == TokenCheck(False, "bad signature")


def test_used_tokens_are_forgotten_after_expiry() -> None:
    tokens = StreamTokens(SECRET, ttl_s=10)
    for i in range(100):
        assert tokens.verify(tokens.mint(CALL, float(i)), CALL, float(i)).ok
    assert tokens.remembered == 10  # only the unexpired ones (minted in the last 10 s)
    tokens.verify(None, CALL, 1000.0)  # any check evicts
    assert tokens.remembered == 0


def test_replay_memory_has_a_hard_ceiling() -> None:
    tokens = StreamTokens(SECRET, ttl_s=1000, max_used=5)
    for i in range(20):
        assert tokens.verify(tokens.mint(CALL, 0.0), CALL, float(i)).ok
    assert tokens.remembered == 5


def test_secret_derived_from_auth_token_is_stable_and_separate() -> None:
    a1, a2 = derive_stream_secret(Secret(TOKEN)), derive_stream_secret(Secret(TOKEN))
    assert a1 == a2 and len(a1) == 32
    assert a1 != derive_stream_secret(Secret(TOKEN + "x"))
    assert TOKEN.encode() not in a1
    # Two instances sharing TWILIO_AUTH_TOKEN accept each other's tokens.
    minted = StreamTokens.from_auth_token(Secret(TOKEN)).mint(CALL, 0.0)
    assert StreamTokens.from_auth_token(Secret(TOKEN)).verify(minted, CALL, 1.0).ok


def test_secret_is_random_without_auth_token() -> None:
    assert derive_stream_secret(None) != derive_stream_secret(None)
    minted = StreamTokens.from_auth_token(None).mint(CALL, 0.0)
    assert not StreamTokens.from_auth_token(None).verify(minted, CALL, 1.0).ok


def test_tokens_repr_shows_no_key_material() -> None:
    tokens = StreamTokens(SECRET)
    assert "k" * 8 not in repr(tokens)
    with pytest.raises(ValueError):
        StreamTokens(b"short")
