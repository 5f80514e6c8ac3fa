"""The in-process event bus behind the live console.

Calls publish their moments here (started, timeline, transcript, ended); the console's
Server-Sent-Events streams subscribe.  Why in-process and this small: a call lives in
one process (ARCHITECTURE.md, Scale), so the process that runs it is the one that can
show it live; a fleet-wide view would read the store, which every instance shares.

Publishing never blocks and never fails a call: each subscriber has a bounded queue,
and a subscriber that falls that far behind (a stalled browser tab) is dropped and told
so, rather than letting it hold memory or slow the audio path.  The bus also keeps a
snapshot of each live call (summary and a bounded timeline), so a console opened in the
middle of a call starts from the whole picture instead of from the next event.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

__all__ = ["EventBus", "LiveCall", "Subscription"]

#: Timeline entries kept per live call for late joiners.
TIMELINE_KEEP = 2000
#: Events a subscriber may have waiting before it is dropped.
QUEUE_LIMIT = 1000
#: Finished calls remembered for late subscribers of that call (the store has the rest).
RECENT_ENDED = 50


@dataclass
class LiveCall:
    """What the console lists for a call in progress."""

    call_id: str
    leg: str
    caller: str | None
    agent: str | None
    started_at: float
    state: str = "live"
    end_reason: str | None = None
    recording: str | None = None
    timeline: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=TIMELINE_KEEP))

    def summary(self) -> dict[str, Any]:
        return {
            "call_id": self.call_id,
            "leg": self.leg,
            "caller": self.caller,
            "agent": self.agent,
            "started_at": self.started_at,
            "duration_s": round(time.time() - self.started_at, 1),
            "state": self.state,
            "end_reason": self.end_reason,
            "recording": self.recording is not None,
        }


class Subscription:
    """One listener: all calls' summaries, or one call's whole stream of events."""

    def __init__(self, bus: EventBus, call_id: str | None) -> None:
        self.bus = bus
        self.call_id = call_id
        self.queue: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue(QUEUE_LIMIT)
        self.dropped = False

    def wants(self, event: dict[str, Any]) -> bool:
        if self.call_id is None:  # the calls list: lifecycle only, not every moment
            return event["type"] in ("call_started", "call_updated", "call_ended")
        return event.get("call_id") == self.call_id

    def offer(self, event: dict[str, Any]) -> None:
        if self.dropped:
            return
        try:
            self.queue.put_nowait(event)
        except asyncio.QueueFull:
            self.dropped = True
            self.bus.unsubscribe(self)
            # Make room for the end marker so the reader learns why it stopped.
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(None)

    async def next(self, timeout: float) -> dict[str, Any] | None:
        """The next event; ``{"type": "idle"}`` after ``timeout`` s; None once dropped."""
        try:
            return await asyncio.wait_for(self.queue.get(), timeout)
        except TimeoutError:
            return {"type": "idle"}

    def close(self) -> None:
        self.bus.unsubscribe(self)


class EventBus:
    """Live calls and their subscribers, in this process."""

    def __init__(self) -> None:
        self.calls: dict[str, LiveCall] = {}
        self.recent: deque[LiveCall] = deque(maxlen=RECENT_ENDED)
        self._subs: set[Subscription] = set()

    def subscribe(self, call_id: str | None = None) -> Subscription:
        sub = Subscription(self, call_id)
        self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def find(self, call_id: str) -> LiveCall | None:
        call = self.calls.get(call_id)
        if call is None:
            call = next((c for c in self.recent if c.call_id == call_id), None)
        return call

    def snapshot(self) -> list[dict[str, Any]]:
        return [c.summary() for c in self.calls.values()]

    # ------------------------------------------------------------ publishing

    def _publish(self, event: dict[str, Any]) -> None:
        for sub in list(self._subs):
            if sub.wants(event):
                sub.offer(event)

    def call_started(self, call: LiveCall) -> None:
        self.calls[call.call_id] = call
        self._publish({"type": "call_started", "call_id": call.call_id, "call": call.summary()})

    def moment(self, call_id: str, event: dict[str, Any]) -> None:
        """A timeline or transcript event of a live call."""
        call = self.calls.get(call_id)
        if call is None:
            return
        event = {**event, "call_id": call_id}
        call.timeline.append(event)
        self._publish(event)

    def call_ended(self, call_id: str, reason: str) -> None:
        call = self.calls.pop(call_id, None)
        if call is None:
            return
        call.state = "ended"
        call.end_reason = reason
        self.recent.append(call)
        self._publish({"type": "call_ended", "call_id": call_id, "call": call.summary()})

    def recording_saved(self, call_id: str, path: str) -> None:
        call = self.find(call_id)
        if call is None:
            return
        call.recording = path
        self._publish({"type": "call_updated", "call_id": call_id, "call": call.summary()})
