"""The load benchmark: N simulated phone calls through a real bridge process.

Why this shape: the figures that matter for "a call centre on one box" are the
bridge's own CPU and memory per call and the latency it adds, so the bridge runs
as a separate process (optionally pinned to one core) and is measured from
outside through ``/proc``.  Everything else - the Realtime simulator and the
simulated Twilio callers - runs here, in the load-generator process, pinned to
the other core.  Its own event-loop lag is reported so that a saturated
generator can never pass for a slow bridge.

Calls are placed the way Twilio places them: a signed ``POST /twiml``, then the
Media Stream opened with the ``<Parameter>``s of the TwiML answer and a signed
upgrade.  Placement is serialised just long enough to see the bridge's
pre-connected model socket arrive at the simulator, which ties each simulator
connection to its call without any help from the bridge.

Latency is matched by byte offset on one clock (``time.monotonic``, which is
also asyncio's ``loop.time`` and CLOCK_MONOTONIC, shared by all processes):

* upstream: caller frame k sent (bytes 160k..160k+159) -> the simulator's
  ``input_audio_buffer.append`` carrying those bytes received;
* downstream: the simulator sent an output audio delta -> the caller received
  the media message carrying that delta's middle byte.

Only the steady-state window (after the ramp, before hang-up) is measured.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import math
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from array import array
from bisect import bisect_right
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlencode

from twilio.request_validator import RequestValidator

from bridge.devtools.bench import procstat
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.sim.twilio_caller import CallResult, Ticker, TwilioCaller

API_KEY = "sk-bench-local-simulator"
FRAME = 160
CALL_CYCLE_MS = 8000
"""Each caller speaks once every 8 s; the model answers each turn (about 40 % talk)."""
BARGE_IN_AT_MS = 4500
"""Barge-in calls talk over the model's first answer this long after their first turn."""


@dataclass
class BenchOptions:
    calls: int = 50
    duration: float = 30.0
    """Length of the measured steady-state window, seconds."""
    audio: str = "passthrough"
    ramp: float | None = None
    """Seconds to place all calls (default: 2 s, longer for very many calls)."""
    settle: float = 1.0
    bridge_cpu: int | None = None
    gen_cpu: int | None = None
    ws: str | None = None
    loop: str | None = None
    http: str | None = None
    json_lib: str | None = None
    """Any of ws/loop/http/json set (or lean_stream): start via
    ``bridge.devtools.bench.server``."""
    lean_stream: bool = False
    """Serve /media-stream from ``bridge.web.lean_stream`` (via the bench server)."""
    stream_server: str | None = None
    """``serve``'s ``BRIDGE_STREAM_SERVER`` (``lean`` or ``asgi``); None: its default."""
    barge_every: int = 5
    """Every n-th call barges in once (0: never)."""
    log_level: str = "INFO"
    profile: str | None = None
    """Write a py-spy profile of the steady-state window to this path."""
    profile_format: str = "raw"
    warmup: bool = True
    rss_interval: float = 5.0
    tickers: int = 20
    """Shared 20 ms clocks; call i joins clock i % tickers.  Real calls start at random
    times, so their frames are spread over the 20 ms period; one clock would send every
    call's frame in the same instant (the worst case, ``tickers=1``)."""
    seed: int = 1
    reference_dir: str | None = None
    """Drive the public reference sample in this folder instead of this bridge (its
    ``run_reference.py`` serves it against our simulator); see
    ``bridge.devtools.bench.reference``."""
    reference_python: str | None = None
    """The interpreter with the reference's requirements installed (required with
    ``reference_dir``: the sample needs FastAPI, which this project does not)."""


@dataclass
class _Call:
    index: int
    caller: TwilioCaller
    conn_id: int
    barge: bool
    placed_at: float
    task: asyncio.Task[CallResult] | None = None


@dataclass
class _Appends:
    offsets: array = field(default_factory=lambda: array("q"))
    sizes: array = field(default_factory=lambda: array("q"))
    times: array = field(default_factory=lambda: array("d"))


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[k]


