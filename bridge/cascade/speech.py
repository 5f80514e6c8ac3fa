"""One TTS request per piece of text, streamed into a queue as it arrives.

Why a queue per piece: the pieces of a reply are synthesised concurrently (piece 2
is requested while piece 1 still streams, so there is no gap between them), but
must be played in order; each piece's queue is drained in turn by the player.
"""

from __future__ import annotations

import asyncio
import contextlib

from openai import AsyncOpenAI, omit

from bridge.cascade.settings import TtsSettings

__all__ = ["SpeechPiece"]

#: The queue's end marker; an exception in the queue means the request failed.
END = None


class SpeechPiece:
    """Audio of ``text`` (PCM16LE 24 kHz) arriving in ``chunks``."""

    def __init__(self, client: AsyncOpenAI, settings: TtsSettings, voice: str,
                 text: str) -> None:
        self.text = text
        self.chunks: asyncio.Queue[bytes | BaseException | None] = asyncio.Queue()
        self._task = asyncio.create_task(self._run(client, settings, voice))

    async def _run(self, client: AsyncOpenAI, settings: TtsSettings, voice: str) -> None:
        try:
            async with client.audio.speech.with_streaming_response.create(
                model=settings.model, voice=voice, input=self.text, response_format="pcm",
                instructions=settings.instructions or omit,
                speed=settings.speed if settings.speed is not None else omit,
            ) as response:
                async for chunk in response.iter_bytes():
                    if chunk:
                        self.chunks.put_nowait(chunk)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any transport or API failure ends this piece
            self.chunks.put_nowait(exc)
            return
        self.chunks.put_nowait(END)

    async def cancel(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
