"""``replay --live``: play a tape against a running bridge over real sockets.

The offline replay proves the core; this mode smoke-tests a *deployment*
(TLS, proxies, the ASGI server, the relay, configuration) with a recorded call:

* the Twilio side: the tape's Twilio frames are sent to the bridge's Media
  Streams URL at their recorded times (the upgrade is signed and a fresh stream
  token minted when the auth token is known, since the tape's token is redacted);
* the model side: a small WebSocket server stands in for the Realtime API.  For
  each client event it receives it emits the model frames the tape recorded
  after that event, at the same delays.  The bridge under test must have its
  ``OPENAI_REALTIME_URL`` pointed at this stand-in.

Then what the bridge sent to each side is compared with the tape, ignoring
times.  Limits: real timing varies, so values that depend on it (a truncation
point, the exact moment a reply is requested) can legitimately differ by a few
tens of milliseconds; the stand-in answers by event count, so a bridge that
sends a different number of events drifts from the script.  Treat differences
as pointers, not proof.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.config import Secret
from bridge.devtools.tapes.replay import Difference, compare
from bridge.tapes.format import REDACTED, Tape, load_tape
from bridge.twilio.twiml import PARAM_TOKEN


@dataclass
class LiveOptions:
    url: str
    model_host: str = "127.0.0.1"
    model_port: int = 8765
    auth_token: str | None = None
    wait_s: float = 3.0


@dataclass
class LiveResult:
    tape: Tape
    to_twilio: list[dict[str, Any]] = field(default_factory=list)
    to_model: list[dict[str, Any]] = field(default_factory=list)
    differences: list[Difference] = field(default_factory=list)
    model_connections: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.differences and self.model_connections > 0

    def report(self, limit: int = 30) -> str:
        head = (f"{self.tape.path} (live): bridge sent {len(self.to_twilio)} messages to "
                f"Twilio, {len(self.to_model)} events to the model")
        lines = [head, *(f"  note: {n}" for n in self.notes)]
        if self.model_connections == 0:
            lines.append("  the bridge never connected to the model stand-in: is its "
                         "OPENAI_REALTIME_URL pointing at it?")
        if not self.differences:
            lines.append("  no differences (times ignored)")
        lines += [f"  {d}" for d in self.differences[:limit]]
        if len(self.differences) > limit:
            lines.append(f"  ... and {len(self.differences) - limit} more")
        return "\n".join(lines)


def model_script(tape: Tape) -> dict[int, list[tuple[int, str]]]:
    """Recorded model frames grouped by the client event they followed.

    Group -1 follows the connection itself; group k follows the k-th event the
    bridge sent (0-based).  Each frame keeps its delay after that trigger."""
    groups: dict[int, list[tuple[int, str]]] = {}
    trigger, trigger_t = -1, None
    for record in tape.records:
        if record.get("peer") != "model":
            continue
        if record.get("dir") == "out":
            trigger, trigger_t = trigger + 1, int(record["t"])
        elif record.get("kind") == "model_connected" and trigger_t is None:
            trigger_t = int(record["t"])
        elif "msg" in record:
            base = trigger_t if trigger_t is not None else int(record["t"])
            text = json.dumps(record["msg"])
            groups.setdefault(trigger, []).append((max(0, int(record["t"]) - base), text))
    return groups


class _Sender:
    """Sends scheduled frames on one connection, each at its due time and all in the
    order they were scheduled (the tape's order).

    A frame never overtakes one recorded before it: a real model's stream is ordered,
    and on a loaded host the triggers come late by different amounts, so due times
    alone would swap neighbouring audio deltas of one response."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self._queue: deque[tuple[float, str]] = deque()
        self._last_due = 0.0
        self._wake = asyncio.Event()

    def schedule(self, frames: list[tuple[int, str]]) -> None:
        now = asyncio.get_running_loop().time()
        for delay, text in frames:
            self._last_due = max(self._last_due, now + delay / 1000)
            self._queue.append((self._last_due, text))
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            if not self._queue:
                self._wake.clear()
                await self._wake.wait()
                continue
            due, text = self._queue[0]
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
                continue
            self._queue.popleft()
            await self.ws.send(text)


async def replay_live(path: str | Path | Tape, options: LiveOptions) -> LiveResult:
    """Play ``path`` against the bridge at ``options.url`` (see the module docstring)."""
    from websockets.asyncio.client import connect
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    tape = path if isinstance(path, Tape) else load_tape(path)
    result = LiveResult(tape=tape)
    script = model_script(tape)

    async def model_handler(ws: ServerConnection) -> None:
        result.model_connections += 1
        sender = _Sender(ws)
        task = asyncio.create_task(sender.run())
        sender.schedule(script.get(-1, []))
        count = 0
        try:
            async for raw in ws:
                try:
                    event = json.loads(raw)
                except ValueError:
                    continue
                result.to_model.append(_record("model", event))
                sender.schedule(script.get(count, []))
                count += 1
        except ConnectionClosed:
            pass
        finally:
            task.cancel()

    frames = _twilio_frames(tape, options.auth_token, result)
    async with serve(model_handler, options.model_host, options.model_port):
        headers = {}
        if options.auth_token:
            from bridge.devtools.sim.twilio_caller import twilio_signature

            headers["x-twilio-signature"] = twilio_signature(options.auth_token, options.url)
        async with connect(options.url, additional_headers=headers, compression=None,
                           max_size=2**24) as ws:
            reader = asyncio.create_task(_read_twilio(ws, result))
            started = time.monotonic()
            for at_ms, text in frames:
                delay = at_ms / 1000 - (time.monotonic() - started)
                if delay > 0:
                    await asyncio.sleep(delay)
                if text is None:
                    break  # the recorded call's Twilio socket closed here
                try:
                    await ws.send(text)
                except ConnectionClosed:
                    result.notes.append(f"the bridge closed the stream at t={at_ms}ms")
                    break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(reader), options.wait_s)
            reader.cancel()
    observable = [r for r in tape.outputs if r["peer"] in ("twilio", "model")]
    result.differences = compare(observable, result.to_twilio + result.to_model,
                                 complete=tape.complete, with_times=False)
    return result


