"""One call's recording, streamed to disk while the call runs.

The call's :class:`~bridge.recordings.playout.PlayoutRecorder` is fed on the event loop
(it is pure and cheap); every ``flush_every_ms`` of call time the stretch that can no
longer change is taken out of it and appended to the file by a worker thread.  Memory
per call is therefore about ``flush_every_ms + slack_ms`` of audio plus the agent audio
queued ahead of playback, instead of the whole call (an hour is ~58 MB of μ-law in two
channels, ~115 MB as the WAV).  Writes are chained, one at a time per call and in
order; stretches taken while a write is in flight wait in ``_pending`` (bounded by how
far the disk lags, never by the call's length unless the disk stops).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from pathlib import Path

from bridge.recordings.files import RecordingFile
from bridge.recordings.playout import SAMPLES_PER_MS, PlayoutRecorder

__all__ = ["FLUSH_EVERY_MS", "LATE_SLACK_MS", "LiveRecording"]

log = logging.getLogger("bridge.recordings")

#: Call time between appends to the file: what a crash can lose at most (plus the slack).
FLUSH_EVERY_MS = 1000
#: How late caller audio may arrive and still be placed (jitter of the leg's clock).
LATE_SLACK_MS = 1000


class LiveRecording:
    """Feeds a :class:`PlayoutRecorder` and appends what is final to the call's WAV."""

    def __init__(
        self,
        *,
        flush_every_ms: int = FLUSH_EVERY_MS,
        slack_ms: int = LATE_SLACK_MS,
        on_first_write: Callable[[Path], None] | None = None,
    ) -> None:
        self.recorder = PlayoutRecorder()
        self.flush_every_ms = flush_every_ms
        self.slack_ms = slack_ms
        self.on_first_write = on_first_write
        self.path: Path | None = None
        self.written_samples = 0
        self._file: RecordingFile | None = None
        self._latest_ms = 0.0
        self._pending: deque[tuple[bytes, bytes]] = deque()
        self._writer: asyncio.Task[None] | None = None
        self._failed = False
        self._announced = False

    # ----------------------------------------------------------------- feed

    def open(self, path: Path) -> None:
        """The call is known: its recording goes to ``path`` (opened on the first write)."""
        self.path = path

    def caller_audio(self, at_ms: float, ulaw: bytes) -> None:
        self.recorder.caller_audio(at_ms, ulaw)
        self._advance(at_ms)

    def play(self, at_ms: float, ulaw: bytes) -> None:
        self.recorder.play(at_ms, ulaw)
        self._advance(at_ms)

    def clear(self, at_ms: float) -> None:
        self.recorder.clear(at_ms)
        self._advance(at_ms)

    def _advance(self, at_ms: float) -> None:
        if at_ms > self._latest_ms:
            self._latest_ms = at_ms
        if self.path is None or self._failed:
            return
        horizon = self._latest_ms - self.slack_ms
        if horizon - self.recorder.base / SAMPLES_PER_MS >= self.flush_every_ms:
            self._submit(self.recorder.take(horizon))

    @property
    def pending_writes(self) -> int:
        """Stretches taken but not yet on disk (more than one means the disk lags)."""
        return len(self._pending)

    @property
    def buffered_bytes(self) -> int:
        """Audio held in memory for this call (for the bounded-memory test and metrics)."""
        rec = self.recorder
        played = sum(len(seg.audio) for seg in rec._played)
        return len(rec.caller) + played + sum(len(c) + len(h) for c, h in self._pending)

    # ---------------------------------------------------------------- write

    def _submit(self, chunk: tuple[bytes, bytes]) -> None:
        if not chunk[0] and not chunk[1]:
            return
        self._pending.append(chunk)
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._drain(), name="recording-append"
            )

    async def _drain(self) -> None:
        while self._pending and not self._failed:
            caller, heard = self._pending.popleft()
            try:
                await asyncio.to_thread(self._append, caller, heard)
            except OSError as exc:
                self._failed = True
                self._pending.clear()
                log.error("recording %s: cannot write, recording stops: %s",
                          self.path.name if self.path else "?", exc)
                return
            if not self._announced and self.on_first_write is not None and self.path:
                self._announced = True
                self.on_first_write(self.path)

    def _append(self, caller: bytes, heard: bytes) -> None:
        if self._file is None:
            assert self.path is not None
            self._file = RecordingFile(self.path)
        self._file.append(caller, heard)
        self.written_samples += max(len(caller), len(heard))

    async def finish(self) -> Path | None:
        """The call is over: write the rest, close the file; its path, or None if the
        call recorded nothing (or writing failed)."""
        if self.path is not None and not self._failed:
            self._submit(self.recorder.finish())
        if self._writer is not None:
            await self._writer
        if self._file is None:
            return None
        file = self._file
        try:
            if self.written_samples == 0:
                await asyncio.to_thread(file.discard)
                return None
            await asyncio.to_thread(file.close)
        except OSError as exc:
            log.error("recording %s: cannot close: %s", file.path.name, exc)
            return None
        return None if self._failed else file.path
