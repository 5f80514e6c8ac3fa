"""The cascade as a :class:`~bridge.call.backend.ModelBackend`.

Construct once per process from :class:`~bridge.cascade.settings.CascadeSettings`
(``CascadeSettings.from_env()`` reads ``CASCADE_*``); ``connect`` opens one call's
STT stage and returns a connection that behaves like a Realtime session.  The LLM
and TTS are plain HTTPS requests made per response, so there is nothing of theirs
to open (or to fail) before the first turn.
"""

from __future__ import annotations

from bridge.cascade.connection import CascadeConnection, StageClients
from bridge.cascade.settings import CascadeSettings
from bridge.core.stream import StreamInfo

__all__ = ["CascadeBackend"]


class CascadeBackend:
    """Opens cascade connections; the LLM and TTS clients are shared by all of them
    (keep-alive pools), so close the backend with :meth:`aclose` at shutdown."""

    def __init__(self, settings: CascadeSettings) -> None:
        self.settings = settings
        self._clients: StageClients | None = None

    async def connect(self, info: StreamInfo) -> CascadeConnection:
        """An open connection; raises :class:`~bridge.call.backend.BackendUnavailable`."""
        if self._clients is None:
            self._clients = StageClients(self.settings)
        connection = CascadeConnection(self.settings, clients=self._clients)
        try:
            await connection.open()
        except BaseException:
            await connection.close()
            raise
        return connection

    async def aclose(self) -> None:
        """Close the shared HTTP clients (after the last call)."""
        if self._clients is not None:
            await self._clients.close()
            self._clients = None
