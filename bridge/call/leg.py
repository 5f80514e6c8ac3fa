"""What a caller leg is to the live driver.

A caller leg is the phone side of a call: Twilio Media Streams today, a browser
softphone next.  It delivers caller audio, key presses and playback
acknowledgements (``mark`` echoes), and accepts play, mark and clear.  A leg that
honours that playback contract exactly (queued playback, marks echoed when
reached, ``clear`` flushing pending marks) gets barge-in and heard-accurate
truncation from the core unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol, runtime_checkable

from bridge.core.actions import Action, ToCaller
from bridge.core.events import CallerEvent, ProtocolProblem


class CallerSocket(Protocol):
    """One accepted caller WebSocket, as the driver sees it."""

    close_detail: str
    """Why it closed (``close code 1000``...), set before ``receive()`` returns None."""

    async def receive(self) -> str | bytes | None:
        """The next text or binary frame; None once the socket has closed."""

    async def send(self, text: str) -> None:
        """Write a text frame.  Never raises: a broken socket shows up in ``receive()``."""

    def send_now(self, text: str) -> bool:
        """Write without awaiting if the transport is not paused; False: await ``send``."""

    async def close(self, code: int = 1000, reason: str = "") -> None:
        """Close the socket; idempotent."""

    @property
    def is_open(self) -> bool: ...


@runtime_checkable
class PushCallerSocket(CallerSocket, Protocol):
    """A caller socket that can hand each message to the driver as it is parsed.

    The driver then needs no reader task: no future and no wake-up per message, which
    at 50 frames per second per call is a measurable share of the CPU.  ``receive()``
    is not used once ``deliver_to`` has been called."""

    def deliver_to(self, handler: Callable[[str | bytes | None], None]) -> None:
        """Every later message goes to ``handler`` as parsed, then None once at the end."""

    def pause_reading(self) -> None:
        """Stop reading from the network until :meth:`resume_reading` (backpressure)."""

    def resume_reading(self) -> None: ...

    def flush(self) -> None:
        """Write what ``send_now`` queued at once (such sockets join the writes of one
        loop iteration into one system call; the driver flushes after each model event
        so the caller does not wait for the iteration's other callbacks)."""


class CallerProtocol(Protocol):
    """A leg's wire protocol: parse what the caller sends, write what the core says."""

    name: str
    """Which leg this is (``twilio``, ``browser``): for records and the console."""

    def parse(self, frame: str | bytes) -> CallerEvent | ProtocolProblem:
        """One frame as an event; garbage becomes a ``ProtocolProblem``, never an exception."""

    def serialise(self, action: ToCaller) -> str:
        """The frame for one caller action."""

    def observe(self, action: Action) -> str | None:
        """A frame telling the caller about another action (transcripts, timeline), or
        None.  Twilio's leg sends nothing; a browser shows transcripts this way."""