def _dist(values_s: Sequence[float]) -> dict[str, float | int | None]:
    ms = [v * 1000.0 for v in values_s]
    out: dict[str, float | int | None] = {"n": len(ms)}
    for q in (50, 95, 99):
        v = _pct(ms, q)
        out[f"p{q}"] = None if v is None else round(v, 3)
    out["max"] = round(max(ms), 3) if ms else None
    return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _http(port: int, method: str, path: str, body: bytes = b"",
                headers: dict[str, str] | None = None) -> tuple[int, str]:
    """A minimal HTTP/1.1 request on 127.0.0.1 (no client library on the hot path)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        head = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}", "Connection: close",
                f"Content-Length: {len(body)}"]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + body)
        raw = await reader.read()
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()
    header, _, payload = raw.partition(b"\r\n\r\n")
    status = int(header.split(b" ", 2)[1])
    return status, payload.decode("utf-8", "replace")


def _script(index: int, barge: bool, call_ms: float) -> list[tuple[float, str]]:
    """The caller's turns: a question every 8 s (staggered per call), one barge-in maybe."""
    start = 500.0 + (index % 8) * 1000.0
    turns: list[tuple[float, str]] = [(start, "caller_question")]
    t = start + CALL_CYCLE_MS
    if barge:
        turns.append((start + BARGE_IN_AT_MS, "caller_interrupt"))
        t = start + 1.5 * CALL_CYCLE_MS
    k = 1
    while t < call_ms:
        turns.append((t, "caller_thanks" if k % 2 else "caller_question"))
        t += CALL_CYCLE_MS
        k += 1
    return turns


