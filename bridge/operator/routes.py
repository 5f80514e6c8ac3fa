"""HTTP and WebSocket routes of the softphone and the console, behind operator access.

Mounted by ``create_app`` only when ``BRIDGE_OPERATOR_TOKEN`` is set: without it these
paths do not exist (404), so a bridge that only serves Twilio exposes nothing new.
Every route but ``/login`` needs the session cookie and answers a bare 401 without it;
the softphone socket also needs its single-use ticket and is refused before the
WebSocket is accepted (the handshake gets HTTP 403).  Twilio's routes are untouched.
"""

from __future__ import annotations

import asyncio
import json
import logging
import mimetypes
import secrets
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from starlette.requests import HTTPConnection, Request
from starlette.responses import (
    FileResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from starlette.routing import BaseRoute, Route, WebSocketRoute
from starlette.websockets import WebSocket

from bridge.call.asgi_socket import AsgiCallerSocket
from bridge.config import VOICES, Settings
from bridge.operator.access import COOKIE_NAME, OperatorAccess
from bridge.operator.bus import EventBus
from bridge.operator.softphone import SoftphoneProtocol, choose_encoding
from bridge.operator.tap import CallTap
from bridge.recordings.files import recording_path, repair_open_recordings, sweep
from bridge.recordings.live import LiveRecording
from bridge.store.records import LATENCY_SPANS
from bridge.twilio.twiml import PARAM_TOKEN as STREAM_TOKEN_PARAM

if TYPE_CHECKING:
    from bridge.call.leg import CallerProtocol
    from bridge.call.relay import TapeSink
    from bridge.core.call import Call
    from bridge.core.stream import StreamInfo
    from bridge.services import BridgeServices

log = logging.getLogger("bridge.operator")

#: Keep-alive comment interval on the event streams (proxies drop idle connections).
SSE_IDLE_S = 15.0
SOFTPHONE_PREFIX = "BR"
_STATIC = "static"
_NO_STORE = {"Cache-Control": "no-store"}


def _static_dir() -> Any:
    return resources.files("bridge.operator").joinpath(_STATIC)


class Operator:
    """The operator side of one bridge process: access, the event bus, the routes."""

    def __init__(self, services: BridgeServices, access: OperatorAccess | None) -> None:
        self.services = services
        self.access = access
        self.bus = EventBus()
        self.settings: Settings = services.settings
        self._static = {p.name: p for p in _static_dir().iterdir() if p.is_file()}
        self._last_sweep = 0.0
        self._writes: set[asyncio.Task[Any]] = set()
        services.call_sinks.append(self.tap_for)
        if self.settings.recordings_dir:  # files a crash left open (see recordings.files)
            repair_open_recordings(self.settings.recordings_dir)

    # ----------------------------------------------------------------- calls

    def tap_for(self, call: Call, leg: CallerProtocol) -> TapeSink | None:
        """The per-call observer: console timeline and recording."""
        recorder = None
        if self.settings.recordings_dir:
            recorder = LiveRecording()
        return CallTap(
            self.bus,
            leg=getattr(leg, "name", "twilio"),
            recorder=recorder,
            describe=self._describe,
            on_close=self._call_closed,
            on_started=self._call_started,
        )

    def _describe(self, info: StreamInfo) -> tuple[str | None, str | None]:
        caller = info.custom_parameters.get("From")
        return caller, self.services.hooks.agent_for(info).name

    def _call_started(self, tap: CallTap) -> None:
        recording = tap.recorder
        if recording is None or tap.call_id is None or not self.settings.recordings_dir:
            return
        call_id = tap.call_id
        recording.open(recording_path(self.settings.recordings_dir, call_id, tap.started_wall))

        def first_write(path: Path) -> None:
            # From the first flush on, the record points at the file: a crash later in
            # the call leaves a record whose recording plays up to the last flush.
            store = self.services.store
            if store is not None:
                store.record_recording(call_id, str(path))

        recording.on_first_write = first_write

    def _call_closed(self, tap: CallTap) -> None:
        if tap.recorder is None or tap.call_id is None or not self.settings.recordings_dir:
            return
        task = asyncio.get_running_loop().create_task(
            self._save(tap.call_id, tap.recorder), name="recording-write"
        )
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def _save(self, call_id: str, recording: LiveRecording) -> None:
        try:
            path = await recording.finish()
        except OSError as exc:
            log.error("call %s: cannot write its recording: %s", call_id, exc)
            return
        if path is None:
            return
        store = self.services.store
        if store is not None:
            store.record_recording(call_id, str(path))
        self.bus.recording_saved(call_id, str(path))
        now = time.time()
        if now - self._last_sweep > 3600:  # retention: at most hourly, off the audio path
            self._last_sweep = now
            assert self.settings.recordings_dir is not None
            await asyncio.to_thread(
                sweep, self.settings.recordings_dir, self.settings.recordings_retention_days
            )

    async def flush(self) -> None:
        """Wait for recordings still being written (tests, shutdown)."""
        if self._writes:
            await asyncio.wait(set(self._writes), timeout=10)

    # --------------------------------------------------------------- access

    @property
    def gate(self) -> OperatorAccess:
        """The access checks (routes are only reachable when they exist)."""
        assert self.access is not None
        return self.access

    def session_of(self, conn: HTTPConnection) -> str | None:
        return self.gate.session_id(conn.cookies.get(COOKIE_NAME), time.time())

    def _same_origin(self, request: Request) -> bool:
        """A state-changing request must come from our own pages (defence in depth
        beside SameSite=Strict): a present ``Origin`` must name this host."""
        origin = request.headers.get("origin")
        if origin is None:
            return True
        allowed = {request.headers.get("host", "")}
        if self.settings.public_url:  # behind a proxy that rewrites Host
            allowed.add(urlsplit(self.settings.public_url).netloc)
        return urlsplit(origin).netloc in allowed

    # ---------------------------------------------------------------- pages

    async def login(self, request: Request) -> Response:
        if request.method == "GET":
            return self._file("login.html")
        body = (await request.body()).decode("utf-8", "replace")
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                offered = str(json.loads(body).get("token", ""))
            except (ValueError, AttributeError):
                offered = ""
        else:
            offered = dict(parse_qsl(body)).get("token", "")
        if not self._same_origin(request) or not self.gate.credential_ok(offered):
            log.warning("operator login refused")
            return PlainTextResponse("unauthorized", status_code=401, headers=_NO_STORE)
        response: Response
        target = request.query_params.get("next", "/softphone")
        if target not in ("/softphone", "/console"):
            target = "/softphone"
        if request.headers.get("accept", "").startswith("application/json"):
            response = JSONResponse({"ok": True, "next": target}, headers=_NO_STORE)
        else:
            response = RedirectResponse(target, status_code=303)
        response.set_cookie(
            COOKIE_NAME,
            self.gate.new_session(time.time()),
            max_age=int(self.gate.session_ttl_s),
            httponly=True,
            samesite="strict",
            secure=(self.settings.public_url or "").startswith("https://"),
            path="/",
        )
        return response

    async def logout(self, request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(COOKIE_NAME, path="/")
        return response

    async def softphone_page(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _unauthorised()
        return self._file("softphone.html")

    async def console_page(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _unauthorised()
        return self._file("console.html")

    async def static(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _unauthorised()
        name = request.path_params["name"]
        if name not in self._static or name.endswith(".html"):
            return PlainTextResponse("not found", status_code=404)
        return self._file(name)

    def _file(self, name: str) -> Response:
        data = self._static[name].read_bytes()
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        if name.endswith(".js"):
            kind = "text/javascript"
        return Response(data, media_type=kind, headers=_NO_STORE)

    # ------------------------------------------------------------ softphone

    async def softphone_config(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _unauthorised()
        agents = self.services.agents.agents
        default = self.services.agents.for_number(None)
        return JSONResponse(
            {
                "agents": sorted(agents),
                "default_agent": default.name,
                "voices": list(VOICES),
                "default_voice": default.voice,
            },
            headers=_NO_STORE,
        )

    async def ticket(self, request: Request) -> Response:
        session = self.session_of(request)
        if session is None or not self._same_origin(request):
            return _unauthorised()
        now = time.time()
        call_id = SOFTPHONE_PREFIX + secrets.token_hex(16)
        return JSONResponse(
            {
                "ticket": self.gate.new_ticket(session, call_id, now),
                "call_id": call_id,
                # The stream token the bridge checks on ``start``, as Twilio's calls carry it.
                "parameters": {STREAM_TOKEN_PARAM: self.services.mint_stream_token(call_id)},
                "expires_in_s": self.gate.ticket_ttl_s,
                # A hint, so the page can build its audio graph at the right rate before
                # it dials; the WebSocket handshake is what actually decides.
                "encoding": self.settings.softphone_audio,
            },
            headers=_NO_STORE,
        )

    async def softphone_ws(self, websocket: WebSocket) -> None:
        services = self.services
        session = self.session_of(websocket)
        offered = [str(s) for s in websocket.scope.get("subprotocols") or []]
        choice = choose_encoding(offered, self.settings.softphone_audio)
        grant = await self.gate.redeem_ticket(
            websocket.query_params.get("ticket"), session, time.time()
        )
        if grant.reason == "unavailable" and choice is not None:
            # Not the page's fault, and it should say so: accept only to close with the
            # reason (1013: try again later).  Nothing of the call is started.
            log.error("refused a softphone socket: the ticket ledger cannot answer (%s)",
                      grant.detail)
            await websocket.accept(subprotocol=choice[1])
            await websocket.close(code=1013, reason="ticket check unavailable: the "
                                  "call database is not answering; try again")
            return
        if session is None or not grant.ok:
            log.warning("refused a softphone socket: %s",
                        "no session" if session is None else grant.reason)
            await websocket.close(code=1008)  # before accept: the handshake gets 403
            return
        if choice is None:
            log.warning("refused a softphone socket: it offers no audio encoding the bridge "
                        "speaks (%s)", ", ".join(o[:40] for o in offered[:4]))
            await websocket.close(code=1008)
            return
        if services.draining or services.at_capacity:
            await websocket.close(code=1013)
            return
        encoding, subprotocol = choice
        await websocket.accept(subprotocol=subprotocol)
        await services.serve_stream(
            AsgiCallerSocket(websocket), SoftphoneProtocol(services.json_loads, encoding)
        )

    # -------------------------------------------------------------- console

    async def events(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _unauthorised()
        call_id = request.path_params.get("call_id")
        sub = self.bus.subscribe(call_id)
        if call_id is None:
            first: dict[str, Any] = {"type": "snapshot", "calls": self.bus.snapshot()}
        else:
            call = self.bus.find(call_id)
            first = {
                "type": "snapshot",
                "call": call.summary() if call else None,
                "timeline": list(call.timeline) if call else [],
            }

        async def stream() -> AsyncIterator[str]:
            try:
                yield _sse(first)
                while True:
                    event = await sub.next(SSE_IDLE_S)
                    if event is None:
                        yield _sse({"type": "dropped"})
                        return
                    if event["type"] == "idle":
                        yield ": idle\n\n"
                    else:
                        yield _sse(event)
            finally:
                sub.close()

        return StreamingResponse(
            stream(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def calls(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _unauthorised()
        store = self.services.store
        if store is None:
            return JSONResponse({"calls": []})
        query = request.query_params
        try:
            since = _day(query.get("since"))
            until = _day(query.get("until"), end=True)
            limit = int(query.get("limit", "50"))
        except ValueError:
            return JSONResponse({"error": "dates are YYYY-MM-DD"}, status_code=400)
        await store.flush(1.0)
        rows = await store.search_calls(
            number=query.get("number"), since=since, until=until, limit=limit
        )
        return JSONResponse({"calls": [_summary(r) for r in rows]}, headers=_NO_STORE)

    async def call(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _unauthorised()
        store = self.services.store
        call_id = request.path_params["call_id"]
        record = None
        if store is not None:
            await store.flush(1.0)
            record = await store.get_call(call_id)
        if record is None:
            return JSONResponse({"error": "no such call"}, status_code=404)
        body = _summary(record)
        body["tape"] = self._tape_path(call_id) is not None
        body["turns"] = [
            {"seq": t.seq, "speaker": t.speaker, "text": t.text, "start_ms": t.start_ms,
             "end_ms": t.end_ms, "interrupted": t.interrupted}
            for t in record.turns
        ]
        totals = record.totals
        body["usage"] = {
            "responses": len(record.responses),
            "input_tokens": totals.input_tokens,
            "output_tokens": totals.output_tokens,
            "audio_in_s": round(totals.audio_in_s, 2),
            "audio_out_s": round(totals.audio_out_s, 2),
            "cost_usd": round(totals.cost_usd, 6),
        }
        # Per cascade turn: end of speech -> transcript -> first token -> first TTS audio
        # -> first audio to Twilio (ms; None where a step did not happen).
        body["latency"] = [
            {"response_id": r.response_id, "status": r.status,
             **{span: r.latency_ms.get(span) for span in LATENCY_SPANS}}
            for r in record.responses
            if r.latency_ms
        ]
        return JSONResponse(body, headers=_NO_STORE)

    async def recording(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _unauthorised()
        directory = self.settings.recordings_dir
        store = self.services.store
        if directory is None or store is None:
            return PlainTextResponse("recordings are off", status_code=404)
        record = await store.get_call(request.path_params["call_id"])
        path = _inside(directory, record.recording_path if record else None)
        if path is None:
            return PlainTextResponse("no recording", status_code=404)
        return FileResponse(path, media_type="audio/wav", headers=_NO_STORE)

    async def tape(self, request: Request) -> Response:
        if self.session_of(request) is None:
            return _unauthorised()
        path = self._tape_path(request.path_params["call_id"])
        if path is None:
            return PlainTextResponse("no tape", status_code=404)
        return FileResponse(path, filename=path.name, headers=_NO_STORE)

    def _tape_path(self, call_id: str) -> Path | None:
        directory = self.settings.tapes_dir
        if not directory or not call_id.isalnum():
            return None
        found = sorted(Path(directory).glob(f"*-{call_id}.jsonl*"))
        return found[-1] if found else None


def _unauthorised() -> Response:
    return PlainTextResponse("unauthorized", status_code=401, headers=_NO_STORE)


def _sse(event: dict[str, Any]) -> str:
    return f"data: {json.dumps(event, default=str)}\n\n"


def _day(value: str | None, *, end: bool = False) -> datetime | None:
    if not value:
        return None
    day = datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC)
    return day.replace(hour=23, minute=59, second=59, microsecond=999999) if end else day


def _inside(directory: str, path: str | None) -> Path | None:
    """``path`` if it is a file inside ``directory`` (never follow a record elsewhere)."""
    if not path:
        return None
    root = Path(directory).resolve()
    candidate = Path(path).resolve()
    if root not in candidate.parents or not candidate.is_file():
        return None
    return candidate


def _summary(record: Any) -> dict[str, Any]:
    return {
        "call_id": record.call_sid,
        "from": record.from_number,
        "to": record.to_number,
        "agent": record.agent,
        "started_at": record.started_at.isoformat() if record.started_at else None,
        "ended_at": record.ended_at.isoformat() if record.ended_at else None,
        "duration_s": record.duration_s,
        "end_reason": record.end_reason,
        "turns": record.turn_count,
        "cost_usd": round(record.cost_usd, 6),
        "recording": record.recording_path is not None,
    }


def operator_routes() -> list[BaseRoute]:
    """The routes, always mounted; each answers 404 while the operator side is off."""

    def http(name: str) -> Any:
        async def handler(request: Request) -> Response:
            operator = getattr(request.app.state, "operator", None)
            if operator is None or operator.access is None:
                return PlainTextResponse("not found", status_code=404)
            return await getattr(operator, name)(request)  # type: ignore[no-any-return]

        return handler

    async def socket(websocket: WebSocket) -> None:
        operator = getattr(websocket.app.state, "operator", None)
        if operator is None or operator.access is None:
            await websocket.close(code=1008)
            return
        await operator.softphone_ws(websocket)

    return [
        Route("/login", http("login"), methods=["GET", "POST"]),
        Route("/logout", http("logout"), methods=["POST"]),
        Route("/softphone", http("softphone_page"), methods=["GET"]),
        Route("/console", http("console_page"), methods=["GET"]),
        Route("/operator/static/{name}", http("static"), methods=["GET"]),
        Route("/softphone/config", http("softphone_config"), methods=["GET"]),
        Route("/softphone/ticket", http("ticket"), methods=["POST"]),
        WebSocketRoute("/softphone/ws", socket),
        Route("/console/events", http("events"), methods=["GET"]),
        Route("/console/events/{call_id}", http("events"), methods=["GET"]),
        Route("/api/calls", http("calls"), methods=["GET"]),
        Route("/api/calls/{call_id}", http("call"), methods=["GET"]),
        Route("/api/calls/{call_id}/recording", http("recording"), methods=["GET"]),
        Route("/api/calls/{call_id}/tape", http("tape"), methods=["GET"]),
    ]


def install(services: BridgeServices) -> Operator | None:
    """The operator side for ``services``: the console and softphone when an operator
    credential is set, recordings when a directory is; None when neither is."""
    settings = services.settings
    token = settings.operator_token
    if not token and not settings.recordings_dir:
        return None
    # The softphone's tickets share the stream tokens' single-use ledger (the store's
    # database when there is one), so a ticket works once across the whole fleet.
    access = OperatorAccess(token, claims=services.claims) if token else None
    return Operator(services, access)
