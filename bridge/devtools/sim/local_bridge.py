"""Run the real bridge on a real socket and phone it the way Twilio does.

``LocalBridge`` serves the Starlette app under uvicorn on 127.0.0.1, with
``PUBLIC_URL`` pointing at itself and a generated ``TWILIO_AUTH_TOKEN``, so
every request goes through the production security checks.  ``place_call``
then does what Twilio does for an incoming call: POST the signed webhook,
read the ``<Connect><Stream>`` TwiML it answers, and open the Media Stream
with the signed upgrade and the ``<Parameter>`` values (stream token
included).  Used by the demo, the end-to-end tests, tape authoring and the
benchmark.
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import socket
import urllib.request
import xml.etree.ElementTree as ET
from typing import Any
from urllib.parse import urlencode

import uvicorn
from twilio.request_validator import RequestValidator

from bridge.config import Settings, load_settings
from bridge.devtools.sim.twilio_caller import TwilioCaller
from bridge.services import BridgeServices


def free_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(2048)
    sock.setblocking(False)
    return sock


def local_settings(realtime_url: str, port: int, auth_token: str, **env: str) -> Settings:
    """Settings for a bridge on ``port`` talking to a local Realtime server."""
    base = {
        "OPENAI_API_KEY": "sk-local-simulator-key",
        "OPENAI_REALTIME_URL": realtime_url,
        "PUBLIC_URL": f"http://127.0.0.1:{port}",
        "TWILIO_AUTH_TOKEN": auth_token,
        "DATABASE_URL": "sqlite:///:memory:",
    }
    base.update(env)
    return load_settings(base)


class LocalBridge:
    """The bridge app served on 127.0.0.1 for the duration of an ``async with``."""

    lean_stream_default: bool | None = None
    """``lean_stream`` when not given; None follows the settings' ``stream_server``, which
    is ``serve``'s (lean unless ``BRIDGE_STREAM_SERVER=asgi``).  Tests set it to rerun
    whole-call tests on the other path without changing them."""

    def __init__(
        self,
        realtime_url: str,
        *,
        services: BridgeServices | None = None,
        auth_token: str | None = None,
        env: dict[str, str] | None = None,
        settings: Settings | None = None,
        lean_stream: bool | None = None,
    ) -> None:
        self.auth_token = auth_token or secrets.token_hex(16)
        self._sock = free_socket()
        self.port = self._sock.getsockname()[1]
        self.settings = settings or local_settings(
            realtime_url, self.port, self.auth_token, **(env or {})
        )
        if lean_stream is None:
            lean_stream = self.lean_stream_default
        if lean_stream is None:
            lean_stream = self.settings.stream_server == "lean"
        self.lean_stream = lean_stream
        self._services = services
        self.server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def services(self) -> BridgeServices:
        assert self.app is not None
        return self.app.state.services  # type: ignore[no-any-return]

    async def __aenter__(self) -> LocalBridge:
        from bridge.app import build_services, create_app

        services = self._services or build_services(self.settings)
        self.app = create_app(self.settings, services)
        extra: dict[str, Any] = {}
        if self.lean_stream:
            from bridge.web.lean_stream import router_protocol

            extra["http"] = router_protocol(self.app)
        config = uvicorn.Config(
            self.app,
            **extra,
            log_level="warning",
            lifespan="on",
            ws="websockets-sansio",
            ws_per_message_deflate=False,
            ws_max_size=self.settings.max_message_bytes,
        )
        self.server = uvicorn.Server(config)
        self._task = asyncio.create_task(self.server.serve(sockets=[self._sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None and self._task is not None
        self.server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 10)
        self._sock.close()

    # ------------------------------------------------------------- calling

    def sign(self, url: str, params: dict[str, str]) -> str:
        return str(RequestValidator(self.auth_token).compute_signature(url, params))

    async def post_webhook(
        self, path: str, form: dict[str, str], *, signed: bool = True, signature: str | None = None
    ) -> tuple[int, str]:
        """POST a form as Twilio would (signature over the PUBLIC_URL form of the URL)."""
        url = self.base_url + path
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        elif signed:
            headers["X-Twilio-Signature"] = self.sign(url, form)
        request = urllib.request.Request(
            url, data=urlencode(form).encode(), headers=headers, method="POST"
        )

        def send() -> tuple[int, str]:
            try:
                with urllib.request.urlopen(request, timeout=10) as response:
                    return response.status, response.read().decode()
            except urllib.error.HTTPError as error:
                return error.code, error.read().decode()

        return await asyncio.to_thread(send)

    async def incoming_call(
        self,
        *,
        call_sid: str | None = None,
        from_: str = "+15550001111",
        to: str = "+15559990000",
    ) -> tuple[str, dict[str, str], str]:
        """Do Twilio's webhook step: return (stream url, parameters, call sid)."""
        call_sid = call_sid or "CA" + secrets.token_hex(16)
        form = {
            "AccountSid": "AC" + "0" * 32,
            "CallSid": call_sid,
            "From": from_,
            "To": to,
            "CallStatus": "ringing",
            "Direction": "inbound",
            "ApiVersion": "2010-04-01",
        }
        status, body = await self.post_webhook("/twiml", form)
        if status != 200:
            raise RuntimeError(f"/twiml answered {status}: {body[:200]}")
        stream = ET.fromstring(body).find("./Connect/Stream")
        if stream is None:
            raise RuntimeError(f"/twiml did not answer <Connect><Stream>: {body[:200]}")
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        return stream.get("url", ""), params, call_sid

    async def place_call(self, **caller: Any) -> TwilioCaller:
        """A simulated caller whose call went through the webhook like a real one."""
        url, params, call_sid = await self.incoming_call(
            call_sid=caller.pop("call_sid", None),
            from_=caller.pop("from_", "+15550001111"),
            to=caller.pop("to", "+15559990000"),
        )
        return TwilioCaller(
            url=url,
            call_sid=call_sid,
            custom_parameters=params,
            auth_token=self.auth_token,
            **caller,
        )