def _twilio_frames(
    tape: Tape, auth_token: str | None, result: LiveResult
) -> list[tuple[int, str | None]]:
    """The Twilio frames to send, with the redacted stream token replaced."""
    frames: list[tuple[int, str | None]] = []
    for record in tape.records:
        if record.get("peer") != "twilio" or record.get("dir") != "in":
            continue
        if record.get("kind") == "twilio_closed":
            frames.append((int(record["t"]), None))
        elif "msg" in record:
            msg = record["msg"]
            if record.get("kind") == "start":
                msg = json.loads(json.dumps(msg))
                params = msg.get("start", {}).get("customParameters", {})
                if params.get(PARAM_TOKEN) == REDACTED:
                    if auth_token:
                        from bridge.twilio.stream_token import StreamTokens

                        tokens = StreamTokens.from_auth_token(Secret(auth_token))
                        params[PARAM_TOKEN] = tokens.mint(msg["start"]["callSid"], time.time())
                    else:
                        result.notes.append("no auth token: the stream token stays redacted "
                                            "(the bridge must run with BRIDGE_INSECURE_DEV=1)")
            frames.append((int(record["t"]), json.dumps(msg)))
        elif "raw" in record:
            frames.append((int(record["t"]), str(record["raw"])))
    return frames


async def _read_twilio(ws: Any, result: LiveResult) -> None:
    from websockets.exceptions import ConnectionClosed

    with contextlib.suppress(ConnectionClosed):
        async for raw in ws:
            try:
                message = json.loads(raw)
            except ValueError:
                continue
            result.to_twilio.append(_record("twilio", message))


def _record(peer: str, msg: dict[str, Any]) -> dict[str, Any]:
    kind = msg.get("event" if peer == "twilio" else "type")
    return {"t": 0, "dir": "out", "peer": peer, "kind": str(kind), "msg": msg}
