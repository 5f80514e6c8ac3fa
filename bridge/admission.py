"""Call admission: how many calls this process takes, and when it stops taking them.

Capacity counts live calls plus calls the webhook answered whose stream has not
started yet, so a burst of incoming calls cannot all pass the check before any
of their streams arrives.  A draining process (SIGTERM) takes no new calls, but it
still takes the streams of calls its webhook already answered: Twilio connects those
here whatever the drain says, and refusing them would drop a call mid-connect.
"""

from __future__ import annotations

import time
from collections.abc import Callable

#: How long a webhook-admitted call holds a place before its stream must start.
ADMISSION_TTL_S = 15.0


class Admission:
    """Places for calls in this process (``BRIDGE_MAX_CALLS`` is per process)."""

    def __init__(self, max_calls: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_calls = max_calls
        self.draining = False
        self._clock = clock
        self._admitted: dict[str, float] = {}
        self.live = 0

    @property
    def at_capacity(self) -> bool:
        return self.live + self._admitted_count() >= self.max_calls

    def admit(self, call_sid: str) -> None:
        """The webhook answered ``call_sid`` with a stream: hold its place for a while."""
        self._admitted[call_sid] = self._clock() + ADMISSION_TTL_S

    def started(self, call_sid: str) -> None:
        """The call's stream started: its place is now a live call's."""
        self._admitted.pop(call_sid, None)

    def takes_stream(self) -> bool:
        """Whether a Media Stream upgrade may go ahead: always, unless draining; while
        draining, only while some call the webhook answered has yet to start its stream."""
        return not self.draining or self.admitted_now() > 0

    def admitted_now(self) -> int:
        """Places held by the webhook right now, without evicting (safe off the loop:
        the metrics scrape reads it from another thread)."""
        now = self._clock()
        return sum(1 for until in list(self._admitted.values()) if until >= now)

    def _admitted_count(self) -> int:
        now = self._clock()
        for sid in [s for s, until in self._admitted.items() if until < now]:
            del self._admitted[sid]
        return len(self._admitted)
