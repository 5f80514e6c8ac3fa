"""A Starlette (ASGI) WebSocket as the relay's ``CallerSocket``."""

from __future__ import annotations

import contextlib

from starlette.websockets import WebSocket, WebSocketState


class AsgiCallerSocket:
    """Adapts an accepted Starlette WebSocket; ASGI has no synchronous send."""

    def __init__(self, websocket: WebSocket) -> None:
        self.websocket = websocket
        self.close_detail = ""
        self._open = True

    async def receive(self) -> str | bytes | None:
        if not self._open:
            return None
        try:
            message = await self.websocket.receive()
        except Exception as exc:  # noqa: BLE001 - the socket broke under us
            self._open = False
            self.close_detail = exc.__class__.__name__
            return None
        if message["type"] != "websocket.receive":
            self._open = False
            self.close_detail = f"close code {message.get('code')}"
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    def send_now(self, text: str) -> bool:
        return False

    async def send(self, text: str) -> None:
        if not self._open:
            return
        try:
            await self.websocket.send_text(text)
        except Exception:  # noqa: BLE001 - receive() reports the close
            self._open = False

    async def close(self, code: int = 1000, reason: str = "") -> None:
        self._open = False
        if self.websocket.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self.websocket.close(code=code, reason=reason)

    @property
    def is_open(self) -> bool:
        return self._open
