"""The cascade as a :class:`~bridge.call.backend.ModelBackend`.

Construct once per process from :class:`~bridge.cascade.settings.CascadeSettings`
(``CascadeSettings.from_env()`` reads ``CASCADE_*``); ``connect`` opens one call's
STT stage and returns a connection that behaves like a Realtime session.  The LLM
and TTS are plain HTTPS requests made per response, so there is nothing of theirs
to open (or to fail) before the first turn.
"""

from __future__ import annotations

from bridge.cascade.connection import CascadeConnection
from bridge.cascade.settings import CascadeSettings
from bridge.core.stream import StreamInfo

__all__ = ["CascadeBackend"]


class CascadeBackend:
    def __init__(self, settings: CascadeSettings) -> None:
        self.settings = settings

    async def connect(self, info: StreamInfo) -> CascadeConnection:
        """An open connection; raises :class:`~bridge.call.backend.BackendUnavailable`."""
        connection = CascadeConnection(self.settings)
        try:
            await connection.open()
        except BaseException:
            await connection.close()
            raise
        return connection
