"""The model's response lifecycle: at most one response at a time, none lost.

The Realtime API refuses a ``response.create`` while another response is in
flight (``conversation_already_has_active_response``), and a response asked for
is not active until ``response.created`` arrives.  So a request made while the
model is busy (speaking, or about to) waits here and goes out when the current
response is done; a request the server refused is retried the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bridge.core.actions import CreateResponse

#: A request to speak: None for "respond as you see fit", else one-off instructions.
Request = str | None


@dataclass(slots=True)
class Responses:
    """Which response is in flight, which one is wanted next, and their audio length."""

    active: str | None = None
    awaiting_created: bool = False
    pending: CreateResponse | None = None
    last: CreateResponse = field(default_factory=CreateResponse)
    interrupted: set[str] = field(default_factory=set)
    samples: dict[str, int] = field(default_factory=dict)

    @property
    def busy(self) -> bool:
        """A response is in flight or asked for."""
        return self.active is not None or self.awaiting_created

    def request(self, instructions: Request, *, blocked: bool = False) -> list[CreateResponse]:
        """Ask for a response now, or once the current one is done (or ``blocked`` lifts).

        A waiting request with instructions is not replaced by a plain one."""
        if self.busy or blocked:
            if self.pending is None or instructions is not None:
                self.pending = CreateResponse(instructions)
            return []
        return [self.send(CreateResponse(instructions))]

    def send(self, request: CreateResponse) -> CreateResponse:
        self.awaiting_created = True
        self.last = request
        return request

    def take_pending(self) -> list[CreateResponse]:
        """The waiting request, sent now (call when the model is free)."""
        if self.pending is None or self.busy:
            return []
        request, self.pending = self.pending, None
        return [self.send(request)]

    def started(self, response_id: str) -> None:
        self.active = response_id
        self.awaiting_created = False
        self.samples[response_id] = 0

    def finished(self, response_id: str) -> int:
        """The response is done; returns the model-timeline samples it produced."""
        if self.active == response_id or self.active is None:
            self.active = None
        self.awaiting_created = False
        self.interrupted.discard(response_id)
        return self.samples.pop(response_id, 0)

    def refused_busy(self) -> None:
        """The server had a response in flight already: ask again after it."""
        self.awaiting_created = False
        if self.pending is None:
            self.pending = self.last

    def interrupt(self) -> str | None:
        """The caller barged in: the active response's remaining audio is unwanted."""
        if self.active is not None:
            self.interrupted.add(self.active)
        return self.active

    def count_audio(self, response_id: str, samples: int) -> None:
        if response_id in self.samples:
            self.samples[response_id] += samples

    def reset_connection(self) -> None:
        """The model connection was replaced: nothing is in flight on the new one."""
        self.active = None
        self.awaiting_created = False
        self.samples.clear()
