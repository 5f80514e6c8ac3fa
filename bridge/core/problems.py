"""Counting what peers get wrong, and saying so without flooding the log.

A misbehaving peer can send garbage fifty times a second.  The call survives
every bad frame; the operator needs to know it happened, how often, and of
which kind, but not fifty log lines a second.
"""

from __future__ import annotations

from collections import Counter

from bridge.core.actions import Notice

#: After the first notice of a kind, one more every this many occurrences.
REPEAT_EVERY = 500


class ProblemLog:
    """Per-call counts of protocol problems by kind, and throttled notices."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def report(self, code: str, message: str, level: str = "warning") -> list[Notice]:
        """Count ``code``; a notice the first time, then once per ``REPEAT_EVERY``."""
        self.counts[code] += 1
        seen = self.counts[code]
        if seen == 1:
            return [Notice(level, code, message)]  # type: ignore[arg-type]
        if seen % REPEAT_EVERY == 0:
            return [Notice(level, code, f"{message} ({seen} times so far)")]  # type: ignore[arg-type]
        return []

    @property
    def total(self) -> int:
        return sum(self.counts.values())
