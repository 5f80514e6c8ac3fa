"""A local stand-in for the slice of Twilio's REST API the bridge uses (2010-04-01).

Tests and the demo point the *real* ``twilio.rest.Client`` at it (see
:class:`bridge.twilio.calls.TwilioCalls`'s ``base_url``), so the request the library
builds -- path, form encoding, basic auth -- and the JSON it parses back are exercised
over a real socket on 127.0.0.1, and our own code is never mocked.

Implemented (JSON flavour only, which is all twilio-python requests):

* ``POST /2010-04-01/Accounts/{AC}/Calls.json`` -- create a call (201, ``queued``);
* ``GET|POST /2010-04-01/Accounts/{AC}/Calls/{CA}.json`` -- fetch / update a call
  (``Status``, ``Twiml``, ``Url``...); 404 for unknown calls; 400 with error 21220
  ("Call is not in-progress. Cannot redirect.") for updating an ended call;
* ``GET /2010-04-01/Accounts/{AC}/IncomingPhoneNumbers.json?PhoneNumber=`` -- paged list
  under ``incoming_phone_numbers`` with Twilio's paging fields;
* ``POST /2010-04-01/Accounts/{AC}/IncomingPhoneNumbers/{PN}.json`` -- update a number.

Every request must carry HTTP basic auth as the account (``AC…:auth_token``) or an API
key registered with :meth:`add_api_key` (``SK…:secret``); failures get Twilio's 401 /
20003.  Every request is recorded (method, path, query, form, username -- never the
password) in :attr:`requests` for assertions.

Run it inside a test's event loop (``async with TwilioRestSimulator() as sim``) or in a
background thread for synchronous code (``with TwilioRestSimulator() as sim``).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import secrets
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

__all__ = ["RecordedRequest", "TwilioRestSimulator", "TERMINAL_CALL_STATUSES"]

API_VERSION = "2010-04-01"
TERMINAL_CALL_STATUSES = frozenset({"completed", "canceled", "failed", "busy", "no-answer"})
MAX_INLINE_TWIML = 4000


def _sid(prefix: str) -> str:
    return prefix + secrets.token_hex(16)


def _now() -> str:
    return format_datetime(datetime.now(UTC).replace(microsecond=0))


def _error(status: int, code: int | None, message: str) -> JSONResponse:
    """Twilio's legacy (2010 API) error body, which twilio-python turns into
    ``TwilioRestException(status, uri, "…: " + message, code)``.  ``code=None`` for
    simulator-side validation whose exact Twilio code we do not claim to know (the
    library then reports the HTTP status as the code)."""
    body: dict[str, Any] = {"message": message, "status": status}
    if code is not None:
        body["code"] = code
        body["more_info"] = f"https://www.twilio.com/docs/errors/{code}"
    return JSONResponse(body, status_code=status)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the simulator saw it (no credentials except the username)."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    form_lists: dict[str, list[str]] = field(default_factory=dict)
    username: str | None = None


# Form field -> resource field for the writable parts of each resource.
_CALL_UPDATE_FIELDS = {
    "Url": "url",
    "Method": "method",
    "FallbackUrl": "fallback_url",
    "FallbackMethod": "fallback_method",
    "StatusCallback": "status_callback",
    "StatusCallbackMethod": "status_callback_method",
    "Twiml": "twiml",
    "TimeLimit": "time_limit",
}
_NUMBER_UPDATE_FIELDS = {
    "FriendlyName": "friendly_name",
    "VoiceUrl": "voice_url",
    "VoiceMethod": "voice_method",
    "VoiceFallbackUrl": "voice_fallback_url",
    "VoiceFallbackMethod": "voice_fallback_method",
    "VoiceApplicationSid": "voice_application_sid",
    "StatusCallback": "status_callback",
    "StatusCallbackMethod": "status_callback_method",
    "SmsUrl": "sms_url",
    "SmsMethod": "sms_method",
    "TrunkSid": "trunk_sid",
}


class _QuietServer(uvicorn.Server):
    """uvicorn without signal capture: a test stand-in must not steal Ctrl-C."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


