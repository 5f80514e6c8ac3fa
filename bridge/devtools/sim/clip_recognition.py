"""Recognise which bundled clip a stretch of caller audio is: the stand-ins' "ASR".

Why fingerprints and not a script: a transcription stand-in that returns the next
line of a script would say the right words even when the cascade sent it the wrong
audio (a cut-off utterance, the agent's own echo, silence).  Matching the audio
itself keeps tests honest: the transcript is right only if the audio is.

How: every 12-byte window of every clip's mu-law bytes that is not near-silent is
indexed.  A stretch of audio votes for the clips whose windows it contains; the
clip with the largest share of its windows present wins, if that share is at least
``min_share``.  On the passthrough path caller audio reaches the STT byte for byte
as the clip was played (mu-law in, mu-law out), so matches are exact; leading and
trailing silence and a cut-off edge only lower the share.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import cache

from bridge.devtools.sim.clips import clip_names, clip_text, load_clip

__all__ = ["Recognition", "recognise", "warm_up"]

_WINDOW = 12
# mu-law stores the inverted magnitude: (byte & 0x7f) close to 0x7f is close to zero.
_QUIET_FLOOR = 0x70


def _loud(window: bytes) -> bool:
    return any((b & 0x7F) < _QUIET_FLOOR for b in window)


@cache
def _index() -> tuple[dict[bytes, frozenset[str]], dict[str, int]]:
    owners: dict[bytes, set[str]] = {}
    counts: dict[str, int] = {}
    for name in clip_names():
        audio = load_clip(name)
        seen: set[bytes] = set()
        for i in range(len(audio) - _WINDOW + 1):
            window = audio[i : i + _WINDOW]
            if window not in seen and _loud(window):
                seen.add(window)
                owners.setdefault(window, set()).add(name)
        counts[name] = len(seen)
    return {w: frozenset(n) for w, n in owners.items()}, counts


def warm_up() -> None:
    """Build the fingerprint index now (about a second), not inside the first request."""
    _index()


@dataclass(frozen=True, slots=True)
class Recognition:
    clip: str | None
    share: float
    text: str | None


def recognise(ulaw: bytes, *, min_share: float = 0.3) -> Recognition:
    """The clip ``ulaw`` (mu-law 8 kHz) contains, with its transcript, or no clip."""
    owners, counts = _index()
    votes: Counter[str] = Counter()
    seen: set[bytes] = set()
    for i in range(len(ulaw) - _WINDOW + 1):
        window = ulaw[i : i + _WINDOW]
        if window in seen:
            continue
        seen.add(window)
        for name in owners.get(window, ()):
            votes[name] += 1
    best, share = None, 0.0
    for name, n in votes.items():
        s = n / max(1, counts[name])
        if s > share:
            best, share = name, s
    if best is None or share < min_share:
        return Recognition(None, share, None)
    return Recognition(best, share, clip_text(best))
