"""A small energy endpointer for the REST transcription mode (sans-I/O).

REST transcription has no speech events of its own, so the bridge must find where
an utterance starts (for barge-in) and ends (to send it).  The caller's line is a
phone line: RMS energy per 20 ms against a threshold, with hysteresis and a
silence hang-over, is what the Realtime API's ``server_vad`` parameters describe
and is enough for the clean 8 kHz audio Twilio delivers.  The thresholds follow
the same 0..1 scale as ``server_vad.threshold`` (``-70 + 60 * threshold`` dBFS).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

from bridge.audio.mulaw import ulaw_to_pcm16

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["Endpoint", "Endpointer"]

_WINDOW_BYTES = 160  # 20 ms of mu-law at 8 kHz
_WINDOW_MS = 20
_HYSTERESIS_DB = 10.0


@dataclass(frozen=True, slots=True)
class Endpoint:
    kind: Literal["started", "stopped"]
    ms: int
    """Offset on the appended-audio timeline (start includes the prefix padding)."""
    audio: bytes = b""
    """On ``stopped``: the utterance's mu-law audio, prefix padding included."""


class Endpointer:
    """Feed mu-law, get speech starts and stops with the utterance audio."""

    def __init__(self, *, threshold: float = 0.5, silence_duration_ms: int = 500,
                 prefix_padding_ms: int = 300, min_speech_ms: int = 60) -> None:
        on_dbfs = -70.0 + 60.0 * min(1.0, max(0.0, threshold))
        self._on = 32768.0 * 10 ** (on_dbfs / 20)
        self._cont = 32768.0 * 10 ** ((on_dbfs - _HYSTERESIS_DB) / 20)
        self._silence_windows = max(1, math.ceil(silence_duration_ms / _WINDOW_MS))
        self._min_windows = max(1, math.ceil(min_speech_ms / _WINDOW_MS))
        self._prefix_bytes = prefix_padding_ms * 8
        self._pending = b""
        self._recent = bytearray()  # audio before speech, for the prefix padding
        self._utterance = bytearray()
        self._windows = 0
        self._loud_run = 0
        self._quiet_run = 0
        self.in_speech = False

    def feed(self, ulaw: bytes) -> list[Endpoint]:
        data = self._pending + ulaw
        used = len(data) - len(data) % _WINDOW_BYTES
        self._pending = data[used:]
        events: list[Endpoint] = []
        for i in range(0, used, _WINDOW_BYTES):
            window = data[i:i + _WINDOW_BYTES]
            level = audioop.rms(ulaw_to_pcm16(window), 2)
            self._windows += 1
            if self.in_speech:
                self._utterance += window
                self._quiet_run = 0 if level >= self._cont else self._quiet_run + 1
                if self._quiet_run >= self._silence_windows:
                    self.in_speech = False
                    events.append(Endpoint("stopped", self._windows * _WINDOW_MS,
                                           bytes(self._utterance)))
                    self._utterance.clear()
                continue
            self._recent += window
            self._loud_run = self._loud_run + 1 if level >= self._on else 0
            if self._loud_run >= self._min_windows:
                self.in_speech = True
                self._quiet_run = 0
                self._loud_run = 0
                onset_bytes = self._min_windows * _WINDOW_BYTES
                keep = min(len(self._recent), onset_bytes + self._prefix_bytes)
                self._utterance = bytearray(self._recent[-keep:])
                self._recent.clear()
                start = (self._windows - self._min_windows) * _WINDOW_MS
                start -= (keep - onset_bytes) // 8
                events.append(Endpoint("started", max(0, start)))
            else:
                limit = self._prefix_bytes + self._min_windows * _WINDOW_BYTES
                if len(self._recent) > limit:
                    del self._recent[: len(self._recent) - limit]
        return events
