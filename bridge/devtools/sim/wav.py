"""Write simulated-call audio as WAV files a person can listen to.

Everything on the wire is headerless mu-law at 8 kHz, which desktop players don't open.
When a barge-in test fails, listening to what the simulated caller actually heard (and,
in stereo, what it said at the same moment) is the quickest way to see why, so the
simulators write 16-bit PCM WAV with the stdlib `wave` and `audioop` modules.
"""

from __future__ import annotations

import os
import warnings
import wave

with warnings.catch_warnings():
    # audioop is deprecated in 3.11/3.12 (audioop-lts on 3.13+); the project uses it on purpose.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

SAMPLE_RATE = 8000
_SILENCE = b"\xff"


def ulaw_to_pcm16(ulaw: bytes) -> bytes:
    """Decode mu-law to little-endian signed 16-bit PCM (WAV's sample format)."""
    return audioop.ulaw2lin(ulaw, 2)


def write_wav(
    path: str | os.PathLike[str],
    ulaw: bytes,
    *,
    right: bytes | None = None,
    sample_rate: int = SAMPLE_RATE,
) -> None:
    """Write mu-law audio as a PCM16 WAV.

    With `right`, write stereo: `ulaw` on the left channel and `right` on the right, the
    shorter one padded with silence so both stay aligned to the same clock from sample 0.
    """
    if right is None:
        channels, frames = 1, ulaw_to_pcm16(ulaw)
    else:
        n = max(len(ulaw), len(right))
        left_pcm = ulaw_to_pcm16(ulaw.ljust(n, _SILENCE))
        right_pcm = ulaw_to_pcm16(right.ljust(n, _SILENCE))
        channels = 2
        frames = audioop.add(
            audioop.tostereo(left_pcm, 2, 1, 0), audioop.tostereo(right_pcm, 2, 0, 1), 2
        )
    with wave.open(os.fspath(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(sample_rate)
        w.writeframes(frames)
