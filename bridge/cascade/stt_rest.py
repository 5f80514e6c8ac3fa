"""STT per utterance: a local endpointer, then ``audio.transcriptions`` (e.g. whisper-1).

The simpler alternative to the transcription session: any Whisper-compatible
server works, but the utterance is uploaded only after it ended, so upload plus
transcription time is added to every turn.  Utterances are sent as 16-bit PCM WAV
at 8 kHz (the phone's own rate: upsampling would add bytes, not information).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import io
import itertools
import logging
import wave

from openai import APIError, AsyncOpenAI, omit

from bridge.audio.mulaw import ulaw_to_pcm16
from bridge.cascade.endpointing import Endpointer
from bridge.cascade.settings import SttSettings
from bridge.cascade.stt import SttListener

__all__ = ["RestStt", "wav_bytes"]

log = logging.getLogger("bridge.cascade")
_ids = itertools.count(1)


def wav_bytes(ulaw: bytes) -> bytes:
    """Mu-law 8 kHz as a PCM16 mono WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(ulaw_to_pcm16(ulaw))
    return out.getvalue()


class RestStt:
    def __init__(self, settings: SttSettings, listener: SttListener) -> None:
        self.settings = settings
        self.listener = listener
        key = settings.api_key.reveal() if settings.api_key else "unused"
        self._client = AsyncOpenAI(api_key=key, base_url=settings.base_url, max_retries=1,
                                   timeout=settings.request_timeout_s)
        self._endpointer = Endpointer(threshold=settings.vad_threshold,
                                      silence_duration_ms=settings.silence_duration_ms,
                                      prefix_padding_ms=settings.prefix_padding_ms)
        self._item: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def open(self) -> None:
        """Nothing to open: requests are made per utterance."""

    def configure(self) -> None:
        self.listener.stt_configured()

    def append(self, payload: str) -> bool:
        try:
            ulaw = base64.b64decode(payload, validate=True)
        except (binascii.Error, ValueError):
            return True
        for ep in self._endpointer.feed(ulaw):
            if ep.kind == "started":
                self._item = f"item_stt{next(_ids):05d}"
                self.listener.stt_speech_started(self._item, ep.ms)
            else:
                item = self._item or f"item_stt{next(_ids):05d}"
                self._item = None
                seconds = len(ep.audio) / 8000
                self.listener.stt_speech_stopped(item, ep.ms, seconds)
                task = asyncio.create_task(self._transcribe(item, ep.audio))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        return True

    async def drain(self) -> None:
        return None

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._client.close()

    async def _transcribe(self, item_id: str, ulaw: bytes) -> None:
        try:
            result = await self._client.audio.transcriptions.create(
                model=self.settings.model, file=("utterance.wav", wav_bytes(ulaw), "audio/wav"),
                language=self.settings.language or omit)
        except APIError as exc:
            self.listener.stt_failed(f"transcription request failed: {type(exc).__name__}",
                                     fatal=False)
            self.listener.stt_transcript(item_id, "")
            return
        self.listener.stt_transcript(item_id, (result.text or "").strip())
