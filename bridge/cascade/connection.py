"""One call's cascade: STT -> chat LLM -> TTS, behaving like a Realtime server.

The call core treats every backend as the Realtime API, so this connection emits
the events a Realtime server would, in the order it would:

* caller audio goes to the STT; its VAD gives ``SpeechStarted`` / ``SpeechStopped``
  and its final transcript ``CallerTranscribed`` (server-VAD ``create_response``:
  a non-empty transcript starts a response);
* a response is ``ResponseStarted``, then the LLM streams; each finished piece of
  text (``sentences``) is sent to TTS at once, while the LLM keeps writing, and the
  pieces play in order: ``AgentTextDelta`` when a piece starts, ``AgentAudio``
  (mu-law 8 kHz from the project's streaming resampler), then ``AgentAudioDone``,
  ``AgentTextDone``, any ``ToolCallRequested``, and ``ResponseFinished`` with the
  usage per stage and the latency breakdown;
* caller speech during a response cancels it like ``interrupt_response=true``:
  the LLM and TTS streams are closed, no more audio is emitted, and the response
  finishes ``cancelled``; the core's ``TruncateItem`` then cuts the agent's turn in
  the history to what the caller heard (``heard``), answered by ``AgentItemTruncated``
  with those words, so the call's stored transcript line says the same;
* a stage failing mid-response ends the response ``failed`` with a
  ``ModelErrorReported`` first, after the audio already synthesised has gone out
  and then the bridge's bundled apology prompt, so the caller never gets silence.

Everything runs on the event loop of the call; nothing blocks it (the resampler
works on ~100 ms chunks in microseconds).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import logging
import time
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any

from openai import AsyncOpenAI, omit

from bridge.audio.mulaw import pcm16_to_ulaw
from bridge.audio.prompts import bundled_prompt
from bridge.audio.resampler import Downsampler
from bridge.cascade.heard import SpokenPiece, heard_text
from bridge.cascade.history import add_tool_output, chat_messages
from bridge.cascade.sentences import SentenceSplitter
from bridge.cascade.settings import CascadeSettings
from bridge.cascade.speech import END, SpeechPiece
from bridge.cascade.stt import SttClient
from bridge.cascade.stt_realtime import RealtimeStt
from bridge.cascade.stt_rest import RestStt
from bridge.cascade.tool_format import chat_tools
from bridge.cascade.turn_metrics import StageUsage, TurnClock
from bridge.core.actions import (
    AddAgentText,
    AddToolCall,
    AddToolOutput,
    AddUserText,
    AppendAudio,
    CancelResponse,
    ConfigureSession,
    CreateResponse,
    ToModel,
    TruncateItem,
)
from bridge.core.events import (
    AgentAudio,
    AgentAudioDone,
    AgentItemTruncated,
    AgentTextDelta,
    AgentTextDone,
    CallerTranscribed,
    ModelDisconnected,
    ModelErrorReported,
    ModelEvent,
    ProtocolProblem,
    ResponseFinished,
    ResponseStarted,
    SessionConfigured,
    SpeechStarted,
    SpeechStopped,
    ToolCallRequested,
)

__all__ = ["CascadeConnection", "StageClients"]

log = logging.getLogger("bridge.cascade")

_ids = itertools.count(1)
_DEFAULT_MS_PER_CHAR = 60.0
_PCMU = "audio/pcmu"


#: What the bundled ``apology`` prompt says (its transcript ships beside it).
APOLOGY_TEXT: str = json.loads(
    resources.files("bridge.audio").joinpath("clips", "clips.json").read_text("utf-8")
)["apology"]
_APOLOGY_CHUNK = 800  # 100 ms of mu-law per AgentAudio, like a TTS chunk


def _new_id(prefix: str) -> str:
    return f"{prefix}_cascade{next(_ids):06d}"


class _StageFailed(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass
class _AgentItem:
    """An agent turn in the history, with its audio timeline for truncation."""

    message: dict[str, Any]
    pieces: list[SpokenPiece]


@dataclass
class _Response:
    id: str
    item_id: str
    instructions: str | None
    clock: TurnClock
    usage: StageUsage
    task: asyncio.Task[None] | None = None
    cancel_reason: str | None = None
    pieces: list[SpeechPiece] = field(default_factory=list)
    spoken: list[SpokenPiece] = field(default_factory=list)
    current: tuple[str, int] | None = None  # piece being played: (text, start sample)
    samples_out: int = 0
    tool_calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    truncate_ms: int | None = None


@dataclass
class _Request:
    instructions: str | None
    speech_stopped: float | None = None
    transcript: float | None = None


class CascadeConnection:
    """A :class:`~bridge.call.backend.ModelConnection` for one call (see module docstring)."""

    def __init__(self, settings: CascadeSettings, stt: SttClient | None = None, *,
                 clients: StageClients | None = None) -> None:
        self.settings = settings
        self._secrets = [s.reveal() for s in (settings.stt.api_key, settings.llm.api_key,
                                               settings.tts.api_key) if s]
        self._own_clients = clients is None
        self._clients = clients or StageClients(settings)
        self._llm = self._clients.llm
        self._tts = self._clients.tts
        if stt is not None:
            self._stt: SttClient = stt
        elif settings.stt.mode == "rest":
            self._stt = RestStt(settings.stt, self)
        else:
            self._stt = RealtimeStt(settings.stt, self)
        self._events: asyncio.Queue[ModelEvent | ProtocolProblem | None] = asyncio.Queue()
        #: no wire frames to keep in tapes: the events are made here, not parsed
        self.last_frame: str | bytes | None = None
        self._audio_mode = "passthrough"
        self._instructions = ""
        self._voice = settings.tts.voice or "marin"
        self._tools: list[dict[str, Any]] = []
        self._create_response = True
        self._interrupt_response = True
        self._history: list[dict[str, Any]] = []
        self._items: dict[str, _AgentItem] = {}
        self._response: _Response | None = None
        self._pending: list[_Request] = []
        self._stt_seconds = 0.0
        self._speech_stopped_at: float | None = None
        self._closed = False

    async def open(self) -> None:
        """Open the STT stage (the only one with a long-lived connection)."""
        await self._stt.open()

    # -- ModelConnection

    def send(self, action: ToModel) -> bool:
        if self._closed:
            return True
        if isinstance(action, AppendAudio):
            return self._stt.append(action.payload)
        if isinstance(action, ConfigureSession):
            self._configure(action)
        elif isinstance(action, AddUserText):
            self._history.append({"role": "user", "content": action.text})
        elif isinstance(action, AddAgentText):
            self._history.append({"role": "assistant", "content": action.text})
        elif isinstance(action, AddToolCall):
            self._history.append({"role": "assistant", "content": None, "tool_calls": [
                {"id": action.call_id, "type": "function",
                 "function": {"name": action.name, "arguments": action.arguments}}]})
        elif isinstance(action, AddToolOutput):
            add_tool_output(self._history, action.call_id, action.output)
        elif isinstance(action, TruncateItem):
            self._truncate(action.item_id, action.audio_end_ms)
        elif isinstance(action, CreateResponse):
            if self._response is not None:
                self._emit(ModelErrorReported(
                    "conversation_already_has_active_response",
                    f"Conversation already has an active response in progress: "
                    f"{self._response.id}. Wait until the response is finished before "
                    "creating a new one."))
            else:
                self._start(_Request(action.instructions))
        elif isinstance(action, CancelResponse):
            if self._response is None:
                self._emit(ModelErrorReported("response_cancel_not_active",
                                              "Cancellation failed: no active response found"))
            else:
                self._cancel(self._response, "client_cancelled")
        return True

    async def drain(self) -> None:
        await self._stt.drain()

    async def events(self) -> Any:
        while True:
            event = await self._events.get()
            if event is None:
                return
            yield event
            if isinstance(event, ModelDisconnected):
                return

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self._stop_response()
        await self._stt.close()
        if self._own_clients:
            await self._clients.close()
        self._events.put_nowait(None)

    # -- introspection (tests, console)

    @property
    def history(self) -> list[dict[str, Any]]:
        """The conversation as the next LLM request will see it (without the system prompt)."""
        return list(self._history)

    # -- STT listener

    def stt_configured(self) -> None:
        mismatch = None
        if self._audio_mode != "passthrough":
            mismatch = (f"the cascade backend speaks audio/pcmu only, the call needs "
                        f"audio_mode={self._audio_mode!r}: use BRIDGE_AUDIO=passthrough")
        self._emit(SessionConfigured(input_format=_PCMU, output_format=_PCMU,
                                     mismatch=mismatch))

    def stt_speech_started(self, item_id: str, audio_start_ms: int) -> None:
        self._emit(SpeechStarted(item_id=item_id, audio_start_ms=audio_start_ms))
        if self._response is not None and self._interrupt_response:
            self._cancel(self._response, "turn_detected")
        self._pending.clear()

    def stt_speech_stopped(self, item_id: str, audio_end_ms: int, audio_seconds: float) -> None:
        self._speech_stopped_at = time.monotonic()
        self._stt_seconds += audio_seconds
        self._emit(SpeechStopped(item_id=item_id, audio_end_ms=audio_end_ms))

    def stt_transcript(self, item_id: str, text: str) -> None:
        now = time.monotonic()
        self._emit(CallerTranscribed(item_id=item_id, text=text))
        if not text:
            return  # noise or a failed transcription: nothing for the LLM to answer
        self._history.append({"role": "user", "content": text})
        if self._create_response:
            request = _Request(None, self._speech_stopped_at, now)
            if self._response is None:
                self._start(request)
            else:
                self._pending.append(request)

    def stt_failed(self, detail: str, code: int | None = None, fatal: bool = True) -> None:
        detail = self._scrub(detail)
        if not fatal:
            self._emit(ModelErrorReported("stt_failed", detail))
            return
        if self._closed:
            return
        self._closed = True
        asyncio.get_running_loop().create_task(self._end_after_stt_loss(code, detail))

    async def _end_after_stt_loss(self, code: int | None, detail: str) -> None:
        await self._stop_response()
        self._events.put_nowait(ModelDisconnected(code=code, detail=f"stt: {detail}"))
        await self._stt.close()
        if self._own_clients:
            await self._clients.close()

    # -- session

    def _configure(self, action: ConfigureSession) -> None:
        agent = action.agent
        self._instructions = str(getattr(agent, "instructions", "") or "")
        self._voice = self.settings.tts.voice or str(getattr(agent, "voice", "") or "marin")
        self._tools = chat_tools(action.tools)
        td = getattr(agent, "turn_detection", None)
        if td is not None:
            self._create_response = bool(td.create_response)
            self._interrupt_response = bool(td.interrupt_response)
            stt_settings = replace(self._stt_settings(), vad_threshold=td.threshold,
                                   silence_duration_ms=td.silence_duration_ms,
                                   prefix_padding_ms=td.prefix_padding_ms)
            if isinstance(self._stt, RealtimeStt | RestStt):
                self._stt.settings = stt_settings
        self._audio_mode = action.audio_mode
        self._stt.configure()

    def _stt_settings(self) -> Any:
        return getattr(self._stt, "settings", self.settings.stt)

    # -- responses

    def _start(self, request: _Request) -> None:
        clock = TurnClock(response_started=time.monotonic(),
                          speech_stopped=request.speech_stopped, transcript=request.transcript)
        usage = StageUsage(stt_model=self.settings.stt.model, llm_model=self.settings.llm.model,
                           tts_model=self.settings.tts.model)
        resp = _Response(_new_id("resp"), _new_id("item"), request.instructions, clock, usage)
        self._response = resp
        self._emit(ResponseStarted(resp.id))
        resp.task = asyncio.get_running_loop().create_task(self._run(resp))

    def _cancel(self, resp: _Response, reason: str) -> None:
        if resp.cancel_reason is None and resp.task is not None:
            resp.cancel_reason = reason
            resp.task.cancel()

    async def _stop_response(self) -> None:
        """Cancel the response without any further event (the connection is ending)."""
        resp = self._response
        if resp is not None and resp.task is not None:
            resp.task.cancel()
            with contextlib.suppress(BaseException):
                await resp.task

    async def _run(self, resp: _Response) -> None:
        status = "completed"
        try:
            await self._generate(resp)
        except asyncio.CancelledError:
            if self._closed or resp.cancel_reason is None:
                raise
            status = "cancelled"
        except _StageFailed as exc:
            status = "failed"
            self._apologise(resp)
            self._emit(ModelErrorReported(exc.code, self._scrub(exc.message)))
        finally:
            for piece in resp.pieces:
                await piece.cancel()
        self._settle(resp, status)

    def _apologise(self, resp: _Response) -> None:
        """A stage broke mid-response: after what was already said, the bridge's own
        apology prompt (audio it owns, so no stage is needed to say it), so the caller
        hears why the agent stopped instead of silence.  It joins the turn's spoken
        pieces, so the history and the transcript say what the caller heard."""
        audio = bundled_prompt("apology")
        start = resp.samples_out
        delta = APOLOGY_TEXT if not resp.spoken else " " + APOLOGY_TEXT
        self._emit(AgentTextDelta(resp.item_id, delta))
        for at in range(0, len(audio), _APOLOGY_CHUNK):
            self._emit_audio(resp, audio[at:at + _APOLOGY_CHUNK])
        resp.spoken.append(SpokenPiece(APOLOGY_TEXT, start / 8, (resp.samples_out - start) / 8))

    async def _generate(self, resp: _Response) -> None:
        queue: asyncio.Queue[SpeechPiece | None] = asyncio.Queue()
        writer = asyncio.create_task(self._write(resp, queue))
        player = asyncio.create_task(self._play(resp, queue))
        try:
            await asyncio.wait({writer, player}, return_when=asyncio.FIRST_EXCEPTION)
            if player.done() and player.exception() is not None:
                writer.cancel()
                player.result()
            await player  # the LLM failed: what it had written still plays first
            writer.result()
        finally:
            for task in (writer, player):
                task.cancel()
            for task in (writer, player):
                with contextlib.suppress(BaseException):
                    await task

    async def _write(self, resp: _Response, queue: asyncio.Queue[SpeechPiece | None]) -> None:
        """The LLM stream, cut into pieces that go to TTS as soon as they are complete."""
        llm = self.settings.llm
        splitter = SentenceSplitter()
        try:
            stream = await self._llm.chat.completions.create(  # type: ignore[call-overload]
                model=llm.model, stream=True, stream_options={"include_usage": True},
                messages=chat_messages(self._instructions, self._history,
                                       resp.instructions),
                tools=self._tools or omit,
                temperature=llm.temperature if llm.temperature is not None else omit,
                max_tokens=llm.max_tokens if llm.max_tokens is not None else omit)
            try:
                async for chunk in stream:
                    if chunk.usage is not None:
                        resp.usage.llm_prompt_tokens = chunk.usage.prompt_tokens
                        resp.usage.llm_completion_tokens = chunk.usage.completion_tokens
                        details = chunk.usage.prompt_tokens_details
                        resp.usage.llm_cached_tokens = (details.cached_tokens or 0
                                                        if details else 0)
                    for choice in chunk.choices:
                        delta = choice.delta
                        if delta.content:
                            self._first_token(resp)
                            for piece in splitter.feed(delta.content):
                                self._speak(resp, piece, queue)
                        for call in delta.tool_calls or ():
                            self._first_token(resp)
                            slot = resp.tool_calls.setdefault(
                                call.index, {"id": "", "name": "", "arguments": ""})
                            if call.id:
                                slot["id"] = call.id
                            if call.function and call.function.name:
                                slot["name"] += call.function.name
                            if call.function and call.function.arguments:
                                slot["arguments"] += call.function.arguments
            finally:
                await stream.close()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # transport or API failure: say what, never the key
            queue.put_nowait(None)
            raise _StageFailed("llm_failed", f"chat completion failed: "
                               f"{type(exc).__name__}: {exc}") from None
        rest = splitter.flush()
        if rest:
            self._speak(resp, rest, queue)
        queue.put_nowait(None)

    def _first_token(self, resp: _Response) -> None:
        if resp.clock.first_token is None:
            resp.clock.first_token = time.monotonic()

    def _speak(self, resp: _Response, text: str,
               queue: asyncio.Queue[SpeechPiece | None]) -> None:
        piece = SpeechPiece(self._tts, self.settings.tts, self._voice, text)
        resp.pieces.append(piece)
        resp.usage.tts_characters += len(text)
        queue.put_nowait(piece)

    async def _play(self, resp: _Response, queue: asyncio.Queue[SpeechPiece | None]) -> None:
        """Pieces in order, as mu-law, each the moment its audio arrives."""
        down = Downsampler()
        while (piece := await queue.get()) is not None:
            start = resp.samples_out
            started = False
            while (chunk := await piece.chunks.get()) is not END:
                if isinstance(chunk, BaseException):
                    resp.current = None
                    if resp.samples_out > start:
                        resp.spoken.append(SpokenPiece(piece.text, start / 8,
                                                       (resp.samples_out - start) / 8))
                    raise _StageFailed("tts_failed", f"speech synthesis failed: "
                                       f"{type(chunk).__name__}: {chunk}")
                if resp.clock.first_tts_audio is None:
                    resp.clock.first_tts_audio = time.monotonic()
                ulaw = pcm16_to_ulaw(down.process(chunk))
                if not ulaw:
                    continue
                if not started:
                    started = True
                    resp.current = (piece.text, start)
                    delta = piece.text if not resp.spoken else " " + piece.text
                    self._emit(AgentTextDelta(resp.item_id, delta))
                self._emit_audio(resp, ulaw)
            resp.current = None
            if resp.samples_out > start:
                resp.spoken.append(SpokenPiece(piece.text, start / 8,
                                               (resp.samples_out - start) / 8))
        if resp.samples_out:
            # the resampler's last ~3 ms, so the item's audio is complete
            tail = pcm16_to_ulaw(down.process(bytes(2 * 3 * (int(down.delay_ms * 8) + 1))))
            if tail:
                self._emit_audio(resp, tail)

    def _emit_audio(self, resp: _Response, ulaw: bytes) -> None:
        if resp.clock.first_audio_out is None:
            resp.clock.first_audio_out = time.monotonic()
        resp.samples_out += len(ulaw)
        self._emit(AgentAudio(resp.item_id, resp.id, base64.b64encode(ulaw).decode("ascii"),
                              samples=len(ulaw), content_index=0))

    def _settle(self, resp: _Response, status: str) -> None:
        """The response's last events, and its place in the history."""
        if resp.current is not None:  # cut off mid-piece (cancelled)
            resp.spoken.append(self._partial_piece(resp, *resp.current))
        text = " ".join(p.text for p in resp.spoken)
        # No longer the active response: a truncation held for it (it arrived while the
        # response was being cancelled) must now cut the settled item, not wait again.
        self._response = None
        if resp.samples_out:
            self._emit(AgentAudioDone(resp.item_id))
            self._emit(AgentTextDone(resp.item_id, text))
        calls = ([c for _, c in sorted(resp.tool_calls.items())]
                 if status == "completed" else [])
        if text or calls:
            message: dict[str, Any] = {"role": "assistant", "content": text or None}
            if calls:
                message["tool_calls"] = [
                    {"id": c["id"], "type": "function",
                     "function": {"name": c["name"], "arguments": c["arguments"]}}
                    for c in calls]
            self._history.append(message)
            if resp.spoken:
                self._items[resp.item_id] = _AgentItem(message, resp.spoken)
                if resp.truncate_ms is not None:
                    self._truncate(resp.item_id, resp.truncate_ms)
        for c in calls:
            self._emit(ToolCallRequested(c["id"], c["name"], c["arguments"], resp.id))
        resp.usage.stt_audio_seconds = self._stt_seconds
        self._stt_seconds = 0.0
        resp.usage.tts_audio_seconds = resp.samples_out / 8000
        usage = resp.usage.as_dict(resp.clock)
        if resp.cancel_reason is not None and status == "cancelled":
            usage["cancel_reason"] = resp.cancel_reason
        self._emit(ResponseFinished(resp.id, status, usage))
        if self._pending and not self._closed:
            self._start(self._pending.pop(0))

    def _partial_piece(self, resp: _Response, text: str, start: int) -> SpokenPiece:
        """A piece cut off while streaming: its full length estimated from this turn's
        speaking rate (whole pieces), so the heard fraction maps to the right words."""
        chars = sum(len(p.text) for p in resp.spoken)
        rate = (sum(p.duration_ms for p in resp.spoken) / chars) if chars else \
            _DEFAULT_MS_PER_CHAR
        sent_ms = (resp.samples_out - start) / 8
        return SpokenPiece(text, start / 8, max(sent_ms, rate * len(text)))

    def _truncate(self, item_id: str, audio_end_ms: int) -> None:
        if self._response is not None and self._response.item_id == item_id:
            self._response.truncate_ms = audio_end_ms  # applied when it settles
            return
        item = self._items.get(item_id)
        if item is None:
            self._emit(ModelErrorReported("item_truncate_invalid_item_id",
                                          f"Item with item_id not found: {item_id}"))
            return
        heard = heard_text(item.pieces, audio_end_ms)
        if heard or item.message.get("tool_calls"):
            item.message["content"] = heard or None
        else:
            with contextlib.suppress(ValueError):
                self._history.remove(item.message)
        item.pieces = [p for p in item.pieces if p.start_ms < audio_end_ms]
        # Like the Realtime API's conversation.item.truncated, with the words kept: the
        # core's stored transcript line becomes exactly what the LLM will be told.
        self._emit(AgentItemTruncated(item_id, heard))

    # -- helpers

    def _emit(self, event: ModelEvent) -> None:
        if not self._closed:
            self._events.put_nowait(event)

    def _scrub(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text


def _key(secret: Any) -> str:
    """The SDK needs some key; local OpenAI-compatible servers often need none."""
    return secret.reveal() if secret else "unused"


class StageClients:
    """The LLM and TTS HTTP clients, shareable by every call of a process.

    Why share: each client keeps a pool of keep-alive connections, so a call's first
    turn does not pay a TCP (and TLS) handshake to each stage; and the SDK imports
    its resources lazily, which costs tens of milliseconds the first time, so they
    are touched here, at start-up, instead of inside a caller's first turn."""

    def __init__(self, settings: CascadeSettings) -> None:
        self.llm = AsyncOpenAI(api_key=_key(settings.llm.api_key),
                               base_url=settings.llm.base_url, max_retries=0,
                               timeout=settings.llm.request_timeout_s)
        self.tts = AsyncOpenAI(api_key=_key(settings.tts.api_key),
                               base_url=settings.tts.base_url, max_retries=0,
                               timeout=settings.tts.request_timeout_s)
        _ = (self.llm.chat.completions, self.tts.audio.speech.with_streaming_response)

    async def close(self) -> None:
        await self.llm.close()
        await self.tts.close()
