"""Map "the caller heard N ms of this agent turn" to the text they heard.

The cascade speaks a turn as a sequence of TTS pieces (sentences), each with a
known audio duration, because every sample sent to the core was counted.  The
heard text is:

1. every piece whose audio ended at or before ``heard_ms``, whole;
2. of the piece playing at ``heard_ms``, the leading words whose share of the
   piece's characters is within the share of its audio that played (speech rate
   is close to constant within one sentence, far less so across sentences, which
   is why the mapping is per piece and not over the whole turn);
3. nothing of the pieces after.

A word is only counted once the caller could have heard all of it, so the history
never claims the agent said a word it was cut off in.  Pure functions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["SpokenPiece", "heard_text"]


@dataclass(frozen=True, slots=True)
class SpokenPiece:
    """One TTS piece of an agent turn on that turn's audio timeline."""

    text: str
    start_ms: float
    duration_ms: float

    @property
    def end_ms(self) -> float:
        return self.start_ms + self.duration_ms


def _leading_words(text: str, fraction: float) -> str:
    """The longest run of whole leading words within ``fraction`` of the characters."""
    if fraction <= 0:
        return ""
    if fraction >= 1:
        return text
    budget = fraction * len(text)
    end = 0
    for i, ch in enumerate(text):
        if ch.isspace() and i > 0 and not text[i - 1].isspace():
            if i <= budget:
                end = i
            else:
                break
    return text[:end].rstrip()


def heard_text(pieces: Sequence[SpokenPiece], heard_ms: float) -> str:
    """What the caller heard of a turn made of ``pieces`` after ``heard_ms`` of it."""
    heard: list[str] = []
    for piece in pieces:
        if piece.end_ms <= heard_ms:
            heard.append(piece.text)
            continue
        if piece.start_ms < heard_ms and piece.duration_ms > 0:
            part = _leading_words(piece.text, (heard_ms - piece.start_ms) / piece.duration_ms)
            if part:
                heard.append(part)
        break
    return " ".join(heard)
