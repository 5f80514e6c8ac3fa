"""What the caller heard, reconstructed from what the bridge sent: a sans-I/O model.

A recording of "the agent's audio" is easy and wrong: the model produces faster than
real time, the leg buffers it, and a barge-in ``clear`` throws the unplayed rest away.
The honest second channel is the leg's *playout*, and it follows from the playback
contract alone (PROTOCOLS.md A3): audio queued at time ``t`` starts playing at
``max(t, end of the queue)``; a ``clear`` at ``t`` keeps what had played before ``t`` and
drops the rest.  No sockets and no clock: the driver feeds ``(time, value)`` pairs, so
the model is unit-tested with exact numbers and could run over a tape as well.

Both channels are μ-law 8 kHz on one call timeline in samples (8 per ms) from the
stream's start; gaps are μ-law silence (0xFF).  Caller audio is placed at its own
timestamp when the leg gives one (Twilio's ``media.timestamp``: the leg's clock, free of
network jitter), else at its arrival time.

**Streaming.**  A recording is written to disk while the call runs (``bridge.recordings.
live``), so the model hands finished audio out with :meth:`PlayoutRecorder.take` and
forgets it.  What is final: on the playout channel, everything before the latest time
fed (a ``clear`` at ``t`` only cuts audio from ``t`` on, and time only moves forward);
on the caller channel, the same less a little slack for audio that arrives late
(``take`` is called with the horizon minus that slack).  Caller audio that arrives for a
stretch already taken is dropped and counted in ``late_samples``: it would have to
rewrite what is on disk, and it means the leg's clock ran more than the slack behind.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["PlayoutRecorder", "SAMPLES_PER_MS", "SILENCE"]

SAMPLES_PER_MS = 8
SILENCE = 0xFF
#: Longest recording kept (samples): the call cap of the Realtime API, 60 min, plus slack.
MAX_SAMPLES = 62 * 60 * 8000


@dataclass
class _Segment:
    start: int
    audio: bytes

    @property
    def end(self) -> int:
        return self.start + len(self.audio)


@dataclass
class PlayoutRecorder:
    """Caller audio and agent playout of one call, both on the call's timeline."""

    caller: bytearray = field(default_factory=bytearray)
    """Caller samples from ``base`` on (what :meth:`take` has not handed out yet)."""
    _played: list[_Segment] = field(default_factory=list)
    _queue_end: int = 0
    base: int = 0
    """Samples of the call already handed out by :meth:`take` (on disk)."""
    late_samples: int = 0
    clears: list[tuple[int, int]] = field(default_factory=list)
    """(sample where the clear cut, samples of queued audio it dropped)."""

    # ----------------------------------------------------------------- feed

    def caller_audio(self, at_ms: float, ulaw: bytes) -> None:
        """Caller audio that started at ``at_ms`` on the call timeline."""
        start = max(0, round(at_ms * SAMPLES_PER_MS))
        base = self.base
        if start < base:  # late, for audio already taken: keep only the part still open
            skip = min(base - start, len(ulaw))
            self.late_samples += skip
            ulaw = ulaw[skip:]
            start = base
        caller = self.caller
        rel = start - base
        if rel == len(caller) and start + len(ulaw) <= MAX_SAMPLES:
            caller += ulaw  # the usual case: the next frame, right after the last
            return
        end = min(start + len(ulaw), MAX_SAMPLES)
        if end <= start:
            return
        if len(caller) < rel:
            caller.extend(bytes([SILENCE]) * (rel - len(caller)))
        caller[rel : end - base] = ulaw[: end - start]

    def play(self, at_ms: float, ulaw: bytes) -> None:
        """Agent audio handed to the leg at ``at_ms``: it plays once the queue before it has."""
        if not ulaw:
            return
        now = max(0, round(at_ms * SAMPLES_PER_MS))
        start = max(now, self._queue_end)
        if start >= MAX_SAMPLES:
            return
        audio = ulaw[: MAX_SAMPLES - start]
        self._played.append(_Segment(start, audio))
        self._queue_end = start + len(audio)

    def clear(self, at_ms: float) -> None:
        """The leg was told to drop its queue at ``at_ms``: only what played before stays."""
        cut = max(0, round(at_ms * SAMPLES_PER_MS))
        dropped = 0
        kept: list[_Segment] = []
        for seg in self._played:
            if seg.end <= cut:
                kept.append(seg)
            elif seg.start < cut:
                dropped += seg.end - cut
                kept.append(_Segment(seg.start, seg.audio[: cut - seg.start]))
            else:
                dropped += len(seg.audio)
        self._played = kept
        self._queue_end = min(self._queue_end, cut)
        self.clears.append((cut, dropped))

    # --------------------------------------------------------------- render

    @property
    def heard_end(self) -> int:
        return self._played[-1].end if self._played else 0

    def _render(self, end: int) -> bytes:
        """The playout channel from ``base`` to ``end`` as μ-law bytes."""
        base = self.base
        out = bytearray([SILENCE]) * max(0, end - base)
        for seg in self._played:
            if seg.end <= base or seg.start >= end:
                continue
            lo, hi = max(seg.start, base), min(seg.end, end)
            out[lo - base : hi - base] = seg.audio[lo - seg.start : hi - seg.start]
        return bytes(out)

    def heard(self) -> bytes:
        """The playout channel as μ-law bytes from ``base`` (the call's start until
        :meth:`take` has handed some out)."""
        return self._render(self.heard_end)

    def channels(self) -> tuple[bytes, bytes]:
        """(caller, heard) from ``base`` to the end of either, padded to the same length."""
        heard = self.heard()
        n = max(len(self.caller), len(heard))
        silence = bytes([SILENCE])
        return bytes(self.caller).ljust(n, silence), heard.ljust(n, silence)

    def take(self, until_ms: float) -> tuple[bytes, bytes]:
        """Hand out both channels from ``base`` to ``until_ms`` and forget them.

        The caller decides what is final (see the module notes): audio before the latest
        time fed on the playout channel, less a slack for late caller audio."""
        end = min(MAX_SAMPLES, round(until_ms * SAMPLES_PER_MS))
        n = end - self.base
        if n <= 0:
            return b"", b""
        caller = bytes(self.caller[:n]).ljust(n, bytes([SILENCE]))
        del self.caller[:n]
        heard = self._render(end)
        self._played = [seg for seg in self._played if seg.end > end]
        self.base = end
        return caller, heard

    def finish(self) -> tuple[bytes, bytes]:
        """Everything not yet taken (the call is over), and forget it."""
        caller, heard = self.channels()
        self.base += len(caller)
        self.caller.clear()
        self._played.clear()
        return caller, heard
