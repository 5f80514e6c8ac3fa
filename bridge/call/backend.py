"""What a model backend is to the live driver.

A backend turns the core's ``ToModel`` actions into its own wire protocol and
its protocol back into the core's model events.  The Realtime API is one
backend (``bridge.realtime``); a cascade of STT, a chat LLM and TTS is another.
The core never knows which: barge-in, truncation, transcripts and tools are
written once against the events in ``bridge.core.events``.

A backend *connection* can be replaced mid-call (reconnect, rollover) without
the caller leg noticing, which is why opening one is separate from the backend.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal, Protocol

from bridge.core.actions import ToModel
from bridge.core.events import ModelEvent, ProtocolProblem
from bridge.core.stream import StreamInfo


class BackendUnavailable(Exception):
    """Opening a connection failed.  ``retry`` classifies it for the core:
    ``now`` (a dropped socket), ``backoff`` (5xx, rate limit) or ``never``
    (bad key, no quota, unknown model).  The message never holds a secret."""

    def __init__(
        self,
        detail: str,
        retry: Literal["now", "backoff", "never"] = "backoff",
        cause: str = "unreachable",
    ):
        super().__init__(detail)
        self.detail = detail
        self.retry = retry
        self.cause = cause


class ModelConnection(Protocol):
    """One open connection to a model backend, for one call."""

    def send(self, action: ToModel) -> bool:
        """Send ``action``, in order after every earlier one (queued if the transport is
        busy).  False means the queue is above its high-water mark: the driver should
        ``await drain()`` before feeding more caller audio.  Never raises: a broken
        connection ends ``events()``."""

    async def drain(self) -> None:
        """Wait until the transport accepts writes again (or has closed)."""

    def events(self) -> AsyncIterator[ModelEvent | ProtocolProblem]:
        """What the backend says, in order; ends after a final ``ModelDisconnected``.

        A wire backend sets ``last_frame`` to the frame each event was parsed from, so
        tapes can keep the frame itself; in-process backends leave it None."""

    async def close(self) -> None:
        """Close at once; idempotent.  ``events()`` then ends without a ``ModelDisconnected``."""


class ModelBackend(Protocol):
    """Opens connections for calls."""

    async def connect(self, info: StreamInfo) -> ModelConnection:
        """An open connection for this call; raises :class:`BackendUnavailable`."""
