"""STT through a Realtime transcription-only session (``intent=transcription``).

Why this is the preferred STT: the server's VAD runs on the audio as it streams,
so speech start arrives within ~100 ms of the caller starting to talk (the
barge-in trigger) and the final transcript moments after the stop, without
uploading the utterance afterwards.  GA session shape: ``session.type =
"transcription"``, format, transcription model and turn detection under
``session.audio.input``; events ``input_audio_buffer.speech_started/_stopped``,
``conversation.item.input_audio_transcription.delta/.completed/.failed``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.call.backend import BackendUnavailable
from bridge.cascade.settings import SttSettings
from bridge.cascade.stt import SttListener

__all__ = ["RealtimeStt"]

log = logging.getLogger("bridge.cascade")

_QUEUE_HIGH_WATER = 64


def transcription_url(base: str) -> str:
    """``base`` with ``intent=transcription`` added to its query."""
    parts = urlsplit(base)
    query = parts.query + ("&" if parts.query else "") + urlencode({"intent": "transcription"})
    return urlunsplit(parts._replace(query=query))


def classify_status(status: int) -> str:
    """How the core should retry after an HTTP status on the upgrade."""
    if status in (400, 401, 403, 404):
        return "never"
    return "backoff"


class RealtimeStt:
    """One transcription session for one call (see module docstring)."""

    def __init__(self, settings: SttSettings, listener: SttListener) -> None:
        self.settings = settings
        self.listener = listener
        self._ws: ClientConnection | None = None
        self._outbox: asyncio.Queue[str | None] = asyncio.Queue()
        self._drained = asyncio.Event()
        self._drained.set()
        self._tasks: list[asyncio.Task[None]] = []
        self._speech_start_ms: dict[str, int] = {}
        self._closing = False

    async def open(self) -> None:
        key = self.settings.api_key.reveal() if self.settings.api_key else ""
        url = transcription_url(self.settings.realtime_url)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        try:
            self._ws = await connect(url, additional_headers=headers,
                                     open_timeout=self.settings.open_timeout_s,
                                     close_timeout=1.0, compression=None, max_queue=64,
                                     user_agent_header="twilio-realtime-bridge", proxy=None)
        except InvalidStatus as exc:
            status = exc.response.status_code
            raise BackendUnavailable(
                f"transcription session at {url} refused: HTTP {status}",
                retry=classify_status(status),  # type: ignore[arg-type]
            ) from None
        except (OSError, TimeoutError) as exc:
            text = str(exc).replace(key, "***") if key else str(exc)
            raise BackendUnavailable(f"cannot reach the transcription session at {url}: "
                                     f"{text}", retry="backoff") from None
        self._tasks = [asyncio.create_task(self._read()), asyncio.create_task(self._write())]

    def configure(self) -> None:
        s = self.settings
        transcription: dict[str, Any] = {"model": s.model}
        if s.language:
            transcription["language"] = s.language
        self._send({"type": "session.update", "session": {
            "type": "transcription",
            "audio": {"input": {
                "format": {"type": "audio/pcmu"},
                "transcription": transcription,
                "turn_detection": {"type": "server_vad", "threshold": s.vad_threshold,
                                   "prefix_padding_ms": s.prefix_padding_ms,
                                   "silence_duration_ms": s.silence_duration_ms},
            }},
        }})

    def append(self, payload: str) -> bool:
        return self._send({"type": "input_audio_buffer.append", "audio": payload})

    async def drain(self) -> None:
        await self._drained.wait()

    async def close(self) -> None:
        self._closing = True
        for task in self._tasks:
            task.cancel()
        if self._ws is not None:
            with contextlib.suppress(Exception):
                await self._ws.close()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task

    # -- internals

    def _send(self, event: dict[str, Any]) -> bool:
        if self._closing:
            return True
        self._outbox.put_nowait(json.dumps(event))
        if self._outbox.qsize() >= _QUEUE_HIGH_WATER:
            self._drained.clear()
            return False
        return True

    async def _write(self) -> None:
        assert self._ws is not None
        try:
            while True:
                text = await self._outbox.get()
                if text is None:
                    return
                await self._ws.send(text)
                if self._outbox.qsize() < _QUEUE_HIGH_WATER // 2:
                    self._drained.set()
        except ConnectionClosed:
            self._drained.set()  # the reader reports the close

    async def _read(self) -> None:
        assert self._ws is not None
        try:
            async for raw in self._ws:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                if isinstance(event, dict):
                    self._dispatch(event)
        except ConnectionClosed:
            pass
        if not self._closing:
            rcvd = self._ws.close_code
            self._drained.set()
            self.listener.stt_failed(
                f"transcription session closed ({rcvd} {self._ws.close_reason or ''})".strip(),
                code=rcvd, fatal=True)

    def _dispatch(self, event: dict[str, Any]) -> None:
        kind = event.get("type")
        item_id = str(event.get("item_id") or "")
        if kind in ("session.updated", "transcription_session.updated"):
            self.listener.stt_configured()
        elif kind == "input_audio_buffer.speech_started":
            start = int(event.get("audio_start_ms") or 0)
            self._speech_start_ms[item_id] = start
            self.listener.stt_speech_started(item_id, start)
        elif kind == "input_audio_buffer.speech_stopped":
            end = int(event.get("audio_end_ms") or 0)
            start = self._speech_start_ms.pop(item_id, end)
            self.listener.stt_speech_stopped(item_id, end, max(0, end - start) / 1000)
        elif kind == "conversation.item.input_audio_transcription.completed":
            self.listener.stt_transcript(item_id, str(event.get("transcript") or "").strip())
        elif kind == "conversation.item.input_audio_transcription.failed":
            error = event.get("error") or {}
            log.warning("transcription failed for %s: %s", item_id, error.get("message"))
            self.listener.stt_transcript(item_id, "")
        elif kind == "error":
            error = event.get("error") or {}
            self.listener.stt_failed(f"transcription session error {error.get('code')}: "
                                     f"{error.get('message')}", fatal=False)
