"""A local stand-in for the OpenAI REST API the cascade uses, over real HTTP.

Three endpoints, each the real wire shape, so the real ``openai`` SDK talks to it
through ``base_url`` and nothing in the cascade knows it is not OpenAI:

* ``POST /v1/chat/completions`` with ``stream: true``: Server-Sent Events of
  ``chat.completion.chunk`` objects (role delta, content deltas one word at a time,
  ``tool_calls`` deltas with the id and name first and the arguments in fragments,
  a ``finish_reason`` chunk, the usage chunk when ``stream_options.include_usage``,
  then ``data: [DONE]``).  Replies are chosen from the conversation by rules
  (substring of the last user or tool message -> reply), so they are deterministic.
* ``POST /v1/audio/speech`` with ``response_format: "pcm"``: streams PCM16LE 24 kHz
  made from the bundled clips.  The text is looked up in the clips' transcripts and
  the matching stretch of that clip is returned (proportional to its characters), so
  each sentence sounds like itself and lasts about as long as it would.
* ``POST /v1/audio/transcriptions`` (multipart): recognises the uploaded WAV as one
  of the bundled clips by its audio (``clip_recognition``) and returns its text.

Every endpoint has a configurable latency (first token, first byte, whole request)
so tests and benchmarks can show the cascade's pipelining, and a failure switch that
breaks the stream part-way through (the connection is dropped mid-body, like a
server crash), so error paths are tested against a real broken stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.parser
import email.policy
import hmac
import io
import itertools
import json
import re
import socket
import time
import warnings
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from bridge.config import Secret
from bridge.devtools.sim.clip_recognition import recognise, warm_up
from bridge.devtools.sim.clips import clip_names, clip_text, load_clip
from bridge.devtools.sim.realtime_audio import upsample_8k_to_24k

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["ChatRule", "OpenAIRestSimulator", "speech_for"]

#: A reply: text to say; ``{"tool_call": {"name": str, "arguments": dict | str}}``;
#: ``{"text": str, "fail_after_words": int}`` (the stream breaks after that many words);
#: ``{"status": int}`` (the request fails at once with that HTTP status).
ChatReply = str | dict[str, Any]

_SYNTH_MS_PER_CHAR = 65.0
_ids = itertools.count(1)


@dataclass(frozen=True)
class ChatRule:
    """Reply ``reply`` when the last user/tool message contains ``when`` (case-insensitive).

    ``when=""`` matches anything (a default); rules are tried in order."""

    when: str
    reply: ChatReply
    role: str = "user"


DEFAULT_RULES: tuple[ChatRule, ...] = (
    ChatRule("opening hours", clip_text("agent_reply")),
    ChatRule("bye", {"tool_call": {"name": "hang_up", "arguments": {"reason": "caller said bye"}}}),
    ChatRule("", clip_text("agent_goodbye"), role="tool"),
    ChatRule("goodbye", clip_text("agent_goodbye"), role="system"),
    ChatRule("", clip_text("agent_short")),
)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip()


def speech_for(text: str) -> bytes:
    """Mu-law 8 kHz audio for ``text``: the stretch of the clip whose transcript holds it.

    A text found in no transcript gets filler audio (looped ``agent_short``) lasting
    as long as a voice takes to say that many characters."""
    wanted = _norm(text)
    for name in clip_names():
        words = _norm(clip_text(name))
        at = words.find(wanted) if wanted else -1
        if at >= 0:
            audio = load_clip(name)
            start = round(len(audio) * at / len(words))
            end = round(len(audio) * (at + len(wanted)) / len(words))
            return audio[start:end] if at + len(wanted) < len(words) else audio[start:]
    filler = load_clip("agent_short")
    n = int(len(text) * _SYNTH_MS_PER_CHAR * 8)
    return (filler * (n // len(filler) + 1))[:n]


def _pcm24(ulaw: bytes) -> bytes:
    pcm8 = np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype="<i2")
    return upsample_8k_to_24k(pcm8).tobytes()


@dataclass
class RequestRecord:
    path: str
    body: dict[str, Any]
    at: float
    completed: bool = False


@dataclass
class _Failure:
    """A switch that breaks a stream after ``after`` units (words or bytes)."""

    after: int
    remaining: int = 1


class OpenAIRestSimulator:
    """Chat completions, speech and transcription stand-ins on 127.0.0.1.

    Args:
        rules: chat reply rules (see :class:`ChatRule`); default: the demo conversation.
        api_key: if set, requests must carry ``Authorization: Bearer <key>`` (else 401).
        chat_first_token_ms / chat_token_interval_ms: time to the first content (or
            tool-call) delta, then between deltas (one word each).
        speech_first_byte_ms / speech_chunk_ms / speech_chunk_interval_ms: time to the
            first audio bytes, then audio per chunk and time between chunks (default:
            10x faster than real time).
        transcription_latency_ms: time to answer a transcription request.
    """

    def __init__(
        self,
        rules: Sequence[ChatRule] | None = None,
        *,
        api_key: str | Secret | None = None,
        chat_first_token_ms: float = 300.0,
        chat_token_interval_ms: float = 2.0,
        speech_first_byte_ms: float = 150.0,
        speech_chunk_ms: int = 100,
        speech_chunk_interval_ms: float = 10.0,
        transcription_latency_ms: float = 150.0,
    ) -> None:
        self.rules = list(rules if rules is not None else DEFAULT_RULES)
        if isinstance(api_key, str):
            api_key = Secret(api_key)
        self._api_key = api_key if api_key else None
        self.chat_first_token_ms = chat_first_token_ms
        self.chat_token_interval_ms = chat_token_interval_ms
        self.speech_first_byte_ms = speech_first_byte_ms
        self.speech_chunk_ms = speech_chunk_ms
        self.speech_chunk_interval_ms = speech_chunk_interval_ms
        self.transcription_latency_ms = transcription_latency_ms
        self.chat_requests: list[RequestRecord] = []
        self.speech_requests: list[RequestRecord] = []
        self.transcription_requests: list[RequestRecord] = []
        self.unauthorised = 0
        self._speech_failure: _Failure | None = None
        self._speech_status: int | None = None
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self._port = 0
        self.app = Starlette(routes=[
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/audio/speech", self._speech, methods=["POST"]),
            Route("/v1/audio/transcriptions", self._transcriptions, methods=["POST"]),
        ])

    # -- lifecycle

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> None:
        await asyncio.to_thread(warm_up)  # build the clip fingerprints before the first call
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(self.app, log_level="warning", lifespan="off",
                                timeout_graceful_shutdown=1)
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.005)

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._task, 5)
        self._server = None

    async def __aenter__(self) -> OpenAIRestSimulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """What to pass to ``AsyncOpenAI(base_url=...)``."""
        return f"http://127.0.0.1:{self._port}/v1"

    # -- failure switches

    def fail_next_speech(self, *, after_bytes: int = 0, status: int | None = None) -> None:
        """Break the next speech stream after ``after_bytes`` of audio, or answer ``status``."""
        if status is not None:
            self._speech_status = status
        else:
            self._speech_failure = _Failure(after_bytes)

    # -- helpers

    def _denied(self, request: Request) -> Response | None:
        if self._api_key is None:
            return None
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.startswith("Bearer ") else ""
        if hmac.compare_digest(token.encode(), self._api_key.reveal().encode()):
            return None
        self.unauthorised += 1
        return _error(401, "Incorrect API key provided.", "invalid_request_error",
                      "invalid_api_key")

    def _choose(self, messages: list[dict[str, Any]]) -> ChatReply:
        last = messages[-1] if messages else {}
        role = last.get("role", "user")
        content = last.get("content") or ""
        if isinstance(content, list):
            content = " ".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
        if role == "system" and len(messages) > 1:
            # one-off instructions (greeting, tool filler): 'say exactly this: "..."'
            quoted = re.search(r'exactly this[^"]*("(?:[^"\\]|\\.)*")', str(content))
            if quoted:
                return str(json.loads(quoted.group(1)))
        for rule in self.rules:
            if rule.role == role and rule.when.lower() in str(content).lower():
                return rule.reply
        return clip_text("agent_short")

    # -- chat completions

    async def _chat(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        record = RequestRecord("/v1/chat/completions", body, time.monotonic())
        self.chat_requests.append(record)
        reply = self._choose(body.get("messages") or [])
        if isinstance(reply, dict) and "status" in reply:
            return _error(int(reply["status"]), "The server had an error.", "server_error", None)
        if not body.get("stream"):
            return _error(400, "this stand-in only streams", "invalid_request_error", None)
        return StreamingResponse(self._chat_stream(body, reply, record),
                                 media_type="text/event-stream")

    async def _chat_stream(self, body: dict[str, Any], reply: ChatReply,
                           record: RequestRecord) -> AsyncIterator[bytes]:
        cid = f"chatcmpl-sim{next(_ids)}"
        created = int(time.time())
        model = str(body.get("model", ""))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": "fp_sim",
                    "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                 "finish_reason": finish}]}
            return f"data: {json.dumps(data)}\n\n".encode()

        yield chunk({"role": "assistant", "content": "", "refusal": None})
        await asyncio.sleep(self.chat_first_token_ms / 1000)
        completion_tokens = 0
        fail_after: int | None = None
        if isinstance(reply, dict) and "tool_call" in reply:
            call = reply["tool_call"]
            args = call.get("arguments", {})
            args_text = args if isinstance(args, str) else json.dumps(args)
            call_id = f"call_sim{next(_ids)}"
            yield chunk({"tool_calls": [{"index": 0, "id": call_id, "type": "function",
                                         "function": {"name": call["name"], "arguments": ""}}]})
            for i in range(0, len(args_text), 8):
                await asyncio.sleep(self.chat_token_interval_ms / 1000)
                yield chunk({"tool_calls": [{"index": 0,
                                             "function": {"arguments": args_text[i:i + 8]}}]})
                completion_tokens += 2
            finish = "tool_calls"
        else:
            if isinstance(reply, dict):
                text = str(reply.get("text", ""))
                fail_after = reply.get("fail_after_words")
            else:
                text = reply
            words = re.findall(r"\S+\s*", text)
            for i, word in enumerate(words):
                if fail_after is not None and i >= fail_after:
                    raise ConnectionAbortedError("simulated chat failure mid-stream")
                if i:
                    await asyncio.sleep(self.chat_token_interval_ms / 1000)
                yield chunk({"content": word})
                completion_tokens += 1
            finish = "stop"
        yield chunk({}, finish)
        if (body.get("stream_options") or {}).get("include_usage"):
            prompt_tokens = sum(len(json.dumps(m)) // 4 for m in body.get("messages") or [])
            usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                     "total_tokens": prompt_tokens + completion_tokens,
                     "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                     "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0}}
            data = {"id": cid, "object": "chat.completion.chunk", "created": created,
                    "model": model, "choices": [], "usage": usage}
            yield f"data: {json.dumps(data)}\n\n".encode()
        yield b"data: [DONE]\n\n"
        record.completed = True

    # -- speech

    async def _speech(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        body = await request.json()
        record = RequestRecord("/v1/audio/speech", body, time.monotonic())
        self.speech_requests.append(record)
        if self._speech_status is not None:
            status, self._speech_status = self._speech_status, None
            return _error(status, "The server had an error.", "server_error", None)
        if body.get("response_format") != "pcm":
            return _error(400, "this stand-in only speaks pcm", "invalid_request_error", None)
        if not str(body.get("input", "")).strip():
            return _error(400, "input is empty", "invalid_request_error", None)
        failure, self._speech_failure = self._speech_failure, None
        pcm = _pcm24(speech_for(str(body["input"])))
        return StreamingResponse(self._speech_stream(pcm, failure, record),
                                 media_type="audio/pcm")

    async def _speech_stream(self, pcm: bytes, failure: _Failure | None,
                             record: RequestRecord) -> AsyncIterator[bytes]:
        await asyncio.sleep(self.speech_first_byte_ms / 1000)
        step = self.speech_chunk_ms * 48
        for i in range(0, len(pcm), step):
            if failure is not None and i >= failure.after:
                raise ConnectionAbortedError("simulated speech failure mid-stream")
            if i:
                await asyncio.sleep(self.speech_chunk_interval_ms / 1000)
            yield pcm[i:i + step]
        record.completed = True

    # -- transcription

    async def _transcriptions(self, request: Request) -> Response:
        if (denied := self._denied(request)) is not None:
            return denied
        raw = await request.body()
        fields, files = _multipart(request.headers.get("content-type", ""), raw)
        record = RequestRecord("/v1/audio/transcriptions",
                               {**fields, "file_bytes": len(files.get("file", b""))},
                               time.monotonic())
        self.transcription_requests.append(record)
        if "file" not in files or "model" not in fields:
            return _error(400, "file and model are required", "invalid_request_error", None)
        try:
            ulaw, seconds = _wav_to_ulaw(files["file"])
        except (wave.Error, EOFError, ValueError) as exc:
            return _error(400, f"could not decode the audio: {exc}", "invalid_request_error",
                          None)
        loop = asyncio.get_running_loop()
        due = record.at - time.monotonic() + loop.time() + self.transcription_latency_ms / 1000
        found = await asyncio.to_thread(recognise, ulaw)
        await asyncio.sleep(max(0.0, due - loop.time()))
        text = found.text if found.text is not None else f"(caller spoke {seconds:.1f} s)"
        record.completed = True
        if fields.get("response_format") == "text":
            return Response(text + "\n", media_type="text/plain")
        usage: dict[str, Any]
        if fields["model"].startswith("whisper"):
            usage = {"type": "duration", "seconds": round(seconds, 3)}
        else:
            audio_tokens = round(seconds * 10)
            usage = {"type": "tokens", "input_tokens": audio_tokens,
                     "input_token_details": {"audio_tokens": audio_tokens, "text_tokens": 0},
                     "output_tokens": len(text) // 4, "total_tokens": audio_tokens}
        return JSONResponse({"text": text, "usage": usage})


def _error(status: int, message: str, type_: str, code: str | None) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": type_, "param": None,
                                   "code": code}}, status_code=status)


def _multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """Parse multipart/form-data with the stdlib MIME parser: (text fields, file fields)."""
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    if not message.is_multipart():
        return fields, files
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if part.get_filename() is not None:
            files[name] = data
        else:
            fields[name] = data.decode("utf-8", "replace")
    return fields, files


def _wav_to_ulaw(data: bytes) -> tuple[bytes, float]:
    """A mono PCM16 WAV (any rate; 8 kHz is exact) as mu-law 8 kHz, and its duration."""
    with wave.open(io.BytesIO(data)) as w:
        frames = w.readframes(w.getnframes())
        rate, width, channels = w.getframerate(), w.getsampwidth(), w.getnchannels()
    if channels != 1 or width != 2:
        raise ValueError("expected mono 16-bit PCM")
    if rate != 8000:
        frames, _ = audioop.ratecv(frames, 2, 1, rate, 8000, None)
    return audioop.lin2ulaw(frames, 2), len(frames) / 2 / 8000

