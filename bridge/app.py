"""The Starlette app: Twilio's webhooks and the Media Streams WebSocket.

``uvicorn bridge.app:app`` reads the configuration from the environment at
start-up and refuses to start, with one line per problem, when it is wrong.
Tests and the demo build their own app with :func:`create_app`.
"""

from __future__ import annotations

import contextlib
import gc
import hmac
import logging
import sys
from collections.abc import AsyncIterator, Callable
from typing import NoReturn
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket

from bridge.call.asgi_socket import AsgiCallerSocket
from bridge.config import ConfigError, Settings, http_url, load_settings, startup_problems
from bridge.logs import bind_call
from bridge.metrics import CONTENT_TYPE_LATEST
from bridge.operator.routes import install as install_operator
from bridge.operator.routes import operator_routes
from bridge.services import BridgeServices, agent_directory
from bridge.twilio.security import SIGNATURE_HEADER, validate_http_request, validate_websocket
from bridge.twilio.twiml import PARAM_TOKEN, busy_twiml, connect_stream_twiml

log = logging.getLogger("bridge")

XML = "application/xml"


def _services(request: Request | WebSocket) -> BridgeServices:
    return request.app.state.services  # type: ignore[no-any-return]


async def _signed_form(request: Request, path: str) -> dict[str, str] | None:
    """The webhook's form if Twilio signed it (or security is off for local dev)."""
    services = _services(request)
    settings = services.settings
    # Parsed with the standard library: Twilio's webhooks are plain urlencoded forms.
    form = dict(
        parse_qsl((await request.body()).decode("utf-8", "replace"), keep_blank_values=True)
    )
    token = settings.twilio_auth_token
    if token is None:
        if settings.insecure_dev:
            log.warning("BRIDGE_INSECURE_DEV=1: accepting an unsigned %s webhook", path)
            return form
        return None
    assert settings.public_url is not None
    if validate_http_request(
        token,
        settings.public_url,
        path,
        request.url.query,
        form,
        request.headers.get(SIGNATURE_HEADER),
    ):
        return form
    log.warning("rejected %s webhook with a missing or invalid Twilio signature", path)
    services.metrics.reject("bad_signature")
    return None


async def twiml(request: Request) -> Response:
    """Incoming-call webhook: answer with ``<Connect><Stream>`` to our Media Streams URL."""
    services = _services(request)
    form = await _signed_form(request, "/twiml")
    if form is None:
        return PlainTextResponse("invalid Twilio signature", status_code=403)
    if services.draining:
        # 503 makes Twilio use the number's fallback URL (another instance).
        return PlainTextResponse("draining", status_code=503, headers={"Retry-After": "5"})
    if services.at_capacity:
        services.metrics.reject("capacity")
        if services.settings.overflow == "fallback":
            return PlainTextResponse("at capacity", status_code=503)
        return Response(busy_twiml(), media_type=XML)
    settings = services.settings
    call_sid = form.get("CallSid", "")
    bind_call(call_sid)
    parameters = {k: form[k] for k in ("From", "To", "CallSid") if form.get(k)}
    if call_sid:
        services.admit(call_sid)
        parameters[PARAM_TOKEN] = services.mint_stream_token(call_sid)
        if services.wants_preconnect(form.get("To")):
            services.connector.preconnect(call_sid)
    assert settings.stream_url is not None and settings.public_url is not None
    body = connect_stream_twiml(
        settings.stream_url,
        parameters,
        status_callback=http_url(settings.public_url, "/stream-status"),
    )
    return Response(body, media_type=XML)


async def status(request: Request) -> Response:
    """Call status callback: keep the final status and duration with the call record."""
    form = await _signed_form(request, "/status")
    if form is None:
        return PlainTextResponse("invalid Twilio signature", status_code=403)
    store = _services(request).store
    call_sid, call_status = form.get("CallSid"), form.get("CallStatus")
    if store is not None and call_sid and call_status:
        duration = form.get("CallDuration")
        store.record_twilio_status(
            call_sid, call_status, int(duration) if duration and duration.isdigit() else None
        )
    return Response(status_code=204)


