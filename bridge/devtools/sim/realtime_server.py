"""A faithful OpenAI Realtime API server simulator, over a real WebSocket.

Why it exists: the bridge's hardest behaviour (barge-in, truncation, dialect handling)
depends on exactly what the Realtime server sends and when. Tests, the demo, tape
authoring and the load benchmark all need a server that speaks the real wire protocol
(GA and beta event names and session shapes, real error codes) on 127.0.0.1, with a real
energy VAD on the appended audio and replies streamed faster than real time from a
script of bundled clips. The protocol is summarised in ``../shared/PROTOCOLS.md`` (B, C).

Usage::

    async with RealtimeSimulator(script=["agent_greeting", "agent_reply"]) as sim:
        ...connect to sim.url...
        await sim.wait_for(lambda: sim.connections and sim.connections[0].first_sent(
            "response.done"))

Design notes:

* One :class:`_Session` per WebSocket. Client events are handled in order by the reader;
  each response streams from its own task. Cancellation (``response.cancel`` or a VAD
  barge-in) only sets a reason and wakes the response task, which then emits the
  ``.done`` events and ``response.done`` itself, so no delta can ever follow its
  ``response.done``.
* Per-message work is kept cheap for the benchmark: no per-frame logging, VAD energy
  measured with ``audioop`` (see ``vad``), events written without an await each when the
  socket allows it (``ws_fast``), output clips encoded once per format and cached, and
  optional recording of audio payloads (``record_audio=False``) or of events at all.
* The script (``script``) is shared by the simulator, but every connection walks it with
  its own cursor, so concurrent calls in a benchmark all get the same conversation.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import hmac
import itertools
import json
import logging
import math
import os
import secrets
import string
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from http import HTTPStatus
from types import TracebackType
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import Event

from bridge.config import Secret
from bridge.devtools.sim.clips import clip_duration_ms, clip_text, load_clip
from bridge.devtools.sim.realtime_audio import decode_input, encode_clip
from bridge.devtools.sim.realtime_faults import (
    ErrorFault,
    FaultPlan,
    parse_fault_args,
    refusal_response,
)
from bridge.devtools.sim.realtime_session import (
    Dialect,
    SessionConfig,
    SessionUpdateError,
    apply_update,
    bytes_per_ms,
    render_session,
)
from bridge.devtools.sim.vad import EnergyVad, VadEvent
from bridge.devtools.sim.ws_fast import Arrivals, message_of, send_now

__all__ = [
    "AudioDeltaRecord",
    "ConnectionRecord",
    "EventRecord",
    "ErrorFault",
    "FaultPlan",
    "RealtimeSimulator",
    "ReplySpec",
    "ResponseRecord",
    "TruncationRecord",
]

log = logging.getLogger(__name__)

#: A scripted reply: a clip name; ``{"clip": name, "transcript"?: str, "latency_ms"?: int}``;
#: ``{"function_call": {"name": str, "arguments": "<json string>"}}``;
#: ``{"error": {"type"?, "code"?, "message"?}}``; ``{"close": code, "reason"?: str}``;
#: or a list of clips/function calls, giving one response with several output items.
ReplySpec = str | dict[str, Any] | list[str | dict[str, Any]]

OPENAI_PATH = "/v1/realtime"
AZURE_PATH = "/openai/v1/realtime"
_PATHS = {OPENAI_PATH: False, AZURE_PATH: True}

_CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "conversation.item.retrieve",
    "conversation.item.truncate",
    "conversation.item.delete",
    "response.create",
    "response.cancel",
)
_REDACTED_HEADERS = {"authorization", "api-key", "cookie"}
_MIN_COMMIT_MS = 100.0
_SEMANTIC_SILENCE_MS = {"low": 1200, "medium": 700, "auto": 700, "high": 350}

T = TypeVar("T")

# ---------------------------------------------------------------- ids

_ALNUM = string.ascii_letters + string.digits
_ID_SALT = "".join(secrets.choice(_ALNUM) for _ in range(9))
_id_counter = itertools.count(1)


def _new_id(prefix: str) -> str:
    """Unique ids shaped like the real ones (``event_`` + 21 alphanumerics), cheaply:
    a random per-process salt plus a counter."""
    return f"{prefix}_{_ID_SALT}{next(_id_counter):012d}"


# ---------------------------------------------------------------- the hot path

_APPEND = "input_audio_buffer.append"
_PLAIN_APPEND_PREFIXES = tuple(
    json.dumps({"type": _APPEND, "audio": ""}, separators=separators)[:-2]
    for separators in ((", ", ": "), (",", ":"))
)
"""``{"type": "input_audio_buffer.append", "audio": "`` as ``json.dumps`` writes it, spaced
(the bridge) and compact."""


def _plain_append(raw: str | bytes) -> tuple[str, bytes] | None:
    """``(payload, audio)`` of an append written exactly as ``{"type": ..., "audio": "..."}``
    with a valid base64 payload; None for anything else.

    Appends are nearly every message the simulator receives (50 a second per call), and
    ``json.loads`` was a visible share of the load generator. A payload made only of base64
    characters needs no JSON unescaping, so slicing it out gives exactly what the parser
    would; any other shape (more keys, escapes, bad base64) returns None and takes the
    general path, so errors and records are unchanged.
    """
    if not isinstance(raw, str) or not raw.endswith('"}'):
        return None
    for prefix in _PLAIN_APPEND_PREFIXES:
        if raw.startswith(prefix):
            payload = raw[len(prefix) : -2]
            try:
                return payload, binascii.a2b_base64(payload, strict_mode=True)
            except (binascii.Error, ValueError):
                return None
    return None


# ---------------------------------------------------------------- records


@dataclass(slots=True)
class EventRecord:
    """One event on the wire, with its ``time.monotonic()`` timestamp."""

    t: float
    event: dict[str, Any]


@dataclass(slots=True)
class AudioDeltaRecord:
    """When each output audio delta left the simulator (for latency benchmarks)."""

    t: float
    response_id: str
    item_id: str
    byte_offset: int
    nbytes: int


@dataclass(slots=True)
class TruncationRecord:
    """A ``conversation.item.truncate`` as received and how it was answered."""

    t: float
    conn_id: int
    item_id: str
    content_index: int
    audio_end_ms: Any
    item_audio_ms: int | None
    """Audio generated for the item so far (ms) when the truncate arrived."""
    ok: bool
    error_code: str | None = None
    item_full_ms: float | None = None
    """Full duration of the scripted clip behind the item (ms), if it is one."""


@dataclass(slots=True)
class ResponseRecord:
    """A response as the simulator ran it."""

    id: str
    trigger: Literal["vad", "client"]
    started_at: float
    spec: Any
    params: dict[str, Any]
    status: str = "in_progress"
    reason: str | None = None
    done_at: float | None = None
    item_ids: list[str] = field(default_factory=list)


@dataclass
class ConnectionRecord:
    """Everything observable about one WebSocket connection, for tests and benchmarks."""

    id: int
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    """Request headers (lower-case names); credentials are redacted."""
    dialect: Dialect
    azure: bool
    model: str | None
    opened_at: float
    received: list[EventRecord] = field(default_factory=list)
    sent: list[EventRecord] = field(default_factory=list)
    audio_deltas: list[AudioDeltaRecord] = field(default_factory=list)
    responses: list[ResponseRecord] = field(default_factory=list)
    received_count: int = 0
    sent_count: int = 0
    audio_in_bytes: int = 0
    audio_in_ms: float = 0.0
    session: SessionConfig | None = None
    close_code: int | None = None
    close_reason: str | None = None
    closed_by: Literal["server", "client"] | None = None
    closed_at: float | None = None
    session_updates: list[dict[str, Any]] = field(default_factory=list)
    """Every ``session.update`` received, kept even with ``record_events=False`` (they are
    rare), so a reconnect test can compare the new session's config with the old one's."""
    items_created: list[dict[str, Any]] = field(default_factory=list)
    """Every ``conversation.item.create`` received (same reason: re-seeded turns)."""

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def effective_session(self) -> dict[str, Any] | None:
        """The current session rendered in this connection's dialect."""
        return render_session(self.session, self.dialect) if self.session else None

    def sent_types(self) -> list[str]:
        return [r.event["type"] for r in self.sent]

    def received_types(self) -> list[str]:
        return [r.event.get("type", "") for r in self.received]

    def sent_events(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [r.event for r in self.sent if type_ is None or r.event["type"] == type_]

    def received_events(self, type_: str | None = None) -> list[dict[str, Any]]:
        return [r.event for r in self.received if type_ is None or r.event.get("type") == type_]

    def first_sent(self, type_: str) -> dict[str, Any] | None:
        for r in self.sent:
            if r.event["type"] == type_:
                return r.event
        return None

    def sent_at(self, type_: str) -> list[float]:
        """Send times of every event of a type."""
        return [r.t for r in self.sent if r.event["type"] == type_]


# ---------------------------------------------------------------- conversation state


@dataclass
class _Item:
    id: str
    type: str  # message | function_call | function_call_output
    role: str | None = None
    status: str = "completed"
    content: list[dict[str, Any]] = field(default_factory=list)
    call_id: str | None = None
    name: str | None = None
    arguments: str | None = None
    output: str | None = None
    # assistant audio bookkeeping
    audio_format: str | None = None
    audio_bytes: int = 0
    full_audio_ms: float = 0.0
    full_transcript: str = ""
    transcript: str = ""
    text_only: bool = False

    @property
    def audio_ms(self) -> int:
        if self.audio_format is None:
            return 0
        return self.audio_bytes // bytes_per_ms(self.audio_format)  # type: ignore[arg-type]

    def render(self, dialect: Dialect) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.id, "object": "realtime.item", "type": self.type,
                                "status": self.status}
        if self.type == "message":
            item["role"] = self.role
            if self.role == "assistant" and self.audio_format is not None:
                if self.status == "in_progress" and not self.transcript and not self.content:
                    item["content"] = []
                elif self.text_only:
                    kind = "output_text" if dialect == "ga" else "text"
                    item["content"] = [{"type": kind, "text": self.transcript}]
                else:
                    kind = "output_audio" if dialect == "ga" else "audio"
                    item["content"] = [{"type": kind, "transcript": self.transcript}]
            else:
                item["content"] = [dict(c) for c in self.content]
        elif self.type == "function_call":
            item.update(call_id=self.call_id, name=self.name, arguments=self.arguments or "")
        elif self.type == "function_call_output":
            item.update(call_id=self.call_id, output=self.output)
        return item


@dataclass
class _Output:
    kind: Literal["clip", "function_call"]
    clip: str = ""
    transcript: str = ""
    name: str = ""
    arguments: str = ""


@dataclass
class _Response:
    record: ResponseRecord
    outputs: list[_Output]
    special: dict[str, Any] | None
    latency_s: float
    text_only: bool
    items: list[_Item] = field(default_factory=list)
    cancel_reason: str | None = None
    pause: asyncio.Future[None] | None = None
    task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.record.id


def _normalise_spec(spec: ReplySpec) -> tuple[list[_Output], dict[str, Any] | None, int | None]:
    """A reply spec -> (outputs, special error/close directive, latency override ms)."""
    if isinstance(spec, str):
        load_clip(spec)
        return [_Output("clip", clip=spec, transcript=clip_text(spec))], None, None
    if isinstance(spec, list):
        outs: list[_Output] = []
        for part in spec:
            sub, special, _ = _normalise_spec(part)
            if special is not None:
                raise ValueError("error/close directives cannot be part of a list reply")
            outs.extend(sub)
        return outs, None, None
    if not isinstance(spec, dict):
        raise TypeError(f"bad reply spec: {spec!r}")
    latency = spec.get("latency_ms")
    if "clip" in spec:
        name = str(spec["clip"])
        load_clip(name)
        text = str(spec.get("transcript", clip_text(name)))
        return [_Output("clip", clip=name, transcript=text)], None, latency
    if "function_call" in spec:
        fc = spec["function_call"]
        args = fc.get("arguments", "{}")
        if not isinstance(args, str):
            args = json.dumps(args)
        return [_Output("function_call", name=str(fc["name"]), arguments=args)], None, latency
    if "error" in spec or "close" in spec:
        return [], dict(spec), latency
    raise ValueError(f"bad reply spec: {spec!r}")


# ---------------------------------------------------------------- the simulator


class RealtimeSimulator:
    """OpenAI Realtime API stand-in on 127.0.0.1 (see module docstring).

    Args:
        script: replies, consumed one per response per connection; when exhausted the
            last entry repeats; when empty, ``agent_short`` is used.
        api_key: if set, the handshake requires ``Authorization: Bearer <key>`` (or
            ``api-key: <key>`` on the Azure path) and otherwise fails with HTTP 401.
        reject_beta: mimic today's service: a beta (``OpenAI-Beta: realtime=v1``)
            connection gets an ``error`` ``beta_api_shape_disabled`` and close 4000.
        caller_transcripts: transcripts for committed user audio, in order per connection;
            afterwards a placeholder ``"(caller spoke 2.2 s)"``.
        chunk_ms: audio per output delta. chunk_interval_ms: time between deltas (the
            defaults stream 4x faster than real time). first_delta_latency_ms: "think
            time" between ``response.created`` and the first output item.
        vad_min_speech_ms: loud audio needed before ``speech_started`` fires.
        faults: a :class:`~bridge.devtools.sim.realtime_faults.FaultPlan` (closes, session cap,
            refused handshakes, ``error`` events, per connection); :attr:`faults` stays
            mutable, so a test can arm a refusal between two connects.
        close_after_ms / close_after_responses / close_code / close_reason /
            expire_after_ms: shorthands for the same fields of a plan built when
            ``faults`` is not given (``expire_after_ms`` is its ``max_session_ms``).
        record_events: keep every sent/received event; record_audio: keep audio payloads
            in those records (turn off under load to save memory).
        on_audio_appended: ``(conn_id, byte_offset, nbytes, t)`` per append (latency
            benchmarks). on_audio_delta: ``(conn_id, response_id, item_id, byte_offset,
            nbytes, t)`` per output delta sent.
    """

    def __init__(
        self,
        script: Sequence[ReplySpec] | None = None,
        *,
        api_key: str | Secret | None = None,
        reject_beta: bool = False,
        caller_transcripts: Sequence[str] | None = None,
        default_model: str = "gpt-realtime",
        chunk_ms: int = 100,
        chunk_interval_ms: float = 25.0,
        first_delta_latency_ms: float = 200.0,
        vad_min_speech_ms: int = 60,
        close_after_ms: float | None = None,
        close_after_responses: int | None = None,
        close_code: int = 1011,
        close_reason: str = "simulated failure",
        expire_after_ms: float | None = None,
        faults: FaultPlan | None = None,
        continue_script: bool = False,
        record_events: bool = True,
        record_audio: bool = True,
        on_audio_appended: Callable[[int, int, int, float], None] | None = None,
        on_audio_delta: Callable[[int, str, str, int, int, float], None] | None = None,
    ) -> None:
        self.script: list[ReplySpec] = list(script or [])
        #: One conversation across sessions: a new connection (a reconnecting client)
        #: takes up the script where the previous one left it, instead of from the top.
        self.continue_script = continue_script
        self.script_position = 0
        self.transcript_position = 0
        for spec in self.script:
            _normalise_spec(spec)  # fail fast on typos in clip names
        if isinstance(api_key, str):
            api_key = Secret(api_key)
        self._api_key = api_key if api_key else None
        self.reject_beta = reject_beta
        self.caller_transcripts = list(caller_transcripts or [])
        self.default_model = default_model
        self.chunk_ms = chunk_ms
        self.chunk_interval_ms = chunk_interval_ms
        self.first_delta_latency_ms = first_delta_latency_ms
        self.vad_min_speech_ms = vad_min_speech_ms
        if faults is None:
            faults = FaultPlan(
                close_after_ms=close_after_ms, close_after_responses=close_after_responses,
                close_code=close_code, close_reason=close_reason, max_session_ms=expire_after_ms,
            )
        self.faults = faults
        self.record_events = record_events
        self.record_audio = record_audio
        self.on_audio_appended = on_audio_appended
        self.on_audio_delta = on_audio_delta

        self.connections: list[ConnectionRecord] = []
        self.truncations: list[TruncationRecord] = []
        self.rejected_handshakes: list[tuple[str, int]] = []
        self.handshakes = 0
        """Upgrade requests seen, refused ones included (``len(connections)`` counts the
        accepted ones)."""
        self._live: dict[int, _Session] = {}
        self._conn_ids = itertools.count(1)
        self._server: Server | None = None
        self._host = "127.0.0.1"
        self._port = 0

    # -- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        """Listen on ``host:port`` (port 0 picks a free one; see :attr:`url`)."""
        self._server = await serve(
            self._handle,
            host,
            port,
            process_request=self._process_request,
            compression=None,  # cheaper under load; the real service's choice is moot here
            max_size=16 * 1024 * 1024,  # append accepts up to 15 MiB of base64
            server_header="realtime-simulator",
            create_connection=_SimConnection,
        )
        sock = next(iter(self._server.sockets))
        self._host, self._port = sock.getsockname()[:2]

    async def stop(self) -> None:
        """Close every connection (1001 going away) and stop listening."""
        if self._server is None:
            return
        self._server.close(close_connections=True)
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> RealtimeSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    # -- addresses

    @property
    def port(self) -> int:
        return self._port

    @property
    def base_url(self) -> str:
        return f"ws://{self._host}:{self._port}"

    @property
    def url(self) -> str:
        """OpenAI-style endpoint, e.g. ``ws://127.0.0.1:PORT/v1/realtime``."""
        return self.base_url + OPENAI_PATH

    @property
    def azure_url(self) -> str:
        """Azure GA-style endpoint ``/openai/v1/realtime``."""
        return self.base_url + AZURE_PATH

    # -- introspection and control

    @property
    def open_connections(self) -> int:
        return len(self._live)

    @property
    def last_connection(self) -> ConnectionRecord:
        return self.connections[-1]

    @property
    def connection_count(self) -> int:
        """Connections accepted so far (refused handshakes are not connections)."""
        return len(self.connections)

    async def wait_for(
        self, predicate: Callable[[], T], timeout: float = 5.0, interval: float = 0.005
    ) -> T:
        """Poll ``predicate`` until it is truthy and return its value, else TimeoutError."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() >= deadline:
                raise TimeoutError(f"condition not met within {timeout} s")
            await asyncio.sleep(interval)

    async def inject_error(
        self,
        conn_id: int | None = None,
        *,
        code: str | None = "server_error",
        message: str = "The server had an error while processing your request. Sorry about "
        "that!",
        type_: str = "server_error",
        param: str | None = None,
    ) -> None:
        """Send an ``error`` event on one connection (or all open ones)."""
        targets = [self._live[conn_id]] if conn_id is not None else list(self._live.values())
        for session in targets:
            await session.send_error(type_, code, message, param, None)

    async def close_connection(
        self, conn_id: int | None = None, code: int = 1011, reason: str = ""
    ) -> None:
        """Close one connection (or all) from the server side."""
        targets = [self._live[conn_id]] if conn_id is not None else list(self._live.values())
        for session in targets:
            await session.close(code, reason)

    # -- internals

    def _next_transcript(self, index: int) -> str | None:
        if index < len(self.caller_transcripts):
            return self.caller_transcripts[index]
        return None

    def _spec_at(self, index: int) -> ReplySpec:
        if not self.script:
            return "agent_short"
        return self.script[min(index, len(self.script) - 1)]

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        self.handshakes += 1
        path = urlsplit(request.path).path.rstrip("/")
        if path not in _PATHS:
            self.rejected_handshakes.append((path, 404))
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        refusal = self.faults.take_refusal()
        if refusal is not None:
            status, text = refusal
            self.rejected_handshakes.append((path, status))
            return _json_response(connection, status, text)
        if self._api_key is not None and not self._authorised(request.headers, _PATHS[path]):
            self.rejected_handshakes.append((path, 401))
            return _json_response(connection, *refusal_response("bad_key"))
        return None

    def _authorised(self, headers: Headers, azure: bool) -> bool:
        assert self._api_key is not None
        key = self._api_key.reveal().encode()
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer ") and hmac.compare_digest(auth[7:].strip().encode(), key):
            return True
        if azure:
            api_key = headers.get("api-key", "")
            return hmac.compare_digest(api_key.strip().encode(), key)
        return False

    async def _handle(self, ws: ServerConnection) -> None:
        request = ws.request
        assert request is not None
        parts = urlsplit(request.path)
        query = dict(parse_qsl(parts.query))
        beta_header = request.headers.get("OpenAI-Beta", "")
        headers = {
            name.lower(): ("<redacted>" if name.lower() in _REDACTED_HEADERS else value)
            for name, value in request.headers.raw_items()
        }
        record = ConnectionRecord(
            id=next(self._conn_ids),
            path=parts.path,
            query=query,
            headers=headers,
            dialect="beta" if "realtime=v1" in beta_header.replace(" ", "") else "ga",
            azure=_PATHS.get(parts.path.rstrip("/"), False),
            model=query.get("model") or query.get("deployment"),
            opened_at=time.monotonic(),
        )
        self.connections.append(record)
        session = _Session(self, ws, record)
        self._live[record.id] = session
        try:
            await session.run()
        finally:
            self._live.pop(record.id, None)
            record.closed_at = time.monotonic()
            if record.close_code is None:
                record.close_code = ws.close_code
                record.close_reason = ws.close_reason
            if record.closed_by is None:
                record.closed_by = "client"


def _json_response(connection: ServerConnection, status: int, text: str) -> Response:
    """An HTTP error answer to the upgrade, typed as the API types its error bodies."""
    response = connection.respond(HTTPStatus(status), text)
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


# ---------------------------------------------------------------- one connection


class _SimConnection(ServerConnection):
    """A server connection that hands plain appends to their session as they are parsed.

    Why: every message the library delivers goes through its queue of frames and wakes
    the session's reader task; at 50 appends a second per call that hop cost the load
    generator more than handling the append itself. An append (see ``_plain_append``)
    that arrives while nothing earlier is queued, being reassembled or being handled is
    handled right here instead; every other frame, and every frame behind one still in
    progress, goes the library's way to ``recv()``, so the session sees messages in
    order and the library keeps its own checks (UTF-8, fragments, flow control).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.session: _Session | None = None
        self._arrivals = Arrivals(self)

    def process_event(self, event: Event) -> None:
        if not self._arrivals.took(event, self._take_now):
            super().process_event(event)

    def _take_now(self, frame: Frame) -> bool:
        session = self.session
        if (
            session is None
            or frame.opcode is not Opcode.TEXT
            or not session.idle
            or not self._arrivals.ready(frame)
        ):
            return False
        text = message_of(frame)
        return isinstance(text, str) and session.receive_now(text)



class _Session:
    """Protocol state of one connection: session config, input buffer + VAD, the
    conversation, and at most one active response."""

    def __init__(self, sim: RealtimeSimulator, ws: ServerConnection, record: ConnectionRecord):
        self.sim = sim
        self.ws = ws
        self.rec = record
        self.dialect: Dialect = record.dialect
        self.cfg = SessionConfig(id=_new_id("sess"), model=record.model or sim.default_model)
        record.session = self.cfg
        self.voice_locked = False
        # input audio
        self.audio_ms = 0.0  # the appended-audio clock
        self.buffer_start_ms = 0.0  # start of the uncommitted buffer on that clock
        self.buffer_bytes = 0
        self._odd_byte = b""
        self.vad: EnergyVad | None = None
        self.speech_item_id: str | None = None
        self.speech_start_ms = 0
        self.user_turns = 0
        # conversation
        self.items: dict[str, _Item] = {}
        self.order: list[str] = []
        self.call_ids: set[str] = set()
        self.response: _Response | None = None
        self.responses_started = 0
        self.responses_done = 0
        self.pending_vad_response = False
        self.tasks: set[asyncio.Task[Any]] = set()
        self.timers: list[asyncio.TimerHandle] = []
        self.closing = False
        # Order between appends handled on arrival and messages read by run():
        self._reading = False  # run() is handling a message
        self._backlog: asyncio.Task[None] | None = None  # an append's events still to send
        self._handlers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {
            "session.update": self.on_session_update,
            "input_audio_buffer.append": self.on_append,
            "input_audio_buffer.commit": self.on_commit,
            "input_audio_buffer.clear": self.on_clear,
            "conversation.item.create": self.on_item_create,
            "conversation.item.retrieve": self.on_item_retrieve,
            "conversation.item.truncate": self.on_truncate,
            "conversation.item.delete": self.on_item_delete,
            "response.create": self.on_response_create,
            "response.cancel": self.on_response_cancel,
        }
        self._rebuild_vad()

    # -- plumbing

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task: asyncio.Task[Any] = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return task

    async def emit(self, type_: str, **fields: Any) -> dict[str, Any]:
        """Send one server event (with a fresh ``event_id``) and record it."""
        event: dict[str, Any] = {"type": type_, "event_id": _new_id("event")}
        event.update(fields)
        text = json.dumps(event, separators=(",", ":"))
        if not send_now(self.ws, text):
            await self.ws.send(text)  # closing or backed up: the library's path decides
        rec = self.rec
        rec.sent_count += 1
        if self.sim.record_events:
            stored = event
            if not self.sim.record_audio and "delta" in event and type_.endswith("audio.delta"):
                stored = dict(event, delta=f"<{len(event['delta'])} base64 chars>")
            rec.sent.append(EventRecord(time.monotonic(), stored))
        return event

    async def send_error(
        self,
        type_: str,
        code: str | None,
        message: str,
        param: str | None,
        client_event_id: Any,
    ) -> None:
        """The real error shape: ``{"type":"error","error":{type,code,message,param,
        event_id}}`` where ``event_id`` names the client event that caused it."""
        await self.emit("error", error={
            "type": type_, "code": code, "message": message, "param": param,
            "event_id": client_event_id,
        })

    async def invalid(self, ev: dict[str, Any], code: str, message: str,
                      param: str | None = None) -> None:
        await self.send_error("invalid_request_error", code, message, param, ev.get("event_id"))

    async def close(self, code: int, reason: str) -> None:
        if self.closing:
            return
        self.closing = True
        self.rec.close_code, self.rec.close_reason, self.rec.closed_by = code, reason, "server"
        with contextlib.suppress(ConnectionClosed):
            await self.ws.close(code, reason)

    def _close_soon(self, code: int, reason: str) -> None:
        self._spawn(self.close(code, reason))

    # -- main loop

    async def run(self) -> None:
        sim = self.sim
        try:
            if self.dialect == "beta" and sim.reject_beta:
                await self.send_error(
                    "invalid_request_error", "beta_api_shape_disabled",
                    "The Realtime Beta API is no longer supported. Please use /v1/realtime "
                    "for the GA API.", None, None,
                )
                await self.close(4000, "invalid_request_error.beta_api_shape_disabled")
                return
            self._arm_timers()
            await self.emit("session.created", session=render_session(self.cfg, self.dialect))
            if isinstance(self.ws, _SimConnection):
                self.ws.session = self
            async for raw in self.ws:
                self._reading = True
                try:
                    if self._backlog is not None:
                        await self._backlog  # an earlier append's events go first
                    await self.dispatch(raw, time.monotonic())
                finally:
                    self._reading = False
        except ConnectionClosed:
            pass
        finally:
            if isinstance(self.ws, _SimConnection):
                self.ws.session = None
            for timer in self.timers:
                timer.cancel()
            if self.response is not None and self.response.task is not None:
                self.response.task.cancel()
            for task in list(self.tasks):
                task.cancel()

    def _arm_timers(self) -> None:
        plan = self.sim.faults
        if not plan.applies_to(self.rec.id):
            return
        loop = asyncio.get_running_loop()
        if plan.close_after_ms is not None:
            self.timers.append(loop.call_later(
                plan.close_after_ms / 1000, self._close_soon, plan.close_code, plan.close_reason))
        if plan.max_session_ms is not None:
            self.timers.append(loop.call_later(
                plan.max_session_ms / 1000, lambda: self._spawn(self._expire())))
        for fault in plan.errors:
            self.timers.append(loop.call_later(fault.after_ms / 1000, self._fire_error, fault))

    async def _expire(self) -> None:
        """The session cap as the live API ends it: the ``error`` event, then close 1001
        (going away) whose reason repeats the message."""
        message = self.sim.faults.expiry_message
        with contextlib.suppress(ConnectionClosed):
            await self.send_error("invalid_request_error", "session_expired", message, None, None)
        await self.close(1001, message)

    def _fire_error(self, fault: ErrorFault) -> None:
        self._spawn(self._error_fault(fault))

    async def _error_fault(self, fault: ErrorFault) -> None:
        with contextlib.suppress(ConnectionClosed):
            await self.send_error(fault.type, fault.code, fault.message, fault.param, None)
        if fault.close_code is not None:
            await self.close(fault.close_code, fault.code or fault.type)

    @property
    def idle(self) -> bool:
        """Nothing received earlier is still being handled, so handling now keeps order."""
        return not self._reading and self._backlog is None

    def receive_now(self, text: str) -> bool:
        """Handle a plain append on arrival (see ``_SimConnection``); False if it isn't one.

        Buffering and VAD run here; only the events they cause, if any, have to wait for
        the socket, so they go to a backlog task that later messages queue behind.
        """
        plain = _plain_append(text)
        if plain is None:
            return False
        self.rec.received_count += 1
        payload, audio = plain
        ev = self._received_append(time.monotonic(), payload)
        try:
            events = self._buffer_audio(audio)
        except Exception:
            log.exception("realtime simulator failed handling %s", _APPEND)
            self._hold(self._server_error(ev))
            return True
        if events:
            self._hold(self._guarded(ev, self._announce(events)))
        return True

    def _hold(self, work: Coroutine[Any, Any, None]) -> None:
        task = self._spawn(self._until_closed(work))
        self._backlog = task
        task.add_done_callback(self._backlog_done)

    def _backlog_done(self, task: asyncio.Task[Any]) -> None:
        if self._backlog is task:
            self._backlog = None

    @staticmethod
    async def _until_closed(work: Awaitable[None]) -> None:
        """Await ``work``; a closed connection just ends it (run() sees the close too)."""
        with contextlib.suppress(ConnectionClosed):
            await work

    async def dispatch(self, raw: str | bytes, t: float) -> None:
        rec = self.rec
        rec.received_count += 1
        plain = _plain_append(raw)
        if plain is not None:  # the common case, already decoded (see _plain_append)
            payload, audio = plain
            ev = self._received_append(t, payload)
            await self._guarded(ev, self._append(audio))
            return
        try:
            ev = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            if self.sim.record_events:
                rec.received.append(EventRecord(t, {"type": "", "raw": str(raw)[:200]}))
            await self.send_error(
                "invalid_request_error", "invalid_json",
                f"We could not parse the JSON body of your request. ({exc.__class__.__name__})",
                None, None)
            return
        if not isinstance(ev, dict):
            if self.sim.record_events:
                rec.received.append(EventRecord(t, {"type": "", "raw": ev}))
            await self.send_error("invalid_request_error", "invalid_type",
                                  "Expected an object as the event.", None, None)
            return
        type_ = ev.get("type")
        self._record_received(t, ev)
        if type_ == "session.update":
            rec.session_updates.append(ev)
        elif type_ == "conversation.item.create":
            rec.items_created.append(ev)
        if not isinstance(type_, str):
            await self.invalid(ev, "missing_required_parameter",
                               "Missing required parameter: 'type'.", "type")
            return
        handler = self._handlers.get(type_)
        if handler is None:
            supported = ", ".join(f"'{name}'" for name in _CLIENT_EVENTS)
            await self.invalid(
                ev, "invalid_value",
                f"Invalid value: '{type_}'. Supported values are: {supported}.", "type")
            return
        await self._guarded(ev, handler(ev))

    def _received_append(self, t: float, payload: str) -> dict[str, Any]:
        """The event of a plain append (what ``json.loads`` would give), recorded."""
        ev = {"type": _APPEND, "audio": payload}
        self._record_received(t, ev)
        return ev

    def _record_received(self, t: float, ev: dict[str, Any]) -> None:
        if not self.sim.record_events:
            return
        stored = ev
        if not self.sim.record_audio and ev.get("type") == _APPEND:
            audio = ev.get("audio")
            n = len(audio) if isinstance(audio, str) else 0
            stored = dict(ev, audio=f"<{n} base64 chars>")
        self.rec.received.append(EventRecord(t, stored))

    async def _guarded(self, ev: dict[str, Any], handling: Awaitable[None]) -> None:
        """Run a handler; a simulator bug becomes a ``server_error`` event, not a close."""
        try:
            await handling
        except ConnectionClosed:
            raise
        except Exception:
            log.exception("realtime simulator failed handling %s", ev.get("type"))
            await self._server_error(ev)

    async def _server_error(self, ev: dict[str, Any]) -> None:
        await self.send_error("server_error", "server_error",
                              "The server had an error while processing your request.",
                              None, ev.get("event_id"))

    # -- session

    async def on_session_update(self, ev: dict[str, Any]) -> None:
        try:
            new = apply_update(self.cfg, ev.get("session"), self.dialect,
                               voice_locked=self.voice_locked)
        except SessionUpdateError as err:
            await self.invalid(ev, err.code, err.message, err.param)
            return
        old = self.cfg
        self.cfg = new
        self.rec.session = new
        if (old.input_format != new.input_format or old.turn_detection != new.turn_detection):
            self._rebuild_vad()
        await self.emit("session.updated", session=render_session(new, self.dialect))

    def _rebuild_vad(self) -> None:
        td = self.cfg.turn_detection
        if td is None:
            self.vad = None
            return
        rate = 24000 if self.cfg.input_format == "pcm" else 8000
        if td["type"] == "server_vad":
            silence = td["silence_duration_ms"]
            threshold, prefix = td["threshold"], td["prefix_padding_ms"]
        else:  # semantic_vad approximated by energy VAD with an eagerness-based silence
            silence = _SEMANTIC_SILENCE_MS[td.get("eagerness", "auto")]
            threshold, prefix = 0.5, 300
        self.vad = EnergyVad(
            sample_rate=rate, threshold=threshold, prefix_padding_ms=prefix,
            silence_duration_ms=silence, min_speech_ms=self.sim.vad_min_speech_ms,
            start_ms=self.audio_ms,
        )
        self._odd_byte = b""

    # -- input audio

    async def on_append(self, ev: dict[str, Any]) -> None:
        audio = ev.get("audio")
        if not isinstance(audio, str):
            await self.invalid(ev, "missing_required_parameter",
                               "Missing required parameter: 'audio'.", "audio")
            return
        try:
            raw = base64.b64decode(audio, validate=True)
        except (binascii.Error, ValueError):
            await self.invalid(ev, "invalid_value",
                               "Invalid 'audio'. Expected base64-encoded audio bytes.", "audio")
            return
        await self._append(raw)

    async def _append(self, raw: bytes) -> None:
        """Add decoded audio to the input buffer and announce what the VAD found in it."""
        await self._announce(self._buffer_audio(raw))

    def _buffer_audio(self, raw: bytes) -> list[VadEvent]:
        """Add decoded audio to the input buffer; returns the VAD boundaries found in it."""
        n = len(raw)
        if n == 0:
            return []
        rec = self.rec
        fmt = self.cfg.input_format
        if self.sim.on_audio_appended is not None:
            self.sim.on_audio_appended(rec.id, rec.audio_in_bytes, n, time.monotonic())
        rec.audio_in_bytes += n
        self.buffer_bytes += n
        self.audio_ms += n / bytes_per_ms(fmt)
        rec.audio_in_ms = self.audio_ms
        if self.vad is None:
            return []
        if fmt == "pcm":
            raw = self._odd_byte + raw
            if len(raw) % 2:
                raw, self._odd_byte = raw[:-1], raw[-1:]
            else:
                self._odd_byte = b""
        return self.vad.feed(decode_input(raw, fmt))

    async def _announce(self, events: list[VadEvent]) -> None:
        for vad_event in events:
            await self._on_vad(vad_event)

    async def _on_vad(self, event: VadEvent) -> None:
        td = self.cfg.turn_detection or {}
        if event.kind == "started":
            self.speech_item_id = _new_id("item")
            self.speech_start_ms = event.ms
            await self.emit("input_audio_buffer.speech_started",
                            audio_start_ms=event.ms, item_id=self.speech_item_id)
            resp = self.response
            if resp is not None and resp.cancel_reason is None and td.get("interrupt_response"):
                self._request_cancel(resp, "turn_detected")
            return
        item_id = self.speech_item_id or _new_id("item")
        self.speech_item_id = None
        await self.emit("input_audio_buffer.speech_stopped", audio_end_ms=event.ms,
                        item_id=item_id)
        await self._commit(item_id, max(0.0, event.ms - self.speech_start_ms))
        if td.get("create_response"):
            if self.response is None:
                self._start_response("vad", {})
            elif self.response.cancel_reason is not None:
                # The interrupted response has not emitted its response.done yet (audio can
                # arrive in bursts); the new turn's response follows right after it.
                self.pending_vad_response = True

    async def on_commit(self, ev: dict[str, Any]) -> None:
        buffered = self.audio_ms - self.buffer_start_ms
        if self.buffer_bytes == 0 or buffered < _MIN_COMMIT_MS:
            await self.invalid(
                ev, "input_audio_buffer_commit_empty",
                "Error committing input audio buffer: buffer too small. Expected at least "
                f"100ms of audio, but buffer only has {buffered:.2f}ms of audio.")
            return
        item_id = self.speech_item_id or _new_id("item")
        self.speech_item_id = None
        if self.vad is not None:
            self.vad.reset()
        await self._commit(item_id, buffered)

    async def on_clear(self, ev: dict[str, Any]) -> None:
        self.buffer_start_ms = self.audio_ms
        self.buffer_bytes = 0
        self.speech_item_id = None
        if self.vad is not None:
            self.vad.reset()
        await self.emit("input_audio_buffer.cleared")

    async def _commit(self, item_id: str, spoken_ms: float) -> None:
        """Commit the buffer as a user audio item, then (if enabled) its transcript."""
        previous = self.order[-1] if self.order else None
        self.buffer_start_ms = self.audio_ms
        self.buffer_bytes = 0
        await self.emit("input_audio_buffer.committed", previous_item_id=previous,
                        item_id=item_id)
        item = _Item(id=item_id, type="message", role="user",
                     content=[{"type": "input_audio", "transcript": None}])
        await self._add_item(item, previous)
        sim = self.sim
        turn = sim.transcript_position if sim.continue_script else self.user_turns
        transcript = sim._next_transcript(turn)
        self.user_turns += 1
        sim.transcript_position = turn + 1
        if transcript is None:
            transcript = f"(caller spoke {spoken_ms / 1000:.1f} s)"
        item.content[0]["transcript"] = transcript
        if self.cfg.transcription is not None:
            await self.emit(
                "conversation.item.input_audio_transcription.completed",
                item_id=item_id, content_index=0, transcript=transcript,
                usage={"type": "duration", "seconds": round(spoken_ms / 1000, 3)},
            )

    async def _add_item(self, item: _Item, previous: str | None) -> None:
        self.items[item.id] = item
        self.order.append(item.id)
        if self.dialect == "ga":
            await self.emit("conversation.item.added", previous_item_id=previous,
                            item=item.render("ga"))
            if item.status != "in_progress":
                await self.emit("conversation.item.done", previous_item_id=previous,
                                item=item.render("ga"))
        else:
            await self.emit("conversation.item.created", previous_item_id=previous,
                            item=item.render("beta"))

    # -- conversation items

    async def on_item_create(self, ev: dict[str, Any]) -> None:
        raw = ev.get("item")
        if not isinstance(raw, dict):
            await self.invalid(ev, "missing_required_parameter",
                               "Missing required parameter: 'item'.", "item")
            return
        kind = raw.get("type")
        item_id = raw.get("id") or _new_id("item")
        if item_id in self.items:
            await self.invalid(ev, "invalid_value",
                               f"Item with id '{item_id}' already exists.", "item.id")
            return
        if kind == "message":
            role = raw.get("role")
            if role not in ("user", "assistant", "system"):
                await self.invalid(ev, "invalid_value", f"Invalid value: '{role}'. Supported "
                                   "values are: 'user', 'assistant', and 'system'.", "item.role")
                return
            content = raw.get("content")
            if not isinstance(content, list) or not content:
                await self.invalid(ev, "missing_required_parameter",
                                   "Missing required parameter: 'item.content'.",
                                   "item.content")
                return
            item = _Item(id=item_id, type="message", role=role,
                         content=[dict(c) for c in content if isinstance(c, dict)])
        elif kind == "function_call_output":
            call_id = raw.get("call_id")
            if not isinstance(call_id, str):
                await self.invalid(ev, "missing_required_parameter",
                                   "Missing required parameter: 'item.call_id'.", "item.call_id")
                return
            if call_id not in self.call_ids:
                await self.invalid(ev, "invalid_value",
                                   f"Tool call ID '{call_id}' not found in conversation.",
                                   "item.call_id")
                return
            output = raw.get("output")
            item = _Item(id=item_id, type="function_call_output", call_id=call_id,
                         output=output if isinstance(output, str) else json.dumps(output))
        elif kind == "function_call":
            call_id = raw.get("call_id") or _new_id("call")
            self.call_ids.add(call_id)
            item = _Item(id=item_id, type="function_call", call_id=call_id,
                         name=raw.get("name"), arguments=raw.get("arguments", ""))
        else:
            await self.invalid(ev, "invalid_value", f"Invalid value: '{kind}'. Supported values "
                               "are: 'message', 'function_call', and 'function_call_output'.",
                               "item.type")
            return
        prev = ev.get("previous_item_id")
        previous = prev if isinstance(prev, str) and prev in self.items else (
            self.order[-1] if self.order else None)
        await self._add_item(item, previous)

    async def on_item_retrieve(self, ev: dict[str, Any]) -> None:
        item = self.items.get(str(ev.get("item_id")))
        if item is None:
            await self.invalid(ev, "item_not_found",
                               f"Item with item_id not found: {ev.get('item_id')}", "item_id")
            return
        await self.emit("conversation.item.retrieved", item=item.render(self.dialect))

    async def on_item_delete(self, ev: dict[str, Any]) -> None:
        item_id = str(ev.get("item_id"))
        if item_id not in self.items:
            await self.invalid(ev, "item_delete_invalid_item_id",
                               f"Item with item_id not found: {item_id}", "item_id")
            return
        del self.items[item_id]
        self.order.remove(item_id)
        await self.emit("conversation.item.deleted", item_id=item_id)

    async def on_truncate(self, ev: dict[str, Any]) -> None:
        item_id = str(ev.get("item_id"))
        content_index = ev.get("content_index", 0)
        end_ms = ev.get("audio_end_ms")
        item = self.items.get(item_id)
        audio_ms = item.audio_ms if item is not None else None

        async def fail(code: str, message: str, param: str) -> None:
            self.sim.truncations.append(TruncationRecord(
                time.monotonic(), self.rec.id, item_id, content_index, end_ms, audio_ms,
                False, code, item.full_audio_ms if item is not None else None))
            await self.invalid(ev, code, message, param)

        if item is None:
            await fail("item_truncate_invalid_item_id",
                       f"Item with item_id not found: {item_id}", "item_id")
            return
        if (item.type != "message" or item.role != "assistant" or item.text_only
                or item.audio_format is None or item.audio_bytes == 0):
            await fail("unsupported_content_type",
                       "Only model output audio messages can be truncated", "item_id")
            return
        if content_index != 0:
            await fail("invalid_value", f"Invalid value: '{content_index}'. The item has no "
                       "audio content at that index.", "content_index")
            return
        if not isinstance(end_ms, int) or isinstance(end_ms, bool) or end_ms < 0:
            await fail("invalid_value", f"Invalid value: '{end_ms}'.", "audio_end_ms")
            return
        if end_ms > item.audio_ms:
            await fail("invalid_value", f"Audio content of {item.audio_ms}ms is already "
                       f"shorter than {end_ms}ms", "audio_end_ms")
            return
        self.sim.truncations.append(TruncationRecord(
            time.monotonic(), self.rec.id, item_id, content_index, end_ms, audio_ms, True,
            None, item.full_audio_ms))
        words = item.full_transcript.split()
        keep = math.floor(len(words) * min(1.0, end_ms / max(item.full_audio_ms, 1.0)))
        item.transcript = " ".join(words[:keep])
        item.audio_bytes = end_ms * bytes_per_ms(item.audio_format)  # type: ignore[arg-type]
        await self.emit("conversation.item.truncated", item_id=item_id,
                        content_index=content_index, audio_end_ms=end_ms)

    # -- responses

    async def on_response_create(self, ev: dict[str, Any]) -> None:
        if self.response is not None:
            await self.invalid(
                ev, "conversation_already_has_active_response",
                f"Conversation already has an active response in progress: {self.response.id}."
                " Wait until the response is finished before creating a new one.")
            return
        params = ev.get("response")
        self._start_response("client", params if isinstance(params, dict) else {})

    async def on_response_cancel(self, ev: dict[str, Any]) -> None:
        resp = self.response
        wanted = ev.get("response_id")
        if resp is None or resp.cancel_reason is not None or (wanted and wanted != resp.id):
            await self.invalid(ev, "response_cancel_not_active",
                               "Cancellation failed: no active response found")
            return
        self._request_cancel(resp, "client_cancelled")

    def _request_cancel(self, resp: _Response, reason: str) -> None:
        resp.cancel_reason = reason
        if resp.pause is not None and not resp.pause.done():
            resp.pause.set_result(None)

    def _start_response(self, trigger: Literal["vad", "client"], params: dict[str, Any]) -> None:
        sim = self.sim
        index = sim.script_position if sim.continue_script else self.responses_started
        spec = sim._spec_at(index)
        self.responses_started += 1
        sim.script_position = index + 1
        outputs, special, latency = _normalise_spec(spec)
        modalities = params.get("output_modalities") or params.get("modalities")
        text_only = (modalities is not None and "audio" not in modalities) or (
            modalities is None and not self.cfg.audio_output)
        record = ResponseRecord(id=_new_id("resp"), trigger=trigger,
                                started_at=time.monotonic(), spec=spec, params=params)
        self.rec.responses.append(record)
        latency_ms = self.sim.first_delta_latency_ms if latency is None else latency
        resp = _Response(record=record, outputs=outputs, special=special,
                         latency_s=latency_ms / 1000, text_only=text_only)
        self.response = resp
        resp.task = self._spawn(self._run_response(resp))

    async def _pause(self, resp: _Response, seconds: float) -> None:
        """Sleep that a cancel can cut short (cheaper than wait_for on an Event)."""
        if seconds <= 0 or resp.cancel_reason is not None:
            return
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        handle = loop.call_later(seconds, _resolve, fut)
        resp.pause = fut
        try:
            await fut
        finally:
            handle.cancel()
            resp.pause = None

    def _render_response(self, resp: _Response, status: str,
                         details: dict[str, Any] | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "object": "realtime.response",
            "id": resp.id,
            "status": status,
            "status_details": details,
            "output": [item.render(self.dialect) for item in resp.items],
            "metadata": resp.record.params.get("metadata"),
            "usage": self._usage(resp) if status != "in_progress" else None,
        }
        fmt = render_session(self.cfg, self.dialect)
        if self.dialect == "ga":
            body["conversation_id"] = "conv_" + self.cfg.id[5:]
            body["output_modalities"] = ["text"] if resp.text_only else ["audio"]
            body["max_output_tokens"] = self.cfg.max_output_tokens
            out = fmt["audio"]["output"]
            body["audio"] = {"output": {"format": out["format"], "voice": out["voice"]}}
        else:
            body["modalities"] = ["text"] if resp.text_only else ["text", "audio"]
            body["voice"] = self.cfg.voice
            body["output_audio_format"] = fmt["output_audio_format"]
            body["temperature"] = self.cfg.temperature
            body["max_output_tokens"] = self.cfg.max_output_tokens
        return body

    def _usage(self, resp: _Response) -> dict[str, Any]:
        def tokens_for(items: Sequence[_Item]) -> tuple[int, int]:
            text = audio = 0
            for it in items:
                if it.audio_format is not None:
                    audio += math.ceil(it.audio_ms / 50)
                words = it.transcript or it.arguments or it.output or ""
                if it.type == "message" and it.role != "assistant":
                    for c in it.content:
                        words += str(c.get("text") or c.get("transcript") or "")
                text += math.ceil(len(words) / 4)
            return text, audio

        out_text, out_audio = tokens_for(resp.items)
        ctx = [self.items[i] for i in self.order if i in self.items]
        in_text, in_audio = tokens_for([it for it in ctx if it not in resp.items])
        in_audio += math.ceil(self.rec.audio_in_ms / 100)
        in_total, out_total = in_text + in_audio, out_text + out_audio
        return {
            "total_tokens": in_total + out_total,
            "input_tokens": in_total,
            "output_tokens": out_total,
            "input_token_details": {
                "text_tokens": in_text, "audio_tokens": in_audio, "cached_tokens": 0,
                "cached_tokens_details": {"text_tokens": 0, "audio_tokens": 0},
            },
            "output_token_details": {"text_tokens": out_text, "audio_tokens": out_audio},
        }

    async def _run_response(self, resp: _Response) -> None:
        try:
            special = resp.special
            if special is not None and "close" in special:
                await self.close(int(special["close"]), str(special.get("reason", "")))
                return
            await self.emit("response.created",
                            response=self._render_response(resp, "in_progress", None))
            await self.emit("rate_limits.updated", rate_limits=[
                {"name": "requests", "limit": 5000, "remaining": 4999, "reset_seconds": 0.012},
                {"name": "tokens", "limit": 40000, "remaining": 38000, "reset_seconds": 3.0},
            ])
            if special is not None:
                await self._fail_response(resp, special.get("error") or {})
                return
            await self._pause(resp, resp.latency_s)
            for index, output in enumerate(resp.outputs):
                if resp.cancel_reason is not None:
                    break
                if output.kind == "clip":
                    await self._stream_clip(resp, index, output)
                else:
                    await self._stream_function_call(resp, index, output)
            await self._finish(resp)
        except ConnectionClosed:
            pass
        finally:
            if self.response is resp:
                self.response = None

    async def _fail_response(self, resp: _Response, error: dict[str, Any]) -> None:
        err = {
            "type": error.get("type", "server_error"),
            "code": error.get("code", "server_error"),
            "message": error.get(
                "message",
                "The server had an error while processing your request. Sorry about that!"),
        }
        await self.send_error(err["type"], err["code"], err["message"],
                              error.get("param"), None)
        self._record_done(resp, "failed", None)
        self.response = None
        await self.emit("response.done", response=self._render_response(
            resp, "failed", {"type": "failed", "error": err}))
        self._after_done()

    async def _begin_item(self, resp: _Response, index: int, item: _Item) -> None:
        previous = self.order[-1] if self.order else None
        resp.items.append(item)
        resp.record.item_ids.append(item.id)
        self.items[item.id] = item
        self.order.append(item.id)
        rendered = item.render(self.dialect)
        await self.emit("response.output_item.added", response_id=resp.id, output_index=index,
                        item=rendered)
        if self.dialect == "ga":
            await self.emit("conversation.item.added", previous_item_id=previous, item=rendered)
        else:
            await self.emit("conversation.item.created", previous_item_id=previous,
                            item=rendered)

    async def _end_item(self, resp: _Response, index: int, item: _Item) -> None:
        item.status = "incomplete" if resp.cancel_reason else "completed"
        rendered = item.render(self.dialect)
        if self.dialect == "ga":
            pos = self.order.index(item.id) if item.id in self.order else 0
            previous = self.order[pos - 1] if pos > 0 else None
            await self.emit("conversation.item.done", previous_item_id=previous, item=rendered)
        await self.emit("response.output_item.done", response_id=resp.id, output_index=index,
                        item=rendered)

    async def _stream_clip(self, resp: _Response, index: int, output: _Output) -> None:
        sim = self.sim
        ga = self.dialect == "ga"
        fmt = self.cfg.output_format
        item = _Item(id=_new_id("item"), type="message", role="assistant", status="in_progress",
                     audio_format=fmt, full_audio_ms=clip_duration_ms(output.clip),
                     full_transcript=output.transcript, text_only=resp.text_only)
        await self._begin_item(resp, index, item)
        ids = {"response_id": resp.id, "item_id": item.id, "output_index": index,
               "content_index": 0}
        if resp.text_only:
            text_delta, text_done = (
                ("response.output_text.delta", "response.output_text.done") if ga
                else ("response.text.delta", "response.text.done"))
            await self.emit("response.content_part.added", **ids,
                            part={"type": "text", "text": ""})
            for word in output.transcript.split(" "):
                if resp.cancel_reason is not None:
                    break
                delta = word if not item.transcript else " " + word
                item.transcript += delta
                await self.emit(text_delta, **ids, delta=delta)
            await self.emit(text_done, **ids, text=item.transcript)
            await self.emit("response.content_part.done", **ids,
                            part={"type": "text", "text": item.transcript})
            await self._end_item(resp, index, item)
            return

        audio_delta, audio_done, tr_delta, tr_done = (
            ("response.output_audio.delta", "response.output_audio.done",
             "response.output_audio_transcript.delta", "response.output_audio_transcript.done")
            if ga else
            ("response.audio.delta", "response.audio.done",
             "response.audio_transcript.delta", "response.audio_transcript.done"))
        await self.emit("response.content_part.added", **ids,
                        part={"type": "audio", "transcript": ""})
        audio = encode_clip(output.clip, fmt)
        self.voice_locked = True
        chunk = max(1, int(sim.chunk_ms * bytes_per_ms(fmt)))
        words = output.transcript.split(" ") if output.transcript else []
        words_sent = 0
        interval = sim.chunk_interval_ms / 1000
        loop = asyncio.get_running_loop()
        next_t = loop.time()
        for pos in range(0, len(audio), chunk):
            if resp.cancel_reason is not None:
                break
            # The transcript runs one chunk ahead of the audio, as the real service's does.
            due = math.ceil(len(words) * min(1.0, (pos + 2 * chunk) / len(audio)))
            if due > words_sent:
                text = " ".join(words[words_sent:due])
                delta = text if words_sent == 0 else " " + text
                words_sent = due
                item.transcript += delta
                await self.emit(tr_delta, **ids, delta=delta)
            piece = audio[pos:pos + chunk]
            await self.emit(audio_delta, **ids, delta=base64.b64encode(piece).decode("ascii"))
            t = time.monotonic()
            self.rec.audio_deltas.append(AudioDeltaRecord(t, resp.id, item.id, pos, len(piece)))
            item.audio_bytes = pos + len(piece)
            if sim.on_audio_delta is not None:
                sim.on_audio_delta(self.rec.id, resp.id, item.id, pos, len(piece), t)
            next_t += interval
            await self._pause(resp, next_t - loop.time())
        await self.emit(audio_done, **ids)
        await self.emit(tr_done, **ids, transcript=item.transcript)
        await self.emit("response.content_part.done", **ids,
                        part={"type": "audio", "transcript": item.transcript})
        await self._end_item(resp, index, item)

    async def _stream_function_call(self, resp: _Response, index: int, output: _Output) -> None:
        call_id = _new_id("call")
        self.call_ids.add(call_id)
        item = _Item(id=_new_id("item"), type="function_call", status="in_progress",
                     call_id=call_id, name=output.name, arguments="")
        await self._begin_item(resp, index, item)
        args = output.arguments
        step = max(1, math.ceil(len(args) / 3))
        ids = {"response_id": resp.id, "item_id": item.id, "output_index": index,
               "call_id": call_id}
        for pos in range(0, len(args), step):
            if resp.cancel_reason is not None:
                break
            piece = args[pos:pos + step]
            item.arguments = (item.arguments or "") + piece
            await self.emit("response.function_call_arguments.delta", **ids, delta=piece)
            await self._pause(resp, self.sim.chunk_interval_ms / 1000)
        await self.emit("response.function_call_arguments.done", **ids, name=output.name,
                        arguments=item.arguments)
        await self._end_item(resp, index, item)

    def _record_done(self, resp: _Response, status: str, reason: str | None) -> None:
        resp.record.status = status
        resp.record.reason = reason
        resp.record.done_at = time.monotonic()
        self.responses_done += 1

    async def _finish(self, resp: _Response) -> None:
        if resp.cancel_reason is not None:
            status, details = "cancelled", {"type": "cancelled", "reason": resp.cancel_reason}
        else:
            status, details = "completed", None
        self._record_done(resp, status, resp.cancel_reason)
        # Inactive from here on: a response.create racing this response.done succeeds.
        self.response = None
        await self.emit("response.done", response=self._render_response(resp, status, details))
        self._after_done()
        if self.pending_vad_response and not self.closing:
            self.pending_vad_response = False
            self._start_response("vad", {})

    def _after_done(self) -> None:
        plan = self.sim.faults
        limit = plan.close_after_responses
        if limit is not None and self.responses_done >= limit and plan.applies_to(self.rec.id):
            self._close_soon(plan.close_code, plan.close_reason)


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


# ---------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> None:
    """``python -m bridge.devtools.sim.realtime_server --port 8765`` for manual poking."""
    parser = argparse.ArgumentParser(description="OpenAI Realtime API simulator (127.0.0.1)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--script", default="agent_greeting,agent_reply,agent_goodbye",
                        help="comma-separated clip names, one per response")
    parser.add_argument("--api-key-env", default=None,
                        help="name of an environment variable holding the key to require")
    parser.add_argument("--reject-beta", action="store_true")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    faults = parser.add_argument_group("faults (see bridge.devtools.sim.realtime_faults)")
    faults.add_argument("--close-after-ms", type=float, default=None)
    faults.add_argument("--close-after-responses", type=int, default=None)
    faults.add_argument("--close-code", type=int, default=1011)
    faults.add_argument("--close-reason", default="simulated failure")
    faults.add_argument("--max-session-ms", type=float, default=None,
                        help="session cap: error session_expired, then close 1001")
    faults.add_argument("--refuse", default=None, metavar="N[:KIND]",
                        help="refuse the next N handshakes; KIND: server_error, unavailable, "
                             "rate_limit, quota, bad_key")
    faults.add_argument("--error-at", action="append", default=None, metavar="MS:TYPE[:CODE]",
                        help="send an error event MS after connect (repeatable)")
    faults.add_argument("--fault-connections", default=None, metavar="1,2",
                        help="apply close/expiry/error faults only to these connections")
    args = parser.parse_args(argv)
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    script: list[ReplySpec] = [s for s in args.script.split(",") if s]
    plan = parse_fault_args(
        close_after_ms=args.close_after_ms, close_after_responses=args.close_after_responses,
        close_code=args.close_code, close_reason=args.close_reason,
        max_session_ms=args.max_session_ms, refuse=args.refuse, error_at=args.error_at,
        connections=args.fault_connections,
    )

    async def serve_forever() -> None:
        sim = RealtimeSimulator(script, api_key=key, reject_beta=args.reject_beta,
                                first_delta_latency_ms=args.latency_ms, faults=plan)
        await sim.start(args.host, args.port)
        print(f"Realtime simulator listening on {sim.url} (Azure form: {sim.azure_url})")
        try:
            await asyncio.Event().wait()
        finally:
            await sim.stop()

    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever())


if __name__ == "__main__":
    main()
