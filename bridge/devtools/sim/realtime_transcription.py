"""A stand-in for the Realtime API's transcription-only session, over a real WebSocket.

The cascade's preferred STT: connect to ``/v1/realtime?intent=transcription``, send a
``session.update`` whose ``session.type`` is ``"transcription"`` (GA shape: format,
transcription model and turn detection under ``session.audio.input``), append
caller audio, and the server's VAD announces ``input_audio_buffer.speech_started`` /
``speech_stopped``, commits the buffer (``input_audio_buffer.committed``) and sends
``conversation.item.input_audio_transcription.delta`` events and one ``.completed``
with the transcript and its usage.  The beta name of the update,
``transcription_session.update`` (answered by ``transcription_session.updated``), is
accepted too.

Kept apart from ``realtime_server`` on purpose: a transcription session has no
responses, no conversation and no output audio, so it shares only the VAD
(``bridge.devtools.sim.vad``) and the clip recogniser (the transcript is what the audio *is*,
see ``clip_recognition``), and changes to the conversation simulator cannot
break it.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hmac
import itertools
import json
import time
import warnings
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from bridge.config import Secret
from bridge.devtools.sim.clip_recognition import recognise, warm_up
from bridge.devtools.sim.vad import EnergyVad

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["TranscriptionSimulator"]

_ids = itertools.count(1)
_FORMATS = {"audio/pcmu": "pcmu", "g711_ulaw": "pcmu", "audio/pcm": "pcm", "pcm16": "pcm"}


def _id(prefix: str) -> str:
    return f"{prefix}_sim{next(_ids):06d}"


@dataclass
class TranscriptionRecord:
    """What one connection did, for assertions."""

    query: dict[str, str]
    received: list[dict[str, Any]] = field(default_factory=list)
    sent: list[dict[str, Any]] = field(default_factory=list)
    appended_bytes: int = 0
    closed: bool = False

    def sent_types(self) -> list[str]:
        return [e["type"] for e in self.sent]


class TranscriptionSimulator:
    """``wss://…/v1/realtime?intent=transcription`` on 127.0.0.1 (see module docstring).

    Args:
        api_key: if set, the handshake needs ``Authorization: Bearer <key>`` (else 401).
        transcription_latency_ms: time from the commit to the ``.completed`` event (the
            first ``.delta`` comes at about half of it).
        vad_min_speech_ms: loud audio needed before ``speech_started``.
    """

    def __init__(self, *, api_key: str | Secret | None = None,
                 transcription_latency_ms: float = 150.0, vad_min_speech_ms: int = 60) -> None:
        if isinstance(api_key, str):
            api_key = Secret(api_key)
        self._api_key = api_key if api_key else None
        self.transcription_latency_ms = transcription_latency_ms
        self.vad_min_speech_ms = vad_min_speech_ms
        self.connections: list[TranscriptionRecord] = []
        self.rejected: list[int] = []
        self._live: set[ServerConnection] = set()
        self._server: Server | None = None
        self._port = 0

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await asyncio.to_thread(warm_up)
        self._server = await serve(self._handle, host, port, compression=None,
                                   process_request=self._process_request,
                                   server_header="realtime-transcription-simulator")
        self._port = next(iter(self._server.sockets)).getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close(close_connections=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> TranscriptionSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def url(self) -> str:
        """The Realtime endpoint (the client adds ``?intent=transcription``)."""
        return f"ws://127.0.0.1:{self._port}/v1/realtime"

    async def drop_all(self, code: int = 1011, reason: str = "simulated failure") -> None:
        """Close every live connection, like a server crash or a network cut."""
        for ws in list(self._live):
            await ws.close(code, reason)

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        parts = urlsplit(request.path)
        if parts.path.rstrip("/") != "/v1/realtime":
            self.rejected.append(404)
            return connection.respond(404, "Not Found\n")
        if self._api_key is not None:
            auth = request.headers.get("Authorization", "")
            token = auth[7:].strip() if auth.startswith("Bearer ") else ""
            if not hmac.compare_digest(token.encode(), self._api_key.reveal().encode()):
                self.rejected.append(401)
                body = json.dumps({"error": {"message": "Incorrect API key provided.",
                                             "type": "invalid_request_error",
                                             "code": "invalid_api_key", "param": None}})
                return connection.respond(401, body + "\n")
        if dict(parse_qsl(parts.query)).get("intent") != "transcription":
            self.rejected.append(400)
            return connection.respond(400, "this stand-in serves intent=transcription only\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        assert ws.request is not None
        record = TranscriptionRecord(dict(parse_qsl(urlsplit(ws.request.path).query)))
        self.connections.append(record)
        self._live.add(ws)
        try:
            await _Session(self, ws, record).run()
        finally:
            self._live.discard(ws)
            record.closed = True


class _Session:
    def __init__(self, sim: TranscriptionSimulator, ws: ServerConnection,
                 record: TranscriptionRecord) -> None:
        self.sim = sim
        self.ws = ws
        self.record = record
        self.id = _id("sess")
        self.format = "pcm"
        self.model = "gpt-4o-transcribe"
        self.turn_detection: dict[str, Any] | None = {
            "type": "server_vad", "threshold": 0.5, "prefix_padding_ms": 300,
            "silence_duration_ms": 500}
        self.vad = self._new_vad(0.0)
        self.item_id: str | None = None
        self.previous_item: str | None = None
        self.utterance = bytearray()
        self.audio_ms = 0.0
        self.tasks: set[asyncio.Task[None]] = set()

    def _new_vad(self, start_ms: float) -> EnergyVad:
        td = self.turn_detection or {}
        return EnergyVad(
            sample_rate=8000 if self.format == "pcmu" else 24000,
            threshold=float(td.get("threshold", 0.5)),
            prefix_padding_ms=int(td.get("prefix_padding_ms", 300)),
            silence_duration_ms=int(td.get("silence_duration_ms", 500)),
            min_speech_ms=self.sim.vad_min_speech_ms, start_ms=start_ms)

    async def emit(self, type_: str, **fields: Any) -> None:
        event = {"type": type_, "event_id": _id("event"), **fields}
        self.record.sent.append(event)
        with contextlib.suppress(ConnectionClosed):
            await self.ws.send(json.dumps(event))

    def render(self, beta: bool) -> dict[str, Any]:
        fmt = {"type": "audio/pcmu"} if self.format == "pcmu" else {"type": "audio/pcm",
                                                                       "rate": 24000}
        if beta:
            return {"id": self.id, "object": "realtime.transcription_session",
                    "input_audio_format": "g711_ulaw" if self.format == "pcmu" else "pcm16",
                    "input_audio_transcription": {"model": self.model},
                    "turn_detection": self.turn_detection}
        return {"type": "transcription", "id": self.id,
                "object": "realtime.transcription_session",
                "expires_at": int(time.time()) + 3600, "include": None,
                "audio": {"input": {"format": fmt, "noise_reduction": None,
                                    "transcription": {"model": self.model},
                                    "turn_detection": self.turn_detection}}}

    async def run(self) -> None:
        await self.emit("session.created", session=self.render(beta=False))
        try:
            async for raw in self.ws:
                try:
                    ev = json.loads(raw)
                except (TypeError, ValueError):
                    await self.error("invalid_json", "The message is not valid JSON.")
                    continue
                if not isinstance(ev, dict):
                    await self.error("invalid_event", "Expected a JSON object.")
                    continue
                kind = ev.get("type")
                self.record.received.append(
                    {k: v for k, v in ev.items() if k != "audio"} | {"type": kind})
                if kind == "session.update":
                    await self.on_update(ev.get("session") or {}, beta=False)
                elif kind == "transcription_session.update":
                    await self.on_update(ev.get("session") or {}, beta=True)
                elif kind == "input_audio_buffer.append":
                    await self.on_append(ev)
                elif kind == "input_audio_buffer.commit":
                    await self.commit(self.audio_ms)
                elif kind == "input_audio_buffer.clear":
                    self.utterance.clear()
                    self.vad.reset()
                    await self.emit("input_audio_buffer.cleared")
                else:
                    await self.error("invalid_event", f"Unsupported event {kind!r} in a "
                                     "transcription session.")
        except ConnectionClosed:
            pass
        finally:
            for task in self.tasks:
                task.cancel()

    async def error(self, code: str, message: str) -> None:
        await self.emit("error", error={"type": "invalid_request_error", "code": code,
                                        "message": message, "param": None})

    async def on_update(self, session: dict[str, Any], beta: bool) -> None:
        if beta:
            fmt = session.get("input_audio_format")
            transcription = session.get("input_audio_transcription")
            td_present = "turn_detection" in session
            td = session.get("turn_detection")
        else:
            if session.get("type") != "transcription":
                await self.error("invalid_value", "session.type must be 'transcription' "
                                 "on an intent=transcription connection.")
                return
            inp = (session.get("audio") or {}).get("input") or {}
            fmt = (inp.get("format") or {}).get("type")
            transcription = inp.get("transcription")
            td_present = "turn_detection" in inp
            td = inp.get("turn_detection")
        if fmt is not None:
            if fmt not in _FORMATS:
                await self.error("invalid_value", f"Unsupported input format {fmt!r}.")
                return
            self.format = _FORMATS[fmt]
        if isinstance(transcription, dict) and transcription.get("model"):
            self.model = str(transcription["model"])
        if td_present:
            self.turn_detection = td
        self.vad = self._new_vad(self.audio_ms)
        name = "transcription_session.updated" if beta else "session.updated"
        await self.emit(name, session=self.render(beta))

    async def on_append(self, ev: dict[str, Any]) -> None:
        try:
            raw = base64.b64decode(str(ev.get("audio", "")), validate=True)
        except (binascii.Error, ValueError):
            await self.error("invalid_value", "audio is not valid base64.")
            return
        self.record.appended_bytes += len(raw)
        if self.format == "pcmu":
            ulaw, pcm = raw, audioop.ulaw2lin(raw, 2)
            self.audio_ms += len(raw) / 8
        else:
            pcm = raw[: len(raw) - len(raw) % 2]
            ulaw = audioop.lin2ulaw(audioop.ratecv(pcm, 2, 1, 24000, 8000, None)[0], 2)
            self.audio_ms += len(pcm) / 48
        self.utterance += ulaw
        # keep a little audio before speech (prefix padding) but not the whole call
        if self.item_id is None and len(self.utterance) > 8 * 1000:
            del self.utterance[: len(self.utterance) - 8 * 1000]
        if self.turn_detection is None:
            return
        for vad_event in self.vad.feed(pcm):
            if vad_event.kind == "started":
                self.item_id = _id("item")
                await self.emit("input_audio_buffer.speech_started",
                                audio_start_ms=vad_event.ms, item_id=self.item_id)
            else:
                await self.emit("input_audio_buffer.speech_stopped",
                                audio_end_ms=vad_event.ms, item_id=self.item_id)
                await self.commit(vad_event.ms)

    async def commit(self, end_ms: float) -> None:
        item_id = self.item_id or _id("item")
        audio = bytes(self.utterance)
        self.utterance.clear()
        self.item_id = None
        await self.emit("input_audio_buffer.committed", previous_item_id=self.previous_item,
                        item_id=item_id)
        self.previous_item = item_id
        task = asyncio.create_task(self.transcribe(item_id, audio))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def transcribe(self, item_id: str, ulaw: bytes) -> None:
        # the latency runs from the commit: recognition time is part of it, not added
        loop = asyncio.get_running_loop()
        due = loop.time() + self.sim.transcription_latency_ms / 1000
        seconds = len(ulaw) / 8000
        found = await asyncio.to_thread(recognise, ulaw)
        text = found.text if found.text is not None else f"(caller spoke {seconds:.1f} s)"
        half = max(0.0, due - loop.time()) / 2
        await asyncio.sleep(half)
        words = text.split(" ")
        cut = max(1, len(words) // 2)
        await self.emit("conversation.item.input_audio_transcription.delta", item_id=item_id,
                        content_index=0, delta=" ".join(words[:cut]))
        await asyncio.sleep(half)
        await self.emit("conversation.item.input_audio_transcription.delta", item_id=item_id,
                        content_index=0, delta=" " + " ".join(words[cut:]))
        tokens = round(seconds * 10)
        await self.emit("conversation.item.input_audio_transcription.completed",
                        item_id=item_id, content_index=0, transcript=text,
                        usage={"type": "tokens", "input_tokens": tokens,
                               "input_token_details": {"audio_tokens": tokens,
                                                       "text_tokens": 0},
                               "output_tokens": len(text) // 4,
                               "total_tokens": tokens + len(text) // 4})
