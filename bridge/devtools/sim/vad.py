"""A small, real, energy-based voice activity detector for the Realtime simulator.

Why energy and not a model: the simulator must behave like ``server_vad`` closely enough
to exercise barge-in timing (speech_started offsets, silence to end a turn), while
running hundreds of sessions on one core. RMS energy per 20 ms window is cheap and
deterministic, and the bundled clips have a clean noise floor (about -76 dBFS) well below
speech (-15 to -40 dBFS).

Cost: a session appends one 20 ms window at a time, so per-append numpy work (a dozen
array operations on 160 samples) cost more than the analysis itself. ``audioop.rms`` gives
the window's RMS in one C call, truncated to an integer; that pins the exact level between
two bounds, which settles every threshold comparison except for the few RMS values right at
a threshold. Only those windows are measured exactly with numpy (as float32, the way every
window used to be), so each decision, and so every event, is what the all-numpy version
gave.

Mapping of ``threshold`` (0.0..1.0, like the real API: higher needs louder audio) to a
level: ``on_dbfs = -70 + 60 * threshold``, so 0.5 -> -40 dBFS, 0.0 -> -70 dBFS,
1.0 -> -10 dBFS. While speech is ongoing a window counts as speech down to
``on_dbfs - 10 dB`` (hysteresis, so soft word endings do not end the turn).

Timeline: all offsets are milliseconds of audio fed so far (plus ``start_ms``), i.e. the
"appended audio" clock of the session, matching ``audio_start_ms``/``audio_end_ms`` of
the real API:

* speech is confirmed after ``min_speech_ms`` of consecutive loud windows; its onset is
  then walked back over the contiguous windows above the hysteresis level (so a soft
  attack counts), and ``audio_start_ms = onset - prefix_padding_ms``, clamped at 0;
* speech stops after ``silence_duration_ms`` of quiet windows;
  ``audio_end_ms`` is the end of that silence (the real API documents that it
  "includes the min_silence_duration_ms").

This module is sans-I/O: it takes samples and returns events.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np

with warnings.catch_warnings():
    # audioop is deprecated on 3.11/3.12 but is the project's chosen G.711 codec.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["EnergyVad", "VadEvent", "threshold_to_dbfs"]

WINDOW_MS = 20
_HYSTERESIS_DB = 10.0
_FULL_SCALE_SQ = 32768.0 * 32768.0
# How far back the onset may be walked from the first confirmed-loud window.
_MAX_BACKTRACK_MS = 200
_SAMPLE_BYTES = 2
_BOUND_MARGIN = 1e-3
"""Relative slack around a threshold within which a window is measured exactly: far more
than the float32 rounding of the exact measurement (about 1e-6 for 480 samples)."""


def threshold_to_dbfs(threshold: float) -> float:
    """Map the API's 0..1 ``threshold`` to an RMS level in dBFS (see module docstring)."""
    t = min(1.0, max(0.0, float(threshold)))
    return -70.0 + 60.0 * t


@dataclass(frozen=True, slots=True)
class VadEvent:
    """A detected speech boundary on the appended-audio timeline."""

    kind: Literal["started", "stopped"]
    ms: int
    """``audio_start_ms`` (prefix padding included) or ``audio_end_ms``."""


def _rms_near(power: float, scale: float) -> frozenset[int]:
    """Integer RMS values whose range of exact levels comes within the margin of ``power``.

    A window whose ``audioop.rms`` is ``r`` has a mean square in ``[r*r, (r+1)**2)``,
    i.e. a level in ``[r*r*scale, (r+1)**2*scale)``; outside this set that whole range lies
    clearly on one side of ``power``.
    """
    lo = math.isqrt(int(power * (1.0 - _BOUND_MARGIN) / scale)) - 1
    hi = math.isqrt(int(power * (1.0 + _BOUND_MARGIN) / scale)) + 1
    return frozenset(range(max(0, lo), hi + 1))


