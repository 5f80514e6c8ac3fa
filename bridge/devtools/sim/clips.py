"""Bundled speech clips for the simulators, the demo and the tests.

The clips are raw G.711 mu-law, 8 kHz mono (exactly what Twilio carries), so the
simulators can play them to the bridge without any transcoding, and tests can reason
about durations in bytes (8 bytes per millisecond). Their transcripts live in
``clips.json`` next to them.

Loaded through :mod:`importlib.resources` so they work from an installed wheel as
well as from a source checkout, and cached because every simulated call replays the
same handful of clips.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable

__all__ = ["ULAW_BYTES_PER_MS", "clip_duration_ms", "clip_names", "clip_text", "load_clip"]

#: G.711 at 8 kHz: one byte per sample, 8 samples per millisecond.
ULAW_BYTES_PER_MS = 8


def _clips_dir() -> Traversable:
    return resources.files("bridge.devtools.sim").joinpath("clips")


@cache
def _transcripts() -> dict[str, str]:
    raw = _clips_dir().joinpath("clips.json").read_text(encoding="utf-8")
    data = json.loads(raw)
    return {str(k): str(v) for k, v in data.items()}


def clip_names() -> list[str]:
    """Names of all bundled clips (those with a transcript), sorted."""
    return sorted(_transcripts())


@cache
def load_clip(name: str) -> bytes:
    """The clip's raw mu-law bytes (8 kHz mono).

    Raises ``KeyError`` for an unknown name, so a typo in a test script fails loudly
    instead of silently playing nothing.
    """
    if name not in _transcripts():
        raise KeyError(f"unknown clip {name!r}; known: {', '.join(clip_names())}")
    return _clips_dir().joinpath(f"{name}.ulaw").read_bytes()


def clip_text(name: str) -> str:
    """The transcript of the clip (what the voice says)."""
    try:
        return _transcripts()[name]
    except KeyError:
        raise KeyError(f"unknown clip {name!r}; known: {', '.join(clip_names())}") from None


def clip_duration_ms(name: str) -> float:
    """Duration of the clip in milliseconds."""
    return len(load_clip(name)) / ULAW_BYTES_PER_MS
