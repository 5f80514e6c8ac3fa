"""Bounding Media Stream sockets that have not started a call yet.

The upgrade's ``X-Twilio-Signature`` covers only the fixed ``wss://…/media-stream`` URL,
so it is the same for every call: anyone who saw one can replay it and open sockets that
never send ``start``.  Each such socket costs a file descriptor and tens of KB of memory,
and ``BRIDGE_MAX_CALLS`` does not see them (nothing has started).  Twilio itself sends
``connected`` and ``start`` right after the handshake, so two rules suffice:

* at most ``limit`` sockets may be waiting for their stream to start, per process; over
  it the upgrade is refused *before* it is accepted (HTTP 403), which costs almost
  nothing (this module);
* a socket with no ``start`` within ``BRIDGE_START_TIMEOUT_S`` is ended with the reason
  ``no_start`` (the call core's ``start`` deadline).

A socket stops counting when its stream starts (the core asks the driver to authorise
it; a forged stream token ends the call at once) or when it closes.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
from collections import Counter

log = logging.getLogger("bridge")

#: Sockets closed without ever starting after which an idle moment trims the heap.
_FLOOD = 100


class PendingStreams:
    """Admission of sockets that have not started a call (``BRIDGE_MAX_PENDING_STREAMS``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._pending: set[int] = set()
        self._unstarted_since_trim = 0
        self.stats: Counter[str] = Counter()
        """``admitted``, ``refused`` (over the cap, before accept), ``started`` (the
        stream started), ``closed_unstarted`` (closed before it ever started: the
        start deadline, or the peer gave up)."""

    @property
    def count(self) -> int:
        """Sockets accepted whose stream has not started yet."""
        return len(self._pending)

    def try_admit(self, socket: object) -> bool:
        """Before accepting the upgrade: False means refuse it (the cap is reached)."""
        if len(self._pending) >= self.limit:
            refused = self.stats["refused"]
            self.stats["refused"] += 1
            if refused % 1000 == 0:  # a flood is thousands of these: log a few
                log.warning(
                    "refusing Media Stream upgrades: %d sockets are waiting for 'start' "
                    "(BRIDGE_MAX_PENDING_STREAMS=%d); %d refused so far",
                    len(self._pending), self.limit, refused + 1,
                )
            return False
        self.stats["admitted"] += 1
        self._pending.add(id(socket))
        return True

    def started(self, socket: object) -> None:
        """The stream started: the socket is a call now, no longer pending."""
        if id(socket) in self._pending:
            self._pending.discard(id(socket))
            self.stats["started"] += 1

    def release(self, socket: object) -> None:
        """The socket is gone, whatever happened: forget it."""
        if id(socket) not in self._pending:
            return
        self._pending.discard(id(socket))
        self.stats["closed_unstarted"] += 1
        self._unstarted_since_trim += 1
        if not self._pending and self._unstarted_since_trim >= _FLOOD:
            # A flood of never-started sockets just ended: see _trim_heap.
            self._unstarted_since_trim = 0
            asyncio.get_running_loop().call_later(0.5, _trim_heap)


def _trim_heap() -> None:
    """Give the memory of thousands of closed sockets back to the OS.

    Their objects are all freed (checked with tracemalloc), but glibc keeps the pages
    mapped: measured, a bridge that peaked at +52 MiB stayed there.  ``malloc_trim``
    returns free pages (about a third of that); a no-op where glibc is not the allocator.
    """
    gc.collect()
    name = ctypes.util.find_library("c")
    if not name:
        return
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return
    trim(0)