async def stream_status(request: Request) -> Response:
    """``<Stream statusCallback>``: log stream errors Twilio reports (e.g. 31920)."""
    form = await _signed_form(request, "/stream-status")
    if form is None:
        return PlainTextResponse("invalid Twilio signature", status_code=403)
    event = form.get("StreamEvent", "")
    level = logging.WARNING if event == "stream-error" else logging.DEBUG
    log.log(
        level,
        "call %s stream %s %s %s",
        form.get("CallSid"),
        form.get("StreamSid"),
        event,
        form.get("StreamError", ""),
    )
    return Response(status_code=204)


async def media_stream(websocket: WebSocket) -> None:
    """Twilio's Media Streams WebSocket: one call per connection."""
    services = _services(websocket)
    settings = services.settings
    token = settings.twilio_auth_token
    if token is not None:
        assert settings.stream_url is not None
        signature = websocket.headers.get(SIGNATURE_HEADER)
        if not validate_websocket(token, settings.stream_url, signature):
            services.metrics.reject("bad_ws_signature")
            log.warning("refused a Media Stream upgrade with a missing or invalid signature")
            await websocket.close(code=1008)  # before accept: the handshake gets HTTP 403
            return
    elif not settings.insecure_dev:
        await websocket.close(code=1008)
        return
    if not services.admission.takes_stream():  # draining, and no answered call to come
        await websocket.close(code=1013)
        return
    # Sockets whose stream has not started are capped (bridge/twilio/stream_guard.py): a
    # replayed upgrade signature cannot pile them up.  The core ends each one that has no
    # start within BRIDGE_START_TIMEOUT_S.
    socket = AsgiCallerSocket(websocket)
    if not services.pending.try_admit(socket):
        await websocket.close(code=1013)  # before accept: the handshake gets HTTP 403
        return
    try:
        await websocket.accept()
        await services.serve_stream(socket)
    finally:
        services.pending.release(socket)


async def healthz(request: Request) -> Response:
    services = _services(request)
    return JSONResponse(
        {"status": "draining" if services.draining else "ok", "calls": len(services.active)},
        status_code=503 if services.draining else 200,
    )


async def livez(request: Request) -> Response:
    """Liveness: the event loop answers.  Never 503 for a drain (unlike ``/healthz``):
    an orchestrator that restarts a draining process kills the calls it is finishing."""
    return JSONResponse({"status": "alive", "calls": len(_services(request).active)})


