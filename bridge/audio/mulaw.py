"""G.711 mu-law <-> PCM16LE codec for Twilio Media Streams audio.

Uses ``audioop`` (the project's named dependency for mu-law, see docs/DEVELOPING.md): it is
C, it implements exactly the G.711 tables Twilio uses, and a hand-written table would only
be another thing to get wrong. ``audioop`` works in *native* byte order, while the wire
formats here (Twilio's decoded payload and the Realtime API's PCM16) are little-endian, so
the functions byte-swap on big-endian hosts.
"""

from __future__ import annotations

import sys
import warnings

with warnings.catch_warnings():
    # 3.11/3.12 warn that audioop goes away in 3.13; there the audioop-lts package provides
    # the same module (declared in pyproject.toml), so the warning is not actionable.
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["pcm16_to_ulaw", "ulaw_to_pcm16"]

_SAMPLE_BYTES = 2
_BIG_ENDIAN = sys.byteorder == "big"


def ulaw_to_pcm16(data: bytes) -> bytes:
    """Decode mu-law bytes to PCM16LE mono: one byte in, one 2-byte sample out."""
    pcm = audioop.ulaw2lin(data, _SAMPLE_BYTES)
    return audioop.byteswap(pcm, _SAMPLE_BYTES) if _BIG_ENDIAN else pcm


def pcm16_to_ulaw(data: bytes) -> bytes:
    """Encode PCM16LE mono to mu-law bytes: one 2-byte sample in, one byte out.

    Raises ``ValueError`` for an odd byte count: a half sample cannot be encoded, and the
    streaming caller (``Pcm16Transcoder``) carries dangling bytes itself.
    """
    if len(data) % _SAMPLE_BYTES:
        raise ValueError(f"PCM16 data must be a whole number of samples, got {len(data)} bytes")
    if _BIG_ENDIAN:
        data = audioop.byteswap(data, _SAMPLE_BYTES)
    return audioop.lin2ulaw(data, _SAMPLE_BYTES)
