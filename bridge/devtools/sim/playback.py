"""Twilio's outbound playback, emulated without sockets or clocks.

On a bidirectional Media Stream the server sends `media` (base64 mu-law 8 kHz, any size),
`mark` and `clear` messages. Twilio buffers the media and plays it "in the order received",
echoes a mark "when the audio ends (or if there is no audio buffered)", and on `clear`
"empties all buffered audio and causes any mark messages to be sent back" (PROTOCOLS.md A3).
Barge-in accounting in the bridge depends entirely on *when* those echoes come back and on
how much audio was really played before a clear, so the simulated caller needs a model of
that buffer whose byte positions are exact. Keeping it sans-I/O (the caller passes `now_ms`
and calls `tick()` every 20 ms) makes it testable on its own and cheap enough to run
hundreds of copies in one process.

Positions are offsets into the *outbound stream*: the concatenation of every media payload
accepted, in arrival order, counting bytes later discarded by a clear. A mark sits at the
stream position reached when it arrived. Tests elsewhere combine these positions with the
`ClearRecord.played_position` to work out how much of an assistant item the caller heard.

Model (one 160-byte frame per 20 ms tick):
- At each tick the frame that started at the previous tick has *finished* sounding; marks
  at or before that point are echoed now. Then the next frame starts: up to 160 queued
  bytes, padded with silence (0xFF) when fewer are queued.
- A mark that arrives when all earlier audio has finished sounding is echoed at once.
- `clear` discards the queue (not the frame already sounding: 20 ms already on its way to the
  handset) and returns every pending mark, in order, for immediate echo.
- More than 10 minutes buffered (Twilio warning 31931): further media is discarded, and the
  warning is reported once.
"""

from __future__ import annotations

from array import array
from collections import deque
from dataclasses import dataclass, field

FRAME_BYTES = 160
"""One 20 ms frame of mu-law at 8 kHz."""
FRAME_MS = 20
BYTES_PER_MS = 8
SILENCE_BYTE = 0xFF
"""mu-law encodes zero amplitude as 0xFF (and 0x7F); 0xFF is what telephony pads with."""
SILENCE_FRAME = bytes([SILENCE_BYTE]) * FRAME_BYTES
MAX_BUFFERED_BYTES = 10 * 60 * 8000
"""Twilio warning 31931: "more than 10 minutes of audio is buffered"; later media is dropped."""

_COMPACT_AT = 64 * 1024


@dataclass(slots=True)
class MediaRecord:
    """One outbound `media` message as accepted into the playback queue."""

    at_ms: float
    position: int
    """Stream offset of the payload's first byte."""
    size: int


@dataclass(slots=True)
class MarkRecord:
    """One outbound `mark`: where it sits in the stream and when it came back."""

    name: str
    position: int
    """Stream offset reached when the mark arrived (the audio before it ends here)."""
    queued_ms: float
    echoed_ms: float | None = None
    cleared: bool = False
    """True when the echo was caused by `clear`: the audio before it was *not* all played."""


@dataclass(slots=True)
class ClearRecord:
    """One `clear`: when, how far playback had got, and what it threw away."""

    at_ms: float
    played_position: int
    """Stream offset up to which audio had started playing; everything after was discarded."""
    discarded_bytes: int
    marks_flushed: tuple[str, ...] = ()


