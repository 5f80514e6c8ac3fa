"""A caller's whole side of a call as one audio track, for a microphone stand-in.

Browser tests feed Chromium's fake microphone from a WAV file
(``--use-file-for-fake-audio-capture``), so the scripted caller of the Twilio caller
simulator (clips at call times) is laid out here as one track.  The clips go in as
decoded μ-law at 8 kHz, their own rate, with no resampling on our side: the browser
resamples to its capture rate and the softphone back to 8 kHz, both band-limited, and
the Realtime simulator only needs the speech energy to stay well above its VAD
threshold (its caller transcripts are scripted by turn, not recognised from audio).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bridge.devtools.sim.clips import ULAW_BYTES_PER_MS, load_clip
from bridge.devtools.sim.wav import write_wav

__all__ = ["caller_track", "write_caller_wav"]


def caller_track(script: Sequence[tuple[float, str]], total_ms: float) -> bytes:
    """μ-law 8 kHz: each ``(at_ms, clip)`` placed at its time, silence elsewhere."""
    track = bytearray(b"\xff" * int(total_ms * ULAW_BYTES_PER_MS))
    for at_ms, name in script:
        clip = load_clip(name)
        start = int(at_ms * ULAW_BYTES_PER_MS)
        end = min(len(track), start + len(clip))
        track[start:end] = clip[: end - start]
    return bytes(track)


def write_caller_wav(
    path: str | os.PathLike[str], script: Sequence[tuple[float, str]], total_ms: float
) -> None:
    """The track as a mono PCM16 8 kHz WAV."""
    write_wav(path, caller_track(script, total_ms))
