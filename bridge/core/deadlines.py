"""The call's timers, as data: named deadlines on the core's own clock.

The core never sleeps.  It keeps what it is waiting for here, and after every
event tells the driver the earliest deadline (``WakeAt``).  The driver keeps a
single timer per call, so no call ever waits on another call's timers, and a
replay on a virtual clock fires them at exactly the recorded moments.
"""

from __future__ import annotations


class Deadlines:
    """Named deadlines (ms); setting a name again moves it."""

    def __init__(self) -> None:
        self._at: dict[str, int] = {}
        self._announced: int | None = None
        self._dirty = False  # something changed since the driver was last told

    def set(self, name: str, at: int) -> None:
        self._at[name] = at
        self._dirty = True

    def cancel(self, name: str) -> None:
        if self._at.pop(name, None) is not None:
            self._dirty = True

    def due(self, name: str, now: int) -> bool:
        """True, once, when ``name`` is set and has passed (it is then removed)."""
        at = self._at.get(name)
        if at is None or now < at:
            return False
        del self._at[name]
        self._dirty = True
        return True

    def pending(self, name: str) -> bool:
        return name in self._at

    def wake_change(self) -> int | None:
        """The earliest deadline if the driver has not been told it yet, else None.

        Called after every event, so it is free when nothing changed (most audio)."""
        if not self._dirty:
            return None
        self._dirty = False
        earliest = min(self._at.values()) if self._at else None
        if earliest is None or earliest == self._announced:
            return None
        self._announced = earliest
        return earliest

    def fired(self) -> None:
        """The driver's timer fired: whatever is still pending must be re-announced."""
        self._announced = None
        self._dirty = True