@dataclass(slots=True)
class Playback:
    """Twilio's playout buffer for one stream; advance with `tick()` every 20 ms.

    `record_heard=False` keeps only positions and counters, which is what a load benchmark
    wants: the heard audio is 8 KB per second per call.
    """

    record_heard: bool = True
    received_bytes: int = 0
    """Stream length: bytes of media accepted so far (== next media's position)."""
    cursor: int = 0
    """Stream offset of the next byte to play. Bytes before it were played or discarded."""
    finished: int = 0
    """Stream offset up to which playback has *completed* (frame before the current one)."""
    ticks: int = 0
    audio_bytes_played: int = 0
    """Real audio (not padding) handed to the handset, excluding anything discarded."""
    discarded_bytes: int = 0
    overflow_bytes: int = 0
    """Media dropped because more than 10 minutes were buffered (warning 31931)."""
    heard: bytearray = field(default_factory=bytearray)
    """What the handset played, one 160-byte frame per tick, silence included."""
    cursor_by_tick: array = field(default_factory=lambda: array("q"))
    """`cursor` after each tick, so a call time can be mapped to a stream position."""
    clears: list[ClearRecord] = field(default_factory=list)
    _queue: bytearray = field(default_factory=bytearray)
    _qstart: int = 0
    _pending: deque[MarkRecord] = field(default_factory=deque)

    @property
    def buffered_bytes(self) -> int:
        """Audio queued and not yet started (what a clear would discard)."""
        return len(self._queue) - self._qstart

    @property
    def pending_marks(self) -> tuple[MarkRecord, ...]:
        return tuple(self._pending)

    def push_media(self, audio: bytes, now_ms: float) -> MediaRecord | None:
        """Queue decoded audio; returns None when dropped for overflow (warning 31931)."""
        if self.buffered_bytes + len(audio) > MAX_BUFFERED_BYTES:
            self.overflow_bytes += len(audio)
            return None
        rec = MediaRecord(now_ms, self.received_bytes, len(audio))
        self._queue += audio
        self.received_bytes += len(audio)
        return rec

    def push_mark(self, name: str, now_ms: float) -> MarkRecord:
        """Queue a mark behind the audio received so far.

        Echo it at once (`echoed_ms` set) when everything before it has finished sounding,
        which is Twilio's "or if there is no audio buffered" case.
        """
        rec = MarkRecord(name, self.received_bytes, now_ms)
        if not self._pending and self.received_bytes <= self.finished:
            rec.echoed_ms = now_ms
        else:
            self._pending.append(rec)
        return rec

    def clear(self, now_ms: float) -> tuple[ClearRecord, list[MarkRecord]]:
        """Drop queued audio and return every pending mark (in order) for immediate echo."""
        discarded = self.buffered_bytes
        played_position = self.cursor
        nothing_sounding = self.finished == self.cursor
        self._queue.clear()
        self._qstart = 0
        self.cursor = self.received_bytes
        if nothing_sounding:
            self.finished = self.cursor
        self.discarded_bytes += discarded
        flushed = list(self._pending)
        self._pending.clear()
        for m in flushed:
            m.echoed_ms = now_ms
            m.cleared = True
        rec = ClearRecord(now_ms, played_position, discarded, tuple(m.name for m in flushed))
        self.clears.append(rec)
        return rec, flushed

    def tick(self, now_ms: float) -> list[MarkRecord]:
        """Advance one 20 ms frame; returns the marks whose audio has now finished."""
        self.finished = self.cursor
        echoed: list[MarkRecord] = []
        pending = self._pending
        while pending and pending[0].position <= self.finished:
            m = pending.popleft()
            m.echoed_ms = max(now_ms, m.queued_ms)  # a late tick can't echo before arrival
            echoed.append(m)
        n = min(FRAME_BYTES, len(self._queue) - self._qstart)
        if n:
            start = self._qstart
            if self.record_heard:
                self.heard += self._queue[start : start + n]
                if n < FRAME_BYTES:
                    self.heard += SILENCE_FRAME[n:]
            self._qstart = start + n
            self.cursor += n
            self.audio_bytes_played += n
            if self._qstart >= _COMPACT_AT:
                del self._queue[: self._qstart]
                self._qstart = 0
        elif self.record_heard:
            self.heard += SILENCE_FRAME
        if self.record_heard:
            self.cursor_by_tick.append(self.cursor)
        self.ticks += 1
        return echoed

    def played_ranges(self) -> list[tuple[int, int]]:
        """Stream ranges `[start, end)` that were (or are being) played, in order.

        Playback is contiguous except where a clear skipped the discarded bytes.
        """
        ranges: list[tuple[int, int]] = []
        start = 0
        for c in self.clears:
            if c.played_position > start:
                ranges.append((start, c.played_position))
            start = c.played_position + c.discarded_bytes
        if self.cursor > start:
            ranges.append((start, self.cursor))
        return ranges

    def played_bytes_in(self, start: int, end: int) -> int:
        """How many bytes of stream range `[start, end)` reached the handset."""
        total = 0
        for a, b in self.played_ranges():
            lo, hi = max(a, start), min(b, end)
            if hi > lo:
                total += hi - lo
        return total
