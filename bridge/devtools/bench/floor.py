"""The floor: what merely moving a bridge's messages costs on this host right now.

Why: the CPU a Twilio <-> Realtime bridge needs per call-second has a part no bridge
can remove.  The protocols fix the traffic (one Media Streams frame in and one
``input_audio_buffer.append`` out per 20 ms, plus the model's events, the agent's media
and the marks), and each message on its own socket costs the event loop a wake-up, a
``recv`` and a ``send``.  This benchmark measures only that part: a *forwarder* process
on uvloop with raw asyncio transports copies every chunk it reads from one socket of a
pair to the other, with no WebSocket framing, no JSON and no call logic.  The generator
sends the same message counts and sizes per call-second as ``bench``'s load.

So ``reference ÷ floor`` measured in the same run is the most any Python bridge on this
loop could be cheaper than the reference, and ``this bridge − floor`` is the bridge's own
work (framing, JSON, the call core).  It is not a bridge: nothing is parsed.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from bridge.devtools.bench import procstat

# Per call-second, as ``bench``'s load (docs/performance.md, "Where the bridge's time goes"):
CALLER_FRAME_BYTES = 336
"""A Media Streams ``media`` message for 20 ms of μ-law, WebSocket-framed and masked."""
CALLER_FRAMES_PER_S = 50
MARK_ECHOES_PER_S = 4.4
MARK_ECHO_BYTES = 110
MODEL_DELTAS_PER_S = 4.4
MODEL_DELTA_BYTES = 2_300
"""An audio delta of ~200 ms of μ-law as base64 JSON, unmasked (server to client)."""
MODEL_OTHER_EVENTS_PER_S = 5.6
MODEL_OTHER_EVENT_BYTES = 260
"""Transcript deltas, ``speech_started`` and the like."""


class _Half(asyncio.Protocol):
    """One socket of a forwarded pair: whatever it reads goes to the other, unread."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.peer: _Half | None = None
        self.early: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.write(data)
        else:
            self.early.append(data)

    def connection_lost(self, exc: Exception | None) -> None:
        peer = self.peer
        if peer is not None and peer.transport is not None:
            peer.transport.close()


