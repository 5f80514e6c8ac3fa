"""Cut streaming LLM text into pieces worth sending to TTS on their own.

Why: TTS per sentence lets speech start while the LLM is still writing, which is
most of the cascade's latency win.  The first piece of a reply may also end at a
clause boundary (a comma after enough words): waiting for the end of a long first
sentence would add its whole writing time to the turn latency, and a clause is
still a natural place for the voice to pause.  Later pieces wait for whole
sentences, which sound better and cost fewer requests.
"""

from __future__ import annotations

__all__ = ["SentenceSplitter"]

_SENTENCE_END = ".!?"
_CLAUSE_END = ",;:"
_CLOSERS = "\"')]"


class SentenceSplitter:
    """Feed text deltas, get back the complete pieces they finish (pure, no I/O).

    A boundary is only taken once the character *after* the punctuation is seen to
    be whitespace, so "3.5" or "e.g." followed by a letter does not split.
    """

    def __init__(self, *, first_clause_min_chars: int = 40, min_chars: int = 12) -> None:
        self.first_clause_min_chars = first_clause_min_chars
        self.min_chars = min_chars
        self._buffer = ""
        self._emitted = 0

    def feed(self, delta: str) -> list[str]:
        """Add ``delta``; return the pieces now complete, in order, stripped."""
        self._buffer += delta
        pieces: list[str] = []
        while True:
            cut = self._find_cut()
            if cut is None:
                return pieces
            piece, self._buffer = self._buffer[:cut].strip(), self._buffer[cut:]
            if piece:
                pieces.append(piece)
                self._emitted += 1

    def flush(self) -> str | None:
        """The text left when the stream ends (the last piece), or None."""
        piece, self._buffer = self._buffer.strip(), ""
        if piece:
            self._emitted += 1
            return piece
        return None

    def _find_cut(self) -> int | None:
        text = self._buffer
        marks = _SENTENCE_END + (_CLAUSE_END if self._emitted == 0 else "")
        for i, ch in enumerate(text):
            if ch not in marks:
                continue
            j = i + 1
            while j < len(text) and text[j] in _CLOSERS:
                j += 1
            if j >= len(text) or not text[j].isspace():
                continue  # unknown yet, or not a boundary ("3.5", "a,b")
            length = len(text[:j].strip())
            if ch in _CLAUSE_END:
                if length >= self.first_clause_min_chars:
                    return j
            elif length >= self.min_chars:
                return j
        return None
