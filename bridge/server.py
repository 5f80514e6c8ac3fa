"""Running the app under uvicorn with a graceful drain on SIGTERM.

Uvicorn's own shutdown closes the listening socket at once, so a webhook
arriving during a deploy would get "connection refused".  Here the first
SIGTERM/SIGINT only starts draining: the webhook answers 503 (Twilio then
uses the number's fallback URL), ``/healthz`` answers 503 (load balancers
take the instance out), and live calls continue for up to the grace period.
Calls still running then are ended cleanly, and uvicorn shuts down.  A second
signal stops at once.
"""

from __future__ import annotations

import asyncio
import logging
from types import FrameType

import uvicorn
from starlette.applications import Starlette

log = logging.getLogger("bridge")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette, grace_s: float) -> None:
        super().__init__(config)
        self.app = app
        self.grace_s = grace_s
        self._drain: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        services = getattr(self.app.state, "services", None)
        if self._drain is not None or services is None or not self.started:
            super().handle_exit(sig, frame)
            return
        log.info(
            "draining: refusing new calls, %d live call(s) may run for %.0f s",
            len(services.active),
            self.grace_s,
        )
        services.draining = True
        self._drain = asyncio.get_event_loop().create_task(self._drain_then_exit())

    async def _drain_then_exit(self) -> None:
        await self.app.state.services.drain(self.grace_s)
        self.should_exit = True


def serve(app: Starlette, *, host: str, port: int, grace_s: float, **options: object) -> None:
    config = uvicorn.Config(app, host=host, port=port, **options)  # type: ignore[arg-type]
    DrainingServer(config, app, grace_s).run()
