"""Drive a cascade connection the way the call core does, against the local stand-ins.

Not a test module: the fixtures and helpers the cascade tests share.  Everything
runs over real sockets on 127.0.0.1: the OpenAI REST stand-in (chat, speech,
transcription) and the Realtime transcription-session stand-in, reached through
the real ``openai`` SDK and ``websockets``.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.cascade.connection import CascadeConnection
from bridge.cascade.settings import CascadeSettings, LlmSettings, SttSettings, TtsSettings
from bridge.config import AgentConfig, Secret
from bridge.core.actions import AppendAudio, ConfigureSession, ToModel
from bridge.core.events import ModelEvent, ProtocolProblem
from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.openai_rest import OpenAIRestSimulator
from bridge.devtools.sim.realtime_transcription import TranscriptionSimulator

KEY = "sk-cascade-test-secret-0123456789"
HANG_UP_TOOL = {
    "type": "function",
    "name": "hang_up",
    "description": "End the call after saying goodbye.",
    "parameters": {"type": "object", "properties": {"reason": {"type": "string"}},
                   "required": ["reason"]},
}
FRAME = 160  # 20 ms of mu-law


def settings_for(rest: OpenAIRestSimulator, stt: TranscriptionSimulator | None, *,
                 mode: str = "realtime", key: str = KEY) -> CascadeSettings:
    secret = Secret(key)
    return CascadeSettings(
        stt=SttSettings(mode=mode,  # type: ignore[arg-type]
                        model="gpt-4o-mini-transcribe" if mode == "realtime" else "whisper-1",
                        realtime_url=stt.url if stt else "ws://127.0.0.1:9/v1/realtime",
                        base_url=rest.base_url, api_key=secret, open_timeout_s=3),
        llm=LlmSettings(model="gpt-4.1-mini", base_url=rest.base_url, api_key=secret),
        tts=TtsSettings(model="gpt-4o-mini-tts", base_url=rest.base_url, api_key=secret),
    )


@dataclass
class Seen:
    event: ModelEvent | ProtocolProblem
    at: float


@dataclass
class Driver:
    """Sends actions like the core; records every event with its arrival time."""

    conn: CascadeConnection
    seen: list[Seen] = field(default_factory=list)
    _task: asyncio.Task[None] | None = None
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._collect())

    async def _collect(self) -> None:
        async for event in self.conn.events():
            self.seen.append(Seen(event, time.monotonic()))
            self._changed.set()
        self.ended = True
        self._changed.set()

    def send(self, action: ToModel) -> None:
        self.conn.send(action)

    def events(self, kind: type | None = None) -> list[Any]:
        return [s.event for s in self.seen if kind is None or isinstance(s.event, kind)]

    def first(self, kind: type, pred: Callable[[Any], bool] = lambda e: True) -> Seen | None:
        for s in self.seen:
            if isinstance(s.event, kind) and pred(s.event):
                return s
        return None

    async def wait_for(self, kind: type, pred: Callable[[Any], bool] = lambda e: True,
                       timeout: float = 10.0, count: int = 1) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            hits = [s.event for s in self.seen if isinstance(s.event, kind) and pred(s.event)]
            if len(hits) >= count:
                return hits[count - 1]
            if self.ended:
                raise AssertionError(f"events ended before {kind.__name__}: {self.kinds()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"no {kind.__name__} within {timeout}s: {self.kinds()}")
            self._changed.clear()
            with _suppress_timeout():
                await asyncio.wait_for(self._changed.wait(), left)

    def kinds(self) -> list[str]:
        return [type(s.event).__name__ for s in self.seen]

    async def close(self) -> None:
        await self.conn.close()
        if self._task is not None:
            self._task.cancel()


class _suppress_timeout:
    def __enter__(self) -> None:
        return None

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        return exc_type is TimeoutError


async def open_driver(settings: CascadeSettings, *, tools: tuple[dict[str, Any], ...] = (
        HANG_UP_TOOL,), agent: AgentConfig | None = None) -> Driver:
    conn = CascadeConnection(settings)
    await conn.open()
    driver = Driver(conn)
    driver.start()
    driver.send(ConfigureSession(agent=agent or AgentConfig(instructions="You are Acme's desk.",
                                                            voice="marin"),
                                 audio_mode="passthrough", model="cascade", tools=tools))
    return driver


async def say(driver: Driver, clip: str | None, *, silence_ms: int = 800,
              pace_s: float = 0.0) -> None:
    """Append a clip then silence, in 20 ms frames (as fast as allowed, or paced)."""
    audio = (load_clip(clip) if clip else b"") + b"\xff" * (silence_ms * 8)
    for i in range(0, len(audio), FRAME):
        driver.send(AppendAudio(base64.b64encode(audio[i:i + FRAME]).decode()))
        if pace_s:
            await asyncio.sleep(pace_s)
        elif i % (FRAME * 10) == 0:
            await asyncio.sleep(0)
