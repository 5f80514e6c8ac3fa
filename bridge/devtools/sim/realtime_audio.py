"""Audio conversions the Realtime simulator needs, kept tiny and self-contained.

The simulator deliberately does not use ``bridge.audio``: it stands in for the remote
service, so it must not share code (or bugs) with the bridge it is testing. Input audio
is decoded to 16-bit PCM bytes for the VAD (bytes, not arrays: the VAD measures them with
``audioop``, and a numpy array per 20 ms append cost more than the measurement); output
clips (stored as mu-law 8 kHz) are encoded once per format and cached, so streaming a
reply costs only slicing and base64.
"""

from __future__ import annotations

import sys
import warnings
from functools import cache

import numpy as np

from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.realtime_session import AudioFormat

with warnings.catch_warnings():
    # audioop is deprecated on 3.11/3.12 but is the project's chosen G.711 codec.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["decode_input", "encode_clip", "upsample_8k_to_24k"]


def decode_input(raw: bytes, fmt: AudioFormat) -> bytes:
    """Wire bytes in the session input format -> int16 samples, native byte order and rate.

    ``raw`` must hold whole samples (the caller keeps an odd trailing PCM byte back).
    """
    if fmt == "pcmu":
        return audioop.ulaw2lin(raw, 2)
    if fmt == "pcma":
        return audioop.alaw2lin(raw, 2)
    if sys.byteorder == "big":  # the wire's PCM is little-endian
        return audioop.byteswap(raw, 2)
    return raw


def upsample_8k_to_24k(pcm8k: np.ndarray) -> np.ndarray:
    """Linear interpolation x3. Speech from a phone clip has no content above 4 kHz, so
    interpolation images stay small; good enough for a simulator's output."""
    n = pcm8k.size
    if n == 0:
        return np.zeros(0, dtype=np.int16)
    src = pcm8k.astype(np.float32)
    positions = np.arange(n * 3, dtype=np.float32) / 3.0
    out = np.interp(positions, np.arange(n, dtype=np.float32), src)
    return np.clip(np.rint(out), -32768, 32767).astype("<i2")


@cache
def encode_clip(name: str, fmt: AudioFormat) -> bytes:
    """The clip as wire bytes in an output format (pcmu: unchanged; pcm: 24 kHz LE)."""
    ulaw = load_clip(name)
    if fmt == "pcmu":
        return ulaw
    lin = audioop.ulaw2lin(ulaw, 2)
    if fmt == "pcma":
        return audioop.lin2alaw(lin, 2)
    return upsample_8k_to_24k(np.frombuffer(lin, dtype="<i2")).tobytes()