class LoadBench:
    """One benchmark run (see module docstring); ``await run()`` returns the summary dict."""

    def __init__(self, opts: BenchOptions) -> None:
        self.o = opts
        self.ratio = 6 if opts.audio == "pcm16" else 1
        """Model bytes per mu-law byte: pcm16 at 24 kHz is 3 samples x 2 bytes per byte."""
        self.flush_tail = 0
        """Mu-law bytes the bridge adds after each finished agent item: in pcm16 it pushes
        the downsampler's last ~3 ms out with silence (``flush_to_twilio``), so the caller's
        stream runs that much ahead of the model's bytes for every item before."""
        if opts.audio == "pcm16":
            from bridge.audio.transcoder import Pcm16Transcoder

            self.flush_tail = len(Pcm16Transcoder().flush_to_twilio())
        self.appends: dict[int, _Appends] = {}
        self.calls: list[_Call] = []
        self.lags: list[float] = []
        self._window = (math.inf, -math.inf)
        self.tmp = tempfile.TemporaryDirectory(prefix="bridge-bench-")
        self.port = _free_port()
        self.token = secrets.token_hex(16)
        self.proc: subprocess.Popen[bytes] | None = None
        self.sim: RealtimeSimulator | None = None
        self.notes: list[str] = []
        self.gen_cpu_s = 0.0

    # ---------------------------------------------------------------- hooks

    def _on_append(self, conn_id: int, offset: int, nbytes: int, t: float) -> None:
        rec = self.appends.get(conn_id)
        if rec is None:
            rec = self.appends[conn_id] = _Appends()
        rec.offsets.append(offset)
        rec.sizes.append(nbytes)
        rec.times.append(t)

    async def _lag_monitor(self, stop: asyncio.Event) -> None:
        """How late a 10 ms sleep wakes up: the generator's own scheduling delay."""
        loop = asyncio.get_running_loop()
        while not stop.is_set():
            due = loop.time() + 0.010
            await asyncio.sleep(0.010)
            now = loop.time()
            if self._window[0] <= now <= self._window[1]:
                self.lags.append(max(0.0, now - due))

    # -------------------------------------------------------------- processes

    @property
    def is_reference(self) -> bool:
        return self.o.reference_dir is not None

    def _bridge_env(self, sim_url: str) -> dict[str, str]:
        env = dict(os.environ)
        if self.is_reference:
            # The sample reads only OPENAI_API_KEY (and PORT, overridden by --port); the
            # key must be the simulator's or every model connection is refused.
            env["OPENAI_API_KEY"] = API_KEY
            env.pop("PYTHONPATH", None)
            return env
        env.update({
            "OPENAI_API_KEY": API_KEY,
            "OPENAI_REALTIME_URL": sim_url,
            "PUBLIC_URL": f"http://127.0.0.1:{self.port}",
            "TWILIO_AUTH_TOKEN": self.token,
            "BRIDGE_AUDIO": self.o.audio,
            "DATABASE_URL": f"sqlite:///{self.tmp.name}/bench.db",
            "BRIDGE_MAX_CALLS": str(self.o.calls + 50),
            "LOG_LEVEL": self.o.log_level,
        })
        if self.o.stream_server is not None:
            env["BRIDGE_STREAM_SERVER"] = self.o.stream_server
        for name in ("AGENT_GREETING", "BRIDGE_TAPES_DIR", "BRIDGE_AGENTS_FILE"):
            env.pop(name, None)
        return env

    def _bridge_cmd(self) -> list[str]:
        o = self.o
        if o.reference_dir is not None:
            if o.reference_python is None:
                raise ValueError("reference_dir needs reference_python")
            assert self.sim is not None
            return [o.reference_python, os.path.join(o.reference_dir, "run_reference.py"),
                    "--sample-dir", o.reference_dir, "--port", str(self.port),
                    "--openai-url", self.sim.url, "--log-level", "warning"]
        if o.lean_stream or any(v is not None for v in (o.ws, o.loop, o.http, o.json_lib)):
            cmd = [sys.executable, "-m", "bridge.devtools.bench.server", "--port", str(self.port),
                   "--ws", o.ws or "auto", "--loop", o.loop or "auto",
                   "--http", o.http or "auto", "--json", o.json_lib or "stdlib"]
            if o.lean_stream:
                cmd.append("--lean-stream")
        else:
            cmd = [sys.executable, "-m", "bridge", "serve", "--host", "127.0.0.1",
                   "--port", str(self.port), "--grace", "1"]
        return cmd

    def _start_bridge(self, sim_url: str) -> None:
        cpu = self.o.bridge_cpu

        def pin() -> None:  # runs in the child before exec: every thread inherits it
            if cpu is not None:
                os.sched_setaffinity(0, {cpu})

        self._log = open(os.path.join(self.tmp.name, "bridge.log"), "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            self._bridge_cmd(), env=self._bridge_env(sim_url), stdout=self._log,
            stderr=subprocess.STDOUT, preexec_fn=pin, start_new_session=True,
        )

    async def _wait_healthy(self, timeout: float = 20.0) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bridge exited with {self.proc.returncode}: {self._tail()}")
            with contextlib.suppress(OSError, ValueError, IndexError):
                # The reference has no /healthz; its index page answers 200 once it serves.
                path = "/" if self.is_reference else "/healthz"
                status, _ = await _http(self.port, "GET", path)
                if status == 200:
                    return
            await asyncio.sleep(0.05)
        raise RuntimeError(f"bridge not healthy within {timeout} s: {self._tail()}")

    def _tail(self) -> str:
        with contextlib.suppress(OSError):
            with open(os.path.join(self.tmp.name, "bridge.log"), "rb") as f:
                return f.read()[-1500:].decode("utf-8", "replace")
        return ""

    async def _stop_bridge(self) -> int | None:
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            for _ in range(200):
                if proc.poll() is not None:
                    break
                await asyncio.sleep(0.05)
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        self._log.close()
        return proc.returncode

    # ---------------------------------------------------------------- calls

    async def _place(self, index: int, ticker: Ticker, call_ms: float, barge: bool,
                     lock: asyncio.Lock) -> _Call:
        """Twilio's steps: signed webhook, TwiML, then the signed Media Stream upgrade."""
        assert self.sim is not None
        if self.is_reference:
            return await self._place_on_reference(index, ticker, call_ms, barge, lock)
        sim = self.sim
        call_sid = "CA" + secrets.token_hex(16)
        form = {"AccountSid": "AC" + "0" * 32, "CallSid": call_sid,
                "From": f"+1555{index:07d}", "To": "+15559990000", "CallStatus": "ringing",
                "Direction": "inbound", "ApiVersion": "2010-04-01"}
        url = f"http://127.0.0.1:{self.port}/twiml"
        sig = RequestValidator(self.token).compute_signature(url, form)
        async with lock:
            before = len(sim.connections)
            status, body = await _http(
                self.port, "POST", "/twiml", urlencode(form).encode(),
                {"Content-Type": "application/x-www-form-urlencoded",
                 "X-Twilio-Signature": sig})
            if status != 200:
                raise RuntimeError(f"/twiml answered {status}: {body[:200]}")
            # The bridge pre-connects the model on the webhook: that connection is this call's.
            await sim.wait_for(lambda: len(sim.connections) > before, timeout=10, interval=0.001)
            conn_id = sim.connections[before].id
        stream = ET.fromstring(body).find("./Connect/Stream")
        if stream is None:
            raise RuntimeError(f"/twiml did not answer <Connect><Stream>: {body[:200]}")
        params = {p.get("name", ""): p.get("value", "") for p in stream.findall("Parameter")}
        caller = TwilioCaller(
            url=stream.get("url", ""), call_sid=call_sid, custom_parameters=params,
            auth_token=self.token, script=_script(index, barge, call_ms),
            record_audio=False, record_timing=True, ticker=ticker,
        )
        call = _Call(index, caller, conn_id, barge, time.monotonic())
        call.task = asyncio.ensure_future(caller.run())
        return call

    async def _place_on_reference(self, index: int, ticker: Ticker, call_ms: float,
                                  barge: bool, lock: asyncio.Lock) -> _Call:
        """The reference's steps: no webhook, no signature, no parameters.

        Its TwiML route only names the stream URL, and it opens the model socket right
        after accepting the upgrade (before ``start``), so the connection that reaches
        the simulator while this call's upgrade is held under the lock is this call's.
        """
        assert self.sim is not None
        sim = self.sim
        caller = TwilioCaller(
            url=f"ws://127.0.0.1:{self.port}/media-stream", call_sid="CA" + secrets.token_hex(16),
            script=_script(index, barge, call_ms), record_audio=False, record_timing=True,
            ticker=ticker,
        )
        async with lock:
            before = len(sim.connections)
            await caller.connect()
            await sim.wait_for(lambda: len(sim.connections) > before, timeout=10, interval=0.001)
            conn_id = sim.connections[before].id
        call = _Call(index, caller, conn_id, barge, time.monotonic())
        call.task = asyncio.ensure_future(caller.run())
        return call

    async def _warmup(self, ticker: Ticker) -> None:
        """One short call first, so lazy imports and caches are not counted per call."""
        lock = asyncio.Lock()
        call = await self._place(10_000, ticker, 3000, False, lock)
        await asyncio.sleep(1.5)
        await call.caller.hangup()
        assert call.task is not None
        await call.task
        self.appends.pop(call.conn_id, None)
        await asyncio.sleep(0.5)

    # ------------------------------------------------------------------ run

    async def run(self) -> dict[str, Any]:
        o = self.o
        if o.gen_cpu is not None:
            os.sched_setaffinity(0, {o.gen_cpu})
        ramp = o.ramp if o.ramp is not None else max(2.0, o.calls / 150)
        call_ms = (ramp * 3 + o.settle + o.duration + 10) * 1000
        self.sim = RealtimeSimulator(
            script=["agent_greeting", "agent_short"], api_key=API_KEY,
            record_events=False, record_audio=False, on_audio_appended=self._on_append,
        )
        await self.sim.start("127.0.0.1", 0)
        stop_lag = asyncio.Event()
        lag_task: asyncio.Task[None] | None = None
        profiler: subprocess.Popen[bytes] | None = None
        try:
            self._start_bridge(self.sim.url)
            assert self.proc is not None
            pid = self.proc.pid
            await self._wait_healthy()
            if o.warmup:
                await self._warmup(Ticker())
            rng = random.Random(o.seed)
            tickers = [Ticker() for _ in range(max(1, min(o.tickers, o.calls)))]
            await asyncio.sleep(0.5)
            idle = procstat.sample(pid)

            lock = asyncio.Lock()
            t_start = time.monotonic()
            for i in range(o.calls):
                jitter = rng.uniform(0, 0.02) if i < len(tickers) else 0.0
                delay = t_start + i * ramp / o.calls + jitter - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                barge = o.barge_every > 0 and i % o.barge_every == o.barge_every - 1
                self.calls.append(
                    await self._place(i, tickers[i % len(tickers)], call_ms, barge, lock))
            ramp_actual = time.monotonic() - t_start
            # The callers, connections and simulator sessions now live until hang-up: keep
            # full collections from walking them again and again (a 300-call generator
            # measured ~45 ms per full collection, counted in every latency it measures).
            gc.collect()
            gc.freeze()

            w0 = time.monotonic() + o.settle
            w1 = w0 + o.duration
            self._window = (w0, w1)
            lag_task = asyncio.ensure_future(self._lag_monitor(stop_lag))
            await asyncio.sleep(max(0.0, w0 - time.monotonic()))
            s0 = procstat.sample(pid)
            g0 = procstat.cpu_seconds(os.getpid())
            late0 = sum(t.late_ticks for t in tickers)
            if o.profile:
                profiler = self._start_profiler(pid, o.duration)
            rss_series = [(0.0, s0.rss_kib)]
            while time.monotonic() < w1:
                await asyncio.sleep(min(o.rss_interval, max(0.0, w1 - time.monotonic())))
                rss_series.append((round(time.monotonic() - w0, 1), procstat.rss_kib(pid)))
            s1 = procstat.sample(pid)
            self.gen_cpu_s = procstat.cpu_seconds(os.getpid()) - g0
            live_at_end = sum(1 for c in self.calls if not c.caller.closed)
            late_ticks = sum(t.late_ticks for t in tickers) - late0
            stop_lag.set()

            hang = time.monotonic()
            await asyncio.gather(*(c.caller.hangup() for c in self.calls),
                                 return_exceptions=True)
            results = await asyncio.gather(*(c.task for c in self.calls if c.task),
                                           return_exceptions=True)
            all_closed = time.monotonic()
            await asyncio.sleep(1.0)
            open_after = self.sim.open_connections
            metrics = await self._scrape_metrics()
            if profiler is not None:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    profiler.wait(timeout=30)
            summary = self._summarise(
                idle=idle, s0=s0, s1=s1, w0=w0, w1=w1, hang=hang, results=results,
                open_after=open_after, live_at_end=live_at_end, ramp_actual=ramp_actual,
                hangup_s=all_closed - hang, late_ticks=late_ticks, rss_series=rss_series,
                metrics=metrics, tickers=tickers,
            )
        finally:
            stop_lag.set()
            if lag_task is not None:
                with contextlib.suppress(BaseException):
                    await lag_task
            if profiler is not None and profiler.poll() is None:
                profiler.terminate()
            rc = await self._stop_bridge()
            await self.sim.stop()
        summary["bridge_exit_code"] = rc
        return summary

    def _start_profiler(self, pid: int, duration: float) -> subprocess.Popen[bytes] | None:
        import shutil

        exe = shutil.which("py-spy")
        if exe is None:
            self.notes.append("--profile: py-spy not installed (pip install py-spy)")
            return None
        assert self.o.profile is not None
        cmd = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(duration))),
               "--rate", "250", "--format", self.o.profile_format, "--output", self.o.profile,
               "--nonblocking"]
        self.notes.append("profiled with py-spy --nonblocking: CPU figures include its cost")
        return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    async def _scrape_metrics(self) -> dict[str, float]:
        out: dict[str, float] = {}
        with contextlib.suppress(Exception):
            status, body = await _http(self.port, "GET", "/metrics")
            for line in body.splitlines():
                if line and not line.startswith("#") and "{" not in line:
                    name, _, value = line.partition(" ")
                    out[name] = float(value)
        return out

    # -------------------------------------------------------------- results

    def _summarise(self, *, idle: procstat.ProcSample, s0: procstat.ProcSample,
                   s1: procstat.ProcSample, w0: float, w1: float, hang: float,
                   results: list[Any], open_after: int, live_at_end: int,
                   ramp_actual: float, hangup_s: float, late_ticks: int,
                   rss_series: list[tuple[float, int]], metrics: dict[str, float],
                   tickers: list[Ticker]) -> dict[str, Any]:
        assert self.sim is not None
        o = self.o
        ratio = self.ratio
        conns = {c.id: c for c in self.sim.connections}
        up: list[float] = []
        down: list[float] = []
        ready: list[float] = []
        failed = 0
        up_missing_bytes = 0
        down_missing_bytes = 0
        down_unmatched = 0
        garbled = 0
        barge_clears = 0
        barge_calls = 0
        cancelled_responses = 0
        for call, res in zip(self.calls, results, strict=True):
            if isinstance(res, BaseException) or res.t0 is None:
                failed += 1
                continue
            r: CallResult = res
            garbled += len(r.violations)
            if call.barge:
                barge_calls += 1
                barge_clears += 1 if r.clears else 0
            t0 = r.t0
            assert t0 is not None
            sent = r.inbound_sent_ms
            ap = self.appends.get(call.conn_id, _Appends())
            if ap.times and r.start_sent_ms is not None:
                ready.append(ap.times[0] - (t0 + r.start_sent_ms / 1000.0))
            # ---- upstream: every frame's bytes reach the model, in order, once
            for off, n, t in zip(ap.offsets, ap.sizes, ap.times, strict=True):
                k = ((off + n // 2) // ratio) // FRAME
                if k < len(sent):
                    s = t0 + sent[k] / 1000.0
                    if w0 <= s <= w1:
                        up.append(t - s)
            got_in = (sum(ap.sizes) // ratio) if ap.sizes else 0
            up_missing_bytes += max(0, r.frames_sent * FRAME - got_in - (FRAME if ratio > 1
                                                                         else 0))
            # ---- downstream: each delta's middle byte, in the caller's outbound stream
            rec = conns.get(call.conn_id)
            if rec is None:
                failed += 1
                continue
            cancelled = {x.id for x in rec.responses if x.status == "cancelled"}
            cancelled_responses += len(cancelled)
            positions = [m.position for m in r.media]
            cum = 0
            expected = 0
            tails = 0
            item = None
            hang_t = t0 + (r.hangup_ms or math.inf) / 1000.0
            for d in rec.audio_deltas:
                if d.response_id in cancelled:
                    break  # the bridge rightly drops what follows a barge-in: stop matching
                if item is not None and d.item_id != item:
                    tails += self.flush_tail
                item = d.item_id
                mid = (cum + d.nbytes // 2) // ratio + tails
                cum += d.nbytes
                if d.t > hang_t - 0.5:
                    break  # in flight at hang-up
                expected = cum // ratio + tails
                i = bisect_right(positions, mid) - 1
                hit = i >= 0 and mid < r.media[i].position + r.media[i].size
                if not hit:
                    down_unmatched += 1
                    continue
                if w0 <= d.t <= w1:
                    down.append(t0 + r.media[i].at_ms / 1000.0 - d.t)
            if not cancelled:
                down_missing_bytes += max(0, expected - r.media_bytes_received)
        window = w1 - w0
        n = len(self.calls)
        cpu_s = s1.cpu_s - s0.cpu_s
        call_seconds = n * window
        lag = _dist(self.lags)
        summary: dict[str, Any] = {
            "bridge": "reference" if self.is_reference else "this",
            "machine": procstat.machine_description(),
            "options": asdict(o),
            "server": " ".join(self._bridge_cmd()[1:]),
            "calls": n,
            "calls_failed": failed,
            "calls_ended_early": n - live_at_end - failed if live_at_end < n else 0,
            "audio": o.audio,
            "window_s": round(window, 2),
            "ramp_s": round(ramp_actual, 2),
            "bridge_cpu_s": round(cpu_s, 3),
            "bridge_cpu_pct_of_core": round(100 * cpu_s / window, 1),
            "cpu_ms_per_call_s": round(1000 * cpu_s / call_seconds, 3) if call_seconds else None,
            "rss_idle_kib": idle.rss_kib,
            "rss_steady_kib": s1.rss_kib,
            "rss_per_call_kib": round((s1.rss_kib - idle.rss_kib) / n, 1) if n else None,
            "rss_growth_in_window_kib": s1.rss_kib - s0.rss_kib,
            "rss_series_kib": rss_series,
            "upstream_ms": _dist(up),
            "downstream_ms": _dist(down),
            "start_to_model_ready_ms": _dist(ready),
            "dropped_up_bytes": up_missing_bytes,
            "dropped_down_bytes": down_missing_bytes,
            "down_deltas_unmatched": down_unmatched,
            "garbled_frames": garbled + int(metrics.get("bridge_bad_frames_total", 0)),
            "bridge_deltas_dropped": int(metrics.get("bridge_deltas_dropped_total", 0)),
            "barge_in_calls": barge_calls,
            "barge_in_calls_with_clear": barge_clears,
            "model_responses_cancelled": cancelled_responses,
            "model_sockets_open_1s_after_hangup": open_after,
            "hangup_all_closed_s": round(hangup_s, 3),
            "gen_loop_lag_ms": lag,
            "gen_cpu_pct_of_core": round(100 * self.gen_cpu_s / window, 1),
            "gen_late_ticks": late_ticks,
            "gen_ticker_max_lag_ms": round(max(t.max_lag_ms for t in tickers), 1),
            "bridge_metrics": metrics,
            "notes": self.notes,
        }
        return summary


def summary_line(s: dict[str, Any]) -> str:
    """The one line ``bench`` prints."""

    def d(key: str) -> str:
        v = s[key]
        return f"{v['p50']}/{v['p95']}/{v['p99']}"

    return (
        f"bench: calls={s['calls']} audio={s['audio']} failed={s['calls_failed']} "
        f"window={s['window_s']}s cpu_ms_per_call_s={s['cpu_ms_per_call_s']} "
        f"(bridge {s['bridge_cpu_pct_of_core']}% of a core) "
        f"rss_kib_per_call={s['rss_per_call_kib']} "
        f"up_ms_p50/95/99={d('upstream_ms')} down_ms_p50/95/99={d('downstream_ms')} "
        f"dropped_bytes_up/down={s['dropped_up_bytes']}/{s['dropped_down_bytes']} "
        f"garbled={s['garbled_frames']} "
        f"open_model_sockets_1s={s['model_sockets_open_1s_after_hangup']} "
        f"start_to_ready_ms_p50/99={s['start_to_model_ready_ms']['p50']}/"
        f"{s['start_to_model_ready_ms']['p99']} "
        f"gen_lag_p99_ms={s['gen_loop_lag_ms']['p99']} gen_cpu={s['gen_cpu_pct_of_core']}%"
    )


def run_bench(opts: BenchOptions) -> dict[str, Any]:
    """Run one benchmark on a fresh default event loop (asyncio: loop.time == monotonic)."""
    return asyncio.run(LoadBench(opts).run())


def to_json(summary: dict[str, Any]) -> str:
    return json.dumps(summary, indent=2, default=str)


__all__ = ["BenchOptions", "LoadBench", "run_bench", "summary_line", "to_json"]