class EnergyVad:
    """Streaming RMS-threshold VAD over 16-bit mono PCM (native byte order)."""

    def __init__(
        self,
        *,
        sample_rate: int,
        threshold: float = 0.5,
        prefix_padding_ms: int = 300,
        silence_duration_ms: int = 500,
        min_speech_ms: int = 60,
        start_ms: float = 0.0,
    ) -> None:
        self.sample_rate = sample_rate
        self.window = sample_rate * WINDOW_MS // 1000
        self._window_bytes = self.window * _SAMPLE_BYTES
        self._power_scale = 1.0 / (self.window * _FULL_SCALE_SQ)
        self._square_scale = 1.0 / _FULL_SCALE_SQ
        self.on_dbfs = threshold_to_dbfs(threshold)
        self.cont_dbfs = self.on_dbfs - _HYSTERESIS_DB
        # Compared as linear mean power (fraction of full scale squared): no log per window.
        self._on_power = 10.0 ** (self.on_dbfs / 10.0)
        self._cont_power = 10.0 ** (self.cont_dbfs / 10.0)
        self._rms_to_measure = _rms_near(self._on_power, self._square_scale) | _rms_near(
            self._cont_power, self._square_scale
        )
        self.prefix_padding_ms = max(0, int(prefix_padding_ms))
        self.silence_windows = max(1, -(-int(silence_duration_ms) // WINDOW_MS))
        self.min_speech_windows = max(1, -(-int(min_speech_ms) // WINDOW_MS))
        self.start_ms = float(start_ms)
        self.in_speech = False
        self._leftover = b""
        self._windows_done = 0
        self._run = 0  # consecutive loud windows while idle
        self._run_start = 0  # window index where the loud run began
        self._silence = 0  # consecutive quiet windows while in speech
        # mean power of the last few windows, for onset backtracking
        self._history: list[float] = []
        self._pushed = 0  # windows whose level went into the history
        self._history_len = _MAX_BACKTRACK_MS // WINDOW_MS + self.min_speech_windows + 1

    @property
    def now_ms(self) -> float:
        """Appended-audio time up to which windows have been analysed."""
        return self.start_ms + self._windows_done * WINDOW_MS

    def reset(self) -> None:
        """Forget any speech in progress (e.g. ``input_audio_buffer.clear``); keep the clock."""
        self.in_speech = False
        self._run = 0
        self._silence = 0
        self._history.clear()

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Analyse more samples (int16 mono bytes); return boundaries found in complete
        windows. A partial window is kept for the next call."""
        if self._leftover:
            pcm = self._leftover + pcm
        step = self._window_bytes
        used = len(pcm) - len(pcm) % step
        self._leftover = pcm[used:]
        events: list[VadEvent] = []
        for start in range(0, used, step):
            self._step(self._level(pcm[start : start + step]), events)
        return events

    def _level(self, window: bytes) -> float:
        """Mean power of one window (fraction of full scale squared).

        Exact near a threshold; elsewhere the lower bound ``rms**2``, which compares with
        both thresholds exactly as the exact level would (see module docstring).
        """
        r = audioop.rms(window, _SAMPLE_BYTES)
        if r in self._rms_to_measure:
            frame = np.frombuffer(window, dtype=np.int16).reshape(1, self.window)
            frame = frame.astype(np.float32)
            return float(np.einsum("ij,ij->i", frame, frame)[0] * self._power_scale)
        return r * r * self._square_scale

    def _step(self, level: float, events: list[VadEvent]) -> None:
        """Advance the state machine by one window at ``level``."""
        idx = self._windows_done
        self._windows_done += 1
        if not self.in_speech:
            if level >= self._on_power:
                if self._run == 0:
                    self._run_start = idx
                self._run += 1
                if self._run >= self.min_speech_windows:
                    onset = self._backtrack(self._run_start)
                    start = self.start_ms + onset * WINDOW_MS - self.prefix_padding_ms
                    events.append(VadEvent("started", max(0, round(start))))
                    self.in_speech = True
                    self._silence = 0
                    self._run = 0
            else:
                self._run = 0
        elif level >= self._cont_power:
            self._silence = 0
        else:
            self._silence += 1
            if self._silence >= self.silence_windows:
                end = self.start_ms + (idx + 1) * WINDOW_MS
                events.append(VadEvent("stopped", round(end)))
                self.in_speech = False
                self._silence = 0
        self._push(level)

    def _push(self, level: float) -> None:
        self._pushed += 1
        self._history.append(level)
        if len(self._history) > self._history_len:
            del self._history[0]

    def _backtrack(self, run_start: int) -> int:
        """Earliest window at or before ``run_start`` in a contiguous stretch above the
        hysteresis level, so a soft attack before the loud part counts as speech."""
        onset = run_start
        limit = max(0, run_start - _MAX_BACKTRACK_MS // WINDOW_MS)
        w = run_start - 1
        while w >= limit:
            # history[-1] is window self._pushed - 1
            h = len(self._history) - (self._pushed - w)
            if h < 0 or self._history[h] < self._cont_power:
                break
            onset = w
            w -= 1
        return onset
