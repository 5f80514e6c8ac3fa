"""What the cascade needs from a speech-to-text stage, whichever one it is.

Two implementations: a Realtime transcription-only session (``stt_realtime``) and
per-utterance REST transcription behind a local endpointer (``stt_rest``).  Both
report through the same listener, on the event loop, so the connection's turn
logic does not know which one is running.
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["SttClient", "SttListener"]


class SttListener(Protocol):
    def stt_configured(self) -> None:
        """The STT accepted its configuration (audio format, model, VAD)."""

    def stt_speech_started(self, item_id: str, audio_start_ms: int) -> None: ...

    def stt_speech_stopped(self, item_id: str, audio_end_ms: int, audio_seconds: float) -> None:
        """End of the caller's speech; ``audio_seconds`` is the utterance's length,
        the audio the STT will bill for."""

    def stt_transcript(self, item_id: str, text: str) -> None:
        """The final transcript of the utterance ``item_id``."""

    def stt_failed(self, detail: str, code: int | None = None, fatal: bool = True) -> None:
        """The stage broke; ``fatal`` means it is gone (the connection must end)."""


class SttClient(Protocol):
    async def open(self) -> None:
        """Connect; raise :class:`~bridge.call.backend.BackendUnavailable`."""

    def configure(self) -> None:
        """(Re)send the configuration; ``stt_configured`` follows."""

    def append(self, payload: str) -> bool:
        """Caller audio, base64 mu-law 8 kHz; False asks the caller to ``drain()``."""

    async def drain(self) -> None: ...

    async def close(self) -> None: ...