async def metrics(request: Request) -> Response:
    """``/metrics`` on the public port: only with ``BRIDGE_METRICS_TOKEN`` as a bearer token.

    Without a token configured it is not there at all (404): the public port is Twilio's,
    and call counts are nobody else's business.  ``BRIDGE_METRICS_PORT`` serves the same
    registry on a separate, private listener instead."""
    services = _services(request)
    token = services.settings.metrics_token
    if token is None:
        return PlainTextResponse("not found", status_code=404)
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(
        given.strip().encode(), token.reveal().encode()
    ):
        return PlainTextResponse(
            "unauthorized", status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
    return Response(services.metrics.render(), media_type=CONTENT_TYPE_LATEST)


def start_metrics_listener(services: BridgeServices) -> Callable[[], None] | None:
    """Serve the app's registry on ``BRIDGE_METRICS_PORT`` (prometheus-client's server).

    A thread of its own, so a scrape never waits on the event loop and a busy loop
    never fails a scrape; every value it reads is thread-safe (the library's locks, or
    copies taken without mutating loop state).  Returns the function that stops it."""
    port = services.settings.metrics_port
    if port is None:
        return None
    from prometheus_client import start_http_server

    server, thread = start_http_server(
        port, addr=services.settings.metrics_host, registry=services.metrics.registry
    )
    log.info("metrics on http://%s:%d/metrics", services.settings.metrics_host, port)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return stop


def build_services(settings: Settings) -> BridgeServices:
    """Services for ``settings``: agents, the store it names, REST call control if possible."""
    from bridge.store import open_store

    agents = agent_directory(settings)
    # Numbers named in the agents file's [transfer] table are allowed targets too.
    extra = tuple(n for n in agents.transfer_labels.values() if n not in settings.transfer_numbers)
    settings = settings.with_changes(transfer_numbers=settings.transfer_numbers + extra)
    calls = None
    if settings.twilio_account_sid and (
        settings.twilio_auth_token or (settings.twilio_api_key and settings.twilio_api_secret)
    ):
        from bridge.twilio.calls import TwilioCalls

        calls = TwilioCalls.from_settings(settings, base_url=settings.twilio_api_base_url)
    return BridgeServices(
        settings,
        agents=agents,
        store=open_store(settings.database_url),
        calls=calls,
    )


def create_app(
    settings: Settings | None = None,
    services: BridgeServices | None = None,
    *,
    shutdown_grace_s: float = 0.0,
) -> Starlette:
    """The ASGI app.  With no arguments, configuration comes from the environment."""

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        nonlocal services
        if services is None:
            configured = settings
            if configured is None:
                try:
                    configured = load_settings()
                except ConfigError as exc:
                    _refuse(exc.problems)
            assert configured is not None
            problems = startup_problems(configured)
            if problems:
                _refuse(problems)
            try:
                services = build_services(configured)
            except Exception as exc:  # noqa: BLE001 - shown as a config problem, no traceback
                _refuse(list(getattr(exc, "problems", None) or [str(exc)]))
        assert services is not None
        app.state.services = services
        # The softphone and console exist only with BRIDGE_OPERATOR_TOKEN (else 404).
        app.state.operator = install_operator(services)
        await services.start()
        try:
            stop_metrics = start_metrics_listener(services)
        except OSError as exc:
            await services.close()
            _refuse([f"BRIDGE_METRICS_PORT={services.settings.metrics_port}: {exc.strerror}"])
        _freeze_startup_heap()
        if services.settings.twilio_auth_token is None:
            log.warning(
                "BRIDGE_INSECURE_DEV=1 and no TWILIO_AUTH_TOKEN: requests are NOT verified to "
                "come from Twilio. Never run like this on the internet."
            )
        try:
            yield
        finally:
            await services.close(grace_s=shutdown_grace_s)
            if stop_metrics is not None:
                stop_metrics()

    return Starlette(
        routes=[
            Route("/twiml", twiml, methods=["POST"]),
            Route("/status", status, methods=["POST"]),
            Route("/stream-status", stream_status, methods=["POST"]),
            WebSocketRoute("/media-stream", media_stream),
            Route("/healthz", healthz, methods=["GET"]),
            Route("/livez", livez, methods=["GET"]),
            Route("/metrics", metrics, methods=["GET"]),
            *operator_routes(),
        ],
        lifespan=lifespan,
    )


def _freeze_startup_heap() -> None:
    """Take everything built at start-up out of the cyclic GC's view.

    Modules, settings, routes and the store live as long as the process, yet every full
    collection walks them again: with 300 calls the bridge measured ~42 ms per full
    collection, a stall every call hears as jitter (docs/performance.md). After
    ``gc.freeze()`` full collections only visit objects created since, i.e. per-call state.
    """
    gc.collect()
    gc.freeze()


def _refuse(problems: list[str]) -> NoReturn:
    """Print configuration problems plainly and stop (no traceback)."""
    print("bridge: cannot start, configuration problems:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    sys.stderr.flush()
    raise SystemExit(2)


def __getattr__(name: str) -> Starlette:
    """``bridge.app:app`` for uvicorn, configured from the environment on first access.

    Built lazily and validated right here, so ``uvicorn bridge.app:app`` with a bad
    configuration prints one line per problem and exits 2 instead of a traceback, and
    importing this module (tests, ``create_app``) never reads the environment."""
    if name != "app":
        raise AttributeError(name)
    try:
        settings = load_settings()
    except ConfigError as exc:
        _refuse(exc.problems)
    problems = startup_problems(settings)
    if problems:
        _refuse(problems)
    from bridge.logs import configure_logging

    configure_logging(settings.log_level, settings.log_format)
    try:
        services = build_services(settings)
    except Exception as exc:  # noqa: BLE001 - a config problem: one line, no traceback
        _refuse(list(getattr(exc, "problems", None) or [str(exc)]))
    application = create_app(settings, services)
    globals()["app"] = application
    return application
