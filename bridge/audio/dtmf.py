"""In-band DTMF tones, for agents that must drive another IVR on an outbound call.

Twilio Media Streams carry DTMF only inbound, so to "press" keys the bridge
plays the standard dual-tone pairs as audio: 100 ms tone, 60 ms gap per digit
(ITU-T Q.24 asks for at least 40 ms of each), 'w' pauses 500 ms.
"""

from __future__ import annotations

import numpy as np

from bridge.audio.mulaw import pcm16_to_ulaw

_LOW = {
    "1": 697,
    "2": 697,
    "3": 697,
    "A": 697,
    "4": 770,
    "5": 770,
    "6": 770,
    "B": 770,
    "7": 852,
    "8": 852,
    "9": 852,
    "C": 852,
    "*": 941,
    "0": 941,
    "#": 941,
    "D": 941,
}
_HIGH = {
    "1": 1209,
    "4": 1209,
    "7": 1209,
    "*": 1209,
    "2": 1336,
    "5": 1336,
    "8": 1336,
    "0": 1336,
    "3": 1477,
    "6": 1477,
    "9": 1477,
    "#": 1477,
    "A": 1633,
    "B": 1633,
    "C": 1633,
    "D": 1633,
}
RATE = 8000
TONE_MS = 100
GAP_MS = 60
PAUSE_MS = 500


def dtmf_pcm16(digits: str, amplitude: float = 0.35) -> bytes:
    """PCM16 8 kHz audio of ``digits`` (0-9, *, #, A-D; 'w'/'W' = half-second pause)."""
    t = np.arange(RATE * TONE_MS // 1000) / RATE
    ramp = np.minimum(1.0, np.minimum(np.arange(t.size), np.arange(t.size)[::-1]) / 40)
    gap = np.zeros(RATE * GAP_MS // 1000)
    parts: list[np.ndarray] = []
    for digit in digits.upper():
        if digit == "W":
            parts.append(np.zeros(RATE * PAUSE_MS // 1000))
            continue
        if digit not in _LOW:
            raise ValueError(f"not a DTMF digit: {digit!r}")
        tone = np.sin(2 * np.pi * _LOW[digit] * t) + np.sin(2 * np.pi * _HIGH[digit] * t)
        parts += [tone * ramp * amplitude * 32767 / 2, gap]
    if not parts:
        return b""
    return np.concatenate(parts).astype("<i2").tobytes()


def dtmf_ulaw(digits: str) -> bytes:
    """μ-law 8 kHz audio of ``digits``, ready for a Twilio ``media`` message."""
    return pcm16_to_ulaw(dtmf_pcm16(digits))