class TwilioRestSimulator:
    """In-process Twilio REST stand-in.  Register calls/numbers, start, point a client at
    :attr:`base_url`, then assert on :attr:`requests`, :attr:`calls` and :attr:`numbers`.

    ``on_call_update(call_sid, form)`` is invoked (in the server's thread/loop) after a
    successful call update, e.g. so a simulated caller can end its Media Stream when the
    bridge redirects the call to ``<Dial>``.
    """

    def __init__(
        self,
        account_sid: str | None = None,
        auth_token: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        on_call_update: Callable[[str, dict[str, str]], None] | None = None,
    ) -> None:
        self.account_sid = account_sid or _sid("AC")
        self.auth_token = auth_token or secrets.token_hex(16)
        self.host = host
        self.port = port
        self.on_call_update = on_call_update
        self.api_keys: dict[str, str] = {}
        self.calls: dict[str, dict[str, Any]] = {}
        self.numbers: dict[str, dict[str, Any]] = {}
        self.requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._server: _QuietServer | None = None
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self.app = Starlette(
            routes=[
                Route(
                    f"/{API_VERSION}/Accounts/{{account}}/Calls.json",
                    self._calls_collection,
                    methods=["GET", "POST"],
                ),
                Route(
                    f"/{API_VERSION}/Accounts/{{account}}/Calls/{{sid}}.json",
                    self._call_instance,
                    methods=["GET", "POST"],
                ),
                Route(
                    f"/{API_VERSION}/Accounts/{{account}}/IncomingPhoneNumbers.json",
                    self._numbers_collection,
                    methods=["GET"],
                ),
                Route(
                    f"/{API_VERSION}/Accounts/{{account}}/IncomingPhoneNumbers/{{sid}}.json",
                    self._number_instance,
                    methods=["GET", "POST"],
                ),
            ]
        )

    def __repr__(self) -> str:
        return f"TwilioRestSimulator(account_sid={self.account_sid!r}, port={self.port})"

    # -- fixtures -----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT`` -- what ``TwilioCalls(base_url=...)`` should get."""
        return f"http://{self.host}:{self.port}"

    def add_api_key(self, key_sid: str | None = None, secret: str | None = None) -> tuple[str, str]:
        """Accept ``key_sid:secret`` as basic auth (Twilio API key); returns the pair."""
        pair = (key_sid or _sid("SK"), secret or secrets.token_hex(16))
        self.api_keys[pair[0]] = pair[1]
        return pair

    def add_call(
        self,
        sid: str | None = None,
        *,
        to: str = "+15550100002",
        from_: str = "+15550100001",
        status: str = "in-progress",
        direction: str = "inbound",
    ) -> str:
        """Register a live call (inbound by default) and return its CallSid."""
        call_sid = sid or _sid("CA")
        with self._lock:
            self.calls[call_sid] = self._call_resource(call_sid, to, from_, status, direction)
        return call_sid

    def add_number(
        self, phone_number: str, *, sid: str | None = None, voice_url: str | None = None
    ) -> str:
        """Register an incoming phone number owned by the account; returns its PN sid."""
        pn_sid = sid or _sid("PN")
        with self._lock:
            self.numbers[pn_sid] = self._number_resource(pn_sid, phone_number, voice_url)
        return pn_sid

    def requests_to(self, path_suffix: str, method: str | None = None) -> list[RecordedRequest]:
        """Recorded requests whose path ends with ``path_suffix`` (and match ``method``)."""
        return [
            r
            for r in list(self.requests)
            if r.path.endswith(path_suffix) and (method is None or r.method == method)
        ]

    # -- lifecycle ----------------------------------------------------------------------

    def _make_server(self) -> _QuietServer:
        config = uvicorn.Config(
            self.app,
            host=self.host,
            port=self.port,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=1,
        )
        return _QuietServer(config)

    def _note_port(self, server: _QuietServer) -> None:
        self.port = server.servers[0].sockets[0].getsockname()[1]

    async def start(self) -> None:
        """Serve in the running event loop; returns once the port is bound."""
        server = self._make_server()
        self._server = server
        self._task = asyncio.create_task(server.serve())
        while not server.started:
            if self._task.done():
                self._task.result()  # re-raise the start-up failure
                raise RuntimeError("Twilio REST simulator failed to start")
            await asyncio.sleep(0.005)
        self._note_port(server)

    async def stop(self) -> None:
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        self._server = None
        self._task = None

    async def __aenter__(self) -> TwilioRestSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def start_in_thread(self, timeout: float = 5.0) -> None:
        """Serve from a daemon thread with its own event loop (for synchronous callers)."""
        server = self._make_server()
        self._server = server
        self._thread = threading.Thread(target=server.run, name="twilio-rest-sim", daemon=True)
        self._thread.start()
        waited = 0.0
        while not server.started:
            if not self._thread.is_alive() or waited > timeout:
                raise RuntimeError("Twilio REST simulator failed to start")
            threading.Event().wait(0.005)
            waited += 0.005
        self._note_port(server)

    def stop_thread(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
        self._server = None
        self._thread = None

    def __enter__(self) -> TwilioRestSimulator:
        self.start_in_thread()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_thread()

    # -- resources ----------------------------------------------------------------------

    def _call_resource(
        self, sid: str, to: str, from_: str, status: str, direction: str
    ) -> dict[str, Any]:
        uri = f"/{API_VERSION}/Accounts/{self.account_sid}/Calls/{sid}.json"
        now = _now()
        base = uri[: -len(".json")]
        return {
            "sid": sid,
            "date_created": now,
            "date_updated": now,
            "parent_call_sid": None,
            "account_sid": self.account_sid,
            "to": to,
            "to_formatted": to,
            "from": from_,
            "from_formatted": from_,
            "phone_number_sid": None,
            "status": status,
            "start_time": now if status == "in-progress" else None,
            "end_time": None,
            "duration": None,
            "price": None,
            "price_unit": "USD",
            "direction": direction,
            "answered_by": None,
            "api_version": API_VERSION,
            "forwarded_from": None,
            "group_sid": None,
            "caller_name": None,
            "queue_time": "0",
            "trunk_sid": None,
            "uri": uri,
            "subresource_uris": {
                "notifications": f"{base}/Notifications.json",
                "recordings": f"{base}/Recordings.json",
                "events": f"{base}/Events.json",
            },
        }

    def _number_resource(
        self, sid: str, phone_number: str, voice_url: str | None
    ) -> dict[str, Any]:
        now = _now()
        return {
            "account_sid": self.account_sid,
            "address_requirements": "none",
            "address_sid": None,
            "api_version": API_VERSION,
            "beta": False,
            "bundle_sid": None,
            "capabilities": {"fax": False, "mms": True, "sms": True, "voice": True},
            "date_created": now,
            "date_updated": now,
            "emergency_address_sid": None,
            "emergency_address_status": "unregistered",
            "emergency_status": "Inactive",
            "friendly_name": phone_number,
            "identity_sid": None,
            "origin": "twilio",
            "phone_number": phone_number,
            "sid": sid,
            "sms_application_sid": "",
            "sms_fallback_method": "POST",
            "sms_fallback_url": "",
            "sms_method": "POST",
            "sms_url": "",
            "status": "in-use",
            "status_callback": "",
            "status_callback_method": "POST",
            "subresource_uris": {},
            "trunk_sid": None,
            "type": "local",
            "uri": f"/{API_VERSION}/Accounts/{self.account_sid}/IncomingPhoneNumbers/{sid}.json",
            "voice_application_sid": None,
            "voice_caller_id_lookup": False,
            "voice_fallback_method": "POST",
            "voice_fallback_url": None,
            "voice_method": "POST",
            "voice_receive_mode": "voice",
            "voice_url": voice_url,
        }

    # -- request plumbing ---------------------------------------------------------------

    async def _admit(self, request: Request) -> tuple[dict[str, str], Response | None]:
        """Record the request, then check auth and account; return (form, error)."""
        form_lists: dict[str, list[str]] = {}
        if request.method == "POST":
            body = (await request.body()).decode("utf-8")
            for key, value in parse_qsl(body, keep_blank_values=True):
                form_lists.setdefault(key, []).append(value)
        form = {k: v[-1] for k, v in form_lists.items()}
        username, password = _basic_auth(request.headers.get("authorization"))
        with self._lock:
            self.requests.append(
                RecordedRequest(
                    method=request.method,
                    path=request.url.path,
                    query=dict(request.query_params),
                    form=form,
                    form_lists=form_lists,
                    username=username,
                )
            )
        if not self._authorised(username, password):
            response = _error(401, 20003, "Authenticate")
            response.headers["WWW-Authenticate"] = 'Basic realm="Twilio API"'
            return form, response
        if request.path_params["account"] != self.account_sid:
            return form, _error(
                404, 20404, f"The requested resource {request.url.path} was not found"
            )
        return form, None

    def _authorised(self, username: str | None, password: str | None) -> bool:
        if username is None or password is None:
            return False
        if username == self.account_sid:
            return secrets.compare_digest(password, self.auth_token)
        expected = self.api_keys.get(username)
        return expected is not None and secrets.compare_digest(password, expected)

    def _not_found(self, request: Request) -> JSONResponse:
        return _error(404, 20404, f"The requested resource {request.url.path} was not found")

    # -- endpoints ----------------------------------------------------------------------

    async def _calls_collection(self, request: Request) -> Response:
        form, error = await self._admit(request)
        if error is not None:
            return error
        if request.method == "GET":
            with self._lock:
                calls = [_public(c) for c in self.calls.values()]
            return JSONResponse(self._page(request, "calls", calls))
        if not form.get("To"):
            return _error(400, 21201, "No 'To' number is specified")
        if not form.get("From"):
            return _error(400, 21603, "A 'From' phone number is required.")
        if not (form.get("Url") or form.get("Twiml") or form.get("ApplicationSid")):
            return _error(400, 21205, "Url parameter is required.")
        if len(form.get("Twiml", "")) > MAX_INLINE_TWIML:
            return _error(400, 32018, "Inline TwiML exceeds the 4000 character limit.")
        call_sid = _sid("CA")
        resource = self._call_resource(call_sid, form["To"], form["From"], "queued", "outbound-api")
        resource.update({v: form[k] for k, v in _CALL_UPDATE_FIELDS.items() if k in form})
        with self._lock:
            self.calls[call_sid] = resource
        return JSONResponse(_public(resource), status_code=201)

    async def _call_instance(self, request: Request) -> Response:
        form, error = await self._admit(request)
        if error is not None:
            return error
        call_sid = request.path_params["sid"]
        with self._lock:
            call = self.calls.get(call_sid)
            if call is None:
                return self._not_found(request)
            if request.method == "GET":
                return JSONResponse(_public(call))
            if call["status"] in TERMINAL_CALL_STATUSES:
                return _error(400, 21220, "Call is not in-progress. Cannot redirect.")
            if "Twiml" in form and "Url" in form:
                return _error(400, None, "Twiml and Url are mutually exclusive.")
            if len(form.get("Twiml", "")) > MAX_INLINE_TWIML:
                return _error(400, 32018, "Inline TwiML exceeds the 4000 character limit.")
            status = form.get("Status")
            if status is not None and status not in ("completed", "canceled"):
                return _error(400, None, f"Invalid Status: {status}")
            if status == "completed" or (
                status == "canceled" and call["status"] in ("queued", "ringing")
            ):
                call["status"] = status
                call["end_time"] = _now()
            call.update({v: form[k] for k, v in _CALL_UPDATE_FIELDS.items() if k in form})
            call["date_updated"] = _now()
            snapshot = _public(call)
        if self.on_call_update is not None:
            self.on_call_update(call_sid, form)
        return JSONResponse(snapshot)

    async def _numbers_collection(self, request: Request) -> Response:
        _, error = await self._admit(request)
        if error is not None:
            return error
        wanted = request.query_params.get("PhoneNumber")
        with self._lock:
            numbers = [
                n
                for n in self.numbers.values()
                # Twilio treats PhoneNumber as a pattern (partial match); so do we, which
                # keeps callers honest about picking the exact number from the results.
                if not wanted or wanted in n["phone_number"]
            ]
            numbers = [dict(n) for n in numbers]
        return JSONResponse(self._page(request, "incoming_phone_numbers", numbers))

    async def _number_instance(self, request: Request) -> Response:
        form, error = await self._admit(request)
        if error is not None:
            return error
        with self._lock:
            number = self.numbers.get(request.path_params["sid"])
            if number is None:
                return self._not_found(request)
            if request.method == "POST":
                number.update({v: form[k] for k, v in _NUMBER_UPDATE_FIELDS.items() if k in form})
                number["date_updated"] = _now()
            snapshot = dict(number)
        return JSONResponse(snapshot)

    def _page(self, request: Request, key: str, records: list[dict[str, Any]]) -> dict[str, Any]:
        """A 2010-API list page: records under ``key`` plus the paging fields."""
        params = dict(request.query_params)
        try:
            page_size = max(1, min(1000, int(params.get("PageSize", "50"))))
            page = max(0, int(params.get("Page", "0")))
        except ValueError:
            page_size, page = 50, 0
        start = page * page_size
        chunk = records[start : start + page_size]
        path = request.url.path

        def uri(page_number: int) -> str:
            query = {**params, "PageSize": str(page_size), "Page": str(page_number)}
            return f"{path}?{urlencode(query)}"

        more = start + page_size < len(records)
        return {
            key: chunk,
            "end": start + max(len(chunk) - 1, 0),
            "first_page_uri": uri(0),
            "next_page_uri": uri(page + 1) if more else None,
            "page": page,
            "page_size": page_size,
            "previous_page_uri": uri(page - 1) if page > 0 else None,
            "start": start,
            "uri": uri(page),
        }


def _public(resource: dict[str, Any]) -> dict[str, Any]:
    """A call as Twilio shows it: what we keep for assertions (the inline TwiML or URL it
    was given, its callbacks) is not part of Twilio's call representation."""
    return {k: v for k, v in resource.items() if k not in _CALL_PRIVATE_FIELDS}


_CALL_PRIVATE_FIELDS = frozenset(_CALL_UPDATE_FIELDS.values())


def _basic_auth(header: str | None) -> tuple[str | None, str | None]:
    if not header or not header.lower().startswith("basic "):
        return None, None
    try:
        decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None, None
    username, sep, password = decoded.partition(":")
    return (username, password) if sep else (None, None)
