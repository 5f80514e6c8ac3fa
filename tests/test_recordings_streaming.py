"""Recordings are streamed to disk during the call: bounded memory, crash-safe files.

The synthetic call drives :class:`LiveRecording` directly (it is fed exactly as the
operator tap feeds it) and checks the streamed file byte for byte against the
whole-call model: streaming must not move a single sample.  The crash test kills a real
``python -m bridge serve`` with SIGKILL in the middle of a Twilio call and reads what it
left on disk.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import tracemalloc
import warnings
import wave
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from bridge.devtools.sim.demo import CALLER_SCRIPT
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.sim.twilio_caller import TwilioCaller
from bridge.recordings.files import RecordingFile, interleave, repair_open_recordings
from bridge.recordings.live import LiveRecording
from bridge.recordings.playout import PlayoutRecorder
from tests.fleet import Replica, incoming_call

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

MINUTES = 10


def synthetic_call(minutes: int, seed: int = 7) -> Iterator[tuple[str, float, bytes]]:
    """(kind, call ms, μ-law) in the order a tap sees them: caller frames every 20 ms at
    their own timestamps (some arriving after the next one, within the slack), a 4 s
    reply queued at once every 10 s, and every third reply cut by a clear 2 s in."""
    rng = random.Random(seed)
    late = b""
    for i in range(minutes * 60 * 50):
        t = 20.0 * i
        if i % 500 == 100:
            reply = rng.randbytes(32_000)
            for k in range(0, len(reply), 6_400):
                yield "play", t, reply[k : k + 6_400]
        if i % 1500 == 200:
            yield "clear", t, b""
        frame = rng.randbytes(160)
        if i % 97 == 0 and i:  # this frame arrives after the next one (jitter)
            late = frame
            continue
        yield "caller", t, frame
        if i % 97 == 1 and i > 1:
            yield "caller", t - 20, late  # placed at its own time, 20 ms back


def _feed(target: PlayoutRecorder | LiveRecording, kind: str, at: float, audio: bytes) -> None:
    if kind == "caller":
        target.caller_audio(at, audio)
    elif kind == "play":
        target.play(at, audio)
    else:
        target.clear(at)


async def test_a_long_call_streams_with_bounded_memory_and_the_same_samples(
    tmp_path: Path,
) -> None:
    path = tmp_path / "long.wav"
    live = LiveRecording()
    live.open(path)
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        most = 0
        for n, (kind, at, audio) in enumerate(synthetic_call(MINUTES)):
            _feed(live, kind, at, audio)
            if n % 50 == 0:
                most = max(most, live.buffered_bytes)
                # The loop runs far faster than real time: give the writer thread the
                # second of wall time it would have had (a disk doing 32 KB/s).
                while live.pending_writes:
                    await asyncio.sleep(0.0005)
        peak = tracemalloc.get_traced_memory()[1] - baseline
        assert await live.finish() == path
    finally:
        tracemalloc.stop()
    wav_bytes = path.stat().st_size
    # The whole call is ~19 MB on disk; in memory never more than a few seconds of it.
    assert wav_bytes > MINUTES * 60 * 8000 * 4
    assert most < 8000 * (2 + 2 + 4) * 2, most  # flush + slack of both, a queued reply
    assert peak < 2_000_000, peak
    assert live.recorder.late_samples == 0

    # Streaming changed nothing: the same file the whole-call model gives.
    whole = PlayoutRecorder()
    for kind, at, audio in synthetic_call(MINUTES):
        _feed(whole, kind, at, audio)
    expected = interleave(*whole.channels())
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        got = wav.readframes(wav.getnframes())
    assert len(got) == len(expected) and got == expected
    assert whole.clears and all(dropped > 0 for _, dropped in whole.clears)
    assert not path.with_name(path.name + ".open").exists()


def test_caller_audio_later_than_the_slack_is_dropped_and_counted() -> None:
    rec = PlayoutRecorder()
    rec.caller_audio(0, b"\x10" * 800)
    caller, _ = rec.take(50)  # 400 samples out
    assert caller == b"\x10" * 400 and rec.base == 400
    rec.caller_audio(40, b"\x20" * 160)  # 320..480: 80 samples too late
    assert rec.late_samples == 80
    assert rec.channels()[0] == b"\x20" * 80 + b"\x10" * 320


def _dead_pid() -> int:
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    return int(proc.stdout)


def test_startup_repairs_a_file_cut_between_write_and_header(tmp_path: Path) -> None:
    path = tmp_path / "cut.wav"
    file = RecordingFile(path)
    file.append(b"\x10" * 8000, b"\x90" * 8000)
    file.close()
    # What a kill between a write and the header rewrite leaves: one more second of
    # frames and half a frame that the header does not count, and the marker.
    with open(path, "ab") as raw:
        raw.write(interleave(b"\x20" * 8000, b"\xa0" * 8000) + b"\x01\x02")
    marker = path.with_name(path.name + ".open")
    marker.write_text(f"{socket.gethostname()} {_dead_pid()}\n")
    live = tmp_path / "live.wav"  # another writer, still alive: left alone
    RecordingFile(live).append(b"\x10" * 80, b"\x10" * 80)
    assert repair_open_recordings(tmp_path) == [path]
    assert not marker.exists() and live.with_name("live.wav.open").exists()
    with wave.open(str(path)) as wav:
        assert wav.getnframes() == 16000
        frames = np.frombuffer(wav.readframes(16000), dtype="<i2")
    assert frames[2 * 8000] == np.frombuffer(audioop.ulaw2lin(b"\x20", 2), dtype="<i2")[0]


def _agreement(recorded: np.ndarray, truth: np.ndarray, lag: int) -> float:
    """Share of voiced ``truth`` samples equal in ``recorded`` shifted by ``lag``."""
    lo, hi = max(0, -lag), min(len(truth), len(recorded) - lag)
    r, t = recorded[lo + lag : hi + lag], truth[lo:hi]
    voiced = np.abs(t) > 64
    return float((r[voiced] == t[voiced]).mean()) if voiced.any() else 0.0


def _recording_row(db: Path, call_sid: str) -> str | None:
    with sqlite3.connect(db) as conn:
        try:
            row = conn.execute(
                "SELECT recording_path FROM calls WHERE call_sid = ?", (call_sid,)
            ).fetchone()
        except sqlite3.OperationalError:  # schema not there yet
            return None
    return row[0] if row else None


@pytest.mark.e2e
async def test_sigkill_mid_call_leaves_a_playable_recording(tmp_path: Path) -> None:
    recordings = tmp_path / "recordings"
    db = tmp_path / "calls.db"
    auth = secrets.token_hex(16)
    async with RealtimeSimulator(script=["agent_greeting", "agent_reply"], api_key="sk-k9") as sim:
        replica = Replica("k9", {})
        public = f"http://127.0.0.1:{replica.port}"
        replica.env = {
            "OPENAI_API_KEY": "sk-k9", "OPENAI_REALTIME_URL": sim.url, "PUBLIC_URL": public,
            "TWILIO_AUTH_TOKEN": auth, "DATABASE_URL": f"sqlite:///{db}",
            "BRIDGE_RECORDINGS_DIR": str(recordings), "AGENT_GREETING": "Hello.",
        }
        replica.start()
        try:
            await asyncio.to_thread(replica.wait_ready)
            sid = "CA" + secrets.token_hex(16)
            status, url, params = await asyncio.to_thread(incoming_call, public, public, auth, sid)
            assert status == 200 and url
            caller = TwilioCaller(url=url, call_sid=sid, custom_parameters=params,
                                  auth_token=auth, script=CALLER_SCRIPT, duration_ms=30_000)
            running = asyncio.create_task(caller.run())
            # Mid-call, once the record points at the file (the first flush): kill -9.
            deadline = time.monotonic() + 20
            while _recording_row(db, sid) is None:
                assert time.monotonic() < deadline, replica.log()[-2000:]
                await asyncio.sleep(0.1)
            await asyncio.sleep(6.0)
            replica.signal(signal.SIGKILL)
            result = await running
            assert replica.process is not None and replica.process.wait(10) == -signal.SIGKILL
        finally:
            replica.stop()
    path = Path(str(_recording_row(db, sid)))
    assert path.parent == recordings and path.exists()
    assert path.with_name(path.name + ".open").exists(), "the crash is visible on disk"
    with wave.open(str(path)) as wav:  # playable as it was left, before any repair
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int32)
    recorded_s = len(frames) / 2 / 8000
    spoken = np.frombuffer(audioop.ulaw2lin(result.spoken, 2), dtype="<i2").astype(np.int32)
    sent_s = len(spoken) / 8000
    # Up to roughly the last flush: one flush period plus the late-audio slack, plus the
    # killed process's last moments and the loopback.
    assert sent_s - 3.5 <= recorded_s <= sent_s + 0.5, (recorded_s, sent_s)
    # The caller channel is what was sent, sample for sample, on the call's timeline.
    caller_ch = frames[0::2]
    n = len(caller_ch) - 400
    voiced = np.abs(spoken[:n]) > 64
    assert voiced.sum() > 8000  # the question was spoken before the kill
    best = max(_agreement(caller_ch[:n], spoken, lag) for lag in range(-320, 321))
    assert best > 0.999, best
    # Heard channel: the greeting the caller heard is in it.
    assert int((np.abs(frames[1::2]) > 64).sum()) > 8000

    # The next start repairs the header (sizes from the length) and clears the marker.
    assert repair_open_recordings(recordings) == [path]
    assert not path.with_name(path.name + ".open").exists()
    with wave.open(str(path)) as wav:
        assert 44 + 4 * wav.getnframes() == path.stat().st_size