async def _forward(listen_port: int, model_port: int) -> None:
    loop = asyncio.get_running_loop()

    class Caller(_Half):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            super().connection_made(transport)
            asyncio.ensure_future(self._pair())

        async def _pair(self) -> None:
            _, model = await loop.create_connection(_Half, "127.0.0.1", model_port)
            model.peer, self.peer = self, model
            assert model.transport is not None
            for chunk in self.early:
                model.transport.write(chunk)
            self.early.clear()

    server = await loop.create_server(Caller, "127.0.0.1", listen_port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


def forwarder_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bridge.devtools.bench.floor")
    p.add_argument("--listen", type=int, required=True)
    p.add_argument("--model", type=int, required=True)
    args = p.parse_args(argv)
    import uvloop

    uvloop.run(_forward(args.listen, args.model))
    return 0


# ------------------------------------------------------------------ the generator


@dataclass
class FloorResult:
    calls: int
    window_s: float
    cpu_ms_per_call_s: float
    forwarder_cpu_pct_of_core: float
    bytes_up: int
    bytes_down: int
    gen_lag_p99_ms: float

    def line(self) -> str:
        return (
            f"bench[floor]: calls={self.calls} window={self.window_s}s "
            f"cpu_ms_per_call_s={self.cpu_ms_per_call_s} "
            f"(forwarder {self.forwarder_cpu_pct_of_core}% of a core) "
            f"msgs_read_and_written_per_call_s={_msgs_per_call_s():.1f} "
            f"bytes_up/down={self.bytes_up}/{self.bytes_down} "
            f"gen_lag_p99_ms={self.gen_lag_p99_ms}"
        )

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _msgs_per_call_s() -> float:
    return CALLER_FRAMES_PER_S + MARK_ECHOES_PER_S + MODEL_DELTAS_PER_S + MODEL_OTHER_EVENTS_PER_S


class _Sink(asyncio.Protocol):
    def __init__(self, counter: list[int]) -> None:
        self.counter = counter
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.counter[0] += len(data)


async def _every(period_s: float, phase_s: float, send: Any, stop: asyncio.Event,
                 lags: list[float]) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time() + phase_s
    while not stop.is_set():
        await asyncio.sleep(max(0.0, due - loop.time()))
        now = loop.time()
        lags.append(now - due)
        send()
        due += period_s
        if now - due > 1.0:  # far behind: skip ahead rather than burst
            due = now


async def run_floor(calls: int, duration: float, forwarder_cpu: int | None,
                    settle_s: float = 2.0) -> FloorResult:
    """Place ``calls`` forwarded pairs, drive them for ``duration`` s, measure the forwarder."""
    from bridge.devtools.bench.load import _pct  # here: the forwarder process stays bare

    loop = asyncio.get_running_loop()
    down_received = [0]
    up_received = [0]
    stop = asyncio.Event()
    lags: list[float] = []
    rng = random.Random(1)
    tasks: list[asyncio.Task[None]] = []
    model_sides: list[_Sink] = []

    def model_factory() -> _Sink:
        sink = _Sink(up_received)
        model_sides.append(sink)
        return sink

    model_server = await loop.create_server(model_factory, "127.0.0.1", 0)
    model_port = model_server.sockets[0].getsockname()[1]
    probe = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
    listen_port = probe.sockets[0].getsockname()[1]
    probe.close()
    await probe.wait_closed()

    def pin() -> None:
        if forwarder_cpu is not None:
            os.sched_setaffinity(0, {forwarder_cpu})

    proc = subprocess.Popen(
        [sys.executable, "-m", "bridge.devtools.bench.floor", "--listen", str(listen_port),
         "--model", str(model_port)],
        stdout=subprocess.PIPE, preexec_fn=pin, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        ready = await loop.run_in_executor(None, proc.stdout.readline)
        if ready.strip() != b"ready":
            raise RuntimeError("the floor forwarder did not start")
        callers: list[_Sink] = []
        for _ in range(calls):
            _, caller = await loop.create_connection(lambda: _Sink(down_received),
                                                     "127.0.0.1", listen_port)
            callers.append(caller)
        while len(model_sides) < calls:
            await asyncio.sleep(0.01)
        frame = b"c" * CALLER_FRAME_BYTES
        mark = b"m" * MARK_ECHO_BYTES
        delta = b"d" * MODEL_DELTA_BYTES
        other = b"o" * MODEL_OTHER_EVENT_BYTES
        for caller, model in zip(callers, model_sides, strict=True):
            ct, mt = caller.transport, model.transport
            assert ct is not None and mt is not None
            streams = (
                (1 / CALLER_FRAMES_PER_S, ct, frame),
                (1 / MARK_ECHOES_PER_S, ct, mark),
                (1 / MODEL_DELTAS_PER_S, mt, delta),
                (1 / MODEL_OTHER_EVENTS_PER_S, mt, other),
            )
            for period, transport, payload in streams:
                tasks.append(asyncio.ensure_future(_every(
                    period, rng.uniform(0, period), lambda t=transport, b=payload: t.write(b),
                    stop, lags)))
        await asyncio.sleep(settle_s)
        lags.clear()
        up0, down0 = up_received[0], down_received[0]
        cpu0, t0 = procstat.cpu_seconds(proc.pid), time.monotonic()
        await asyncio.sleep(duration)
        cpu1, t1 = procstat.cpu_seconds(proc.pid), time.monotonic()
        up1, down1 = up_received[0], down_received[0]
        stop.set()
        window = t1 - t0
        p99 = (_pct(lags, 99) or 0.0) * 1000
        return FloorResult(
            calls=calls, window_s=round(window, 1),
            cpu_ms_per_call_s=round((cpu1 - cpu0) * 1000 / (calls * window), 3),
            forwarder_cpu_pct_of_core=round((cpu1 - cpu0) * 100 / window, 1),
            bytes_up=up1 - up0, bytes_down=down1 - down0, gen_lag_p99_ms=round(p99, 2),
        )
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        proc.terminate()
        proc.wait(5)
        model_server.close()


def floor_bench(calls: int, duration: float, forwarder_cpu: int | None,
                gen_cpu: int | None) -> FloorResult:
    """Run :func:`run_floor` on uvloop, the generator pinned to ``gen_cpu``."""
    import uvloop

    before = os.sched_getaffinity(0)
    try:
        if gen_cpu is not None:
            os.sched_setaffinity(0, {gen_cpu})
        return uvloop.run(run_floor(calls, duration, forwarder_cpu))
    finally:
        os.sched_setaffinity(0, before)


if __name__ == "__main__":
    raise SystemExit(forwarder_main())
