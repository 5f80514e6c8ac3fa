"""Call recordings: the playout model on its own, and a whole call against the Twilio
caller simulator, whose playback model is Twilio's (frames on a 20 ms clock, marks
echoed when played, clear flushing the queue)."""

from __future__ import annotations

import os
import time
import warnings
import wave
from pathlib import Path

import numpy as np
import pytest

from bridge.devtools.sim.clips import clip_text
from bridge.devtools.sim.demo import AGENT_SCRIPT, CALL_LIMIT_MS, CALLER_SCRIPT, GREETING
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.recordings.files import RecordingFile, sweep
from bridge.recordings.playout import SILENCE, PlayoutRecorder

pytestmark = pytest.mark.e2e

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

FRAME = 160


def tone(n: int, value: int = 0x10) -> bytes:
    return bytes([value]) * n


# ----------------------------------------------------------------- the model


def test_audio_plays_from_the_later_of_now_and_the_end_of_the_queue() -> None:
    rec = PlayoutRecorder()
    rec.play(100, tone(800, 0x11))  # 100 ms of audio at t=100 ms: plays 100..200
    rec.play(120, tone(400, 0x22))  # queued behind it: 200..250
    rec.play(400, tone(80, 0x33))  # the queue ran dry: plays from now, 400..410
    heard = rec.heard()
    assert heard[:800] == bytes([SILENCE]) * 800
    assert heard[800:1600] == tone(800, 0x11)
    assert heard[1600:2000] == tone(400, 0x22)
    assert heard[2000:3200] == bytes([SILENCE]) * 1200
    assert heard[3200:3280] == tone(80, 0x33)
    assert len(heard) == 3280


def test_a_clear_keeps_what_played_before_it_and_drops_the_rest() -> None:
    rec = PlayoutRecorder()
    rec.play(0, tone(8000, 0x11))  # one second queued at once (faster than real time)
    rec.play(10, tone(8000, 0x22))  # and another behind it
    rec.clear(250)  # barge-in at 250 ms
    assert rec.heard() == tone(2000, 0x11)
    assert rec.clears == [(2000, 14000)]
    rec.play(300, tone(80, 0x33))  # new audio after the clear starts from now
    heard = rec.heard()
    assert heard[2000:2400] == bytes([SILENCE]) * 400 and heard[2400:] == tone(80, 0x33)


def test_caller_audio_is_placed_at_its_time_and_channels_align() -> None:
    rec = PlayoutRecorder()
    rec.caller_audio(0, tone(FRAME, 0x44))
    rec.caller_audio(40, tone(FRAME, 0x55))  # a lost frame leaves silence
    rec.play(0, tone(80, 0x11))
    caller, heard = rec.channels()
    assert len(caller) == len(heard) == 480
    assert caller[:160] == tone(FRAME, 0x44) and caller[160:320] == bytes([SILENCE]) * 160
    assert heard[:80] == tone(80, 0x11) and heard[80:] == bytes([SILENCE]) * 400


def _write(path: Path, caller: bytes, heard: bytes) -> Path:
    """A whole recording through the writer calls use (one stretch, then close)."""
    recording = RecordingFile(path)
    recording.append(caller, heard)
    recording.close()
    return path


def test_recording_file_and_retention(tmp_path: Path) -> None:
    path = _write(tmp_path / "a.wav", tone(800, 0x10), tone(400, 0x90))
    with wave.open(str(path)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    assert len(frames) == 1600
    left = np.frombuffer(audioop.ulaw2lin(tone(800, 0x10), 2), dtype=np.int16)
    assert (frames[0::2] == left).all()
    assert (frames[1::2][400:] == 0).all() and (frames[1::2][:400] != 0).all()
    old = _write(tmp_path / "old.wav", tone(8), tone(8))
    week_ago = time.time() - 8 * 86400
    os.utime(old, (week_ago, week_ago))
    assert sweep(tmp_path, 0) == 0 and old.exists()  # 0: keep everything
    assert sweep(tmp_path, 7) == 1
    assert not old.exists() and path.exists()


# ------------------------------------------------------------ a whole call


def _pcm(ulaw: bytes) -> np.ndarray:
    return np.frombuffer(audioop.ulaw2lin(ulaw, 2), dtype=np.int16).astype(np.int32)


def _best_lag(recorded: np.ndarray, truth: np.ndarray, span: int) -> tuple[int, float]:
    """The shift of ``recorded`` against ``truth`` where most samples agree exactly."""
    best = (0, -1.0)
    n = min(len(recorded), len(truth)) - span
    voiced = np.abs(truth[span:n]) > 64
    for lag in range(-span, span + 1):
        agree = recorded[span + lag : n + lag][voiced] == truth[span:n][voiced]
        score = float(agree.mean())
        if score > best[1]:
            best = (lag, score)
    return best


def _stretches(pcm: np.ndarray, gap: int = 8000) -> list[tuple[int, int]]:
    """Voiced stretches [start, end) separated by at least ``gap`` samples of silence."""
    voiced = np.flatnonzero(np.abs(pcm) > 64)
    if not len(voiced):
        return []
    breaks = np.flatnonzero(np.diff(voiced) > gap)
    starts = [voiced[0], *voiced[breaks + 1]]
    ends = [*voiced[breaks] + 1, voiced[-1] + 1]
    return [(int(a), int(b)) for a, b in zip(starts, ends, strict=True)]


def _masked(pcm: np.ndarray, start: int, end: int) -> np.ndarray:
    out = np.zeros_like(pcm)
    out[start:end] = pcm[start:end]
    return out[: end + 4 * FRAME]


async def test_recording_matches_what_the_caller_sent_and_heard(tmp_path: Path) -> None:
    sim = RealtimeSimulator(
        script=AGENT_SCRIPT,
        api_key="sk-recording",
        caller_transcripts=[clip_text(c) for _, c in CALLER_SCRIPT],
    )
    env = {
        "OPENAI_API_KEY": "sk-recording",
        "AGENT_GREETING": GREETING,
        "BRIDGE_RECORDINGS_DIR": str(tmp_path),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'calls.db'}",
    }
    async with sim, LocalBridge(sim.url, env=env) as bridge:
        caller = await bridge.place_call(script=CALLER_SCRIPT, duration_ms=CALL_LIMIT_MS)
        result = await caller.run()
        await bridge.app.state.operator.flush()
        store = bridge.services.store
        assert store is not None
        await store.flush()
        record = await store.get_call(result.call_sid)
    assert result.clears, "the scripted call has a barge-in"
    assert record is not None and record.recording_path is not None
    path = Path(record.recording_path)
    assert path.parent == tmp_path and path.name.endswith(f"-{result.call_sid}.wav")
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 2 and wav.getframerate() == 8000
        frames = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int32)
    caller_ch, heard_ch = frames[0::2], frames[1::2]

    # Channel 1 is the caller's audio, sample for sample, on the call's timeline.
    spoken = _pcm(result.spoken)
    lag_caller, agree = _best_lag(caller_ch, spoken, 2 * FRAME)
    assert agree > 0.999 and abs(lag_caller) <= FRAME, (lag_caller, agree)

    # Channel 2 is what the caller heard: same samples, same timeline, and nothing a
    # clear discarded.  Twilio starts playback on its own 20 ms clock, so each stretch of
    # agent audio (one per item here) may sit up to a frame (plus the loopback's delay)
    # away from where the bridge placed it; checked stretch by stretch.
    heard = _pcm(result.heard)
    stretches = _stretches(heard)
    assert len(stretches) >= 4  # greeting, cut reply, short answer, goodbye
    for start, end in stretches:
        lag, agree = _best_lag(heard_ch[: end + 4 * FRAME], _masked(heard, start, end),
                               2 * FRAME)
        assert agree > 0.99 and abs(lag) <= FRAME + 40, (start, end, lag, agree)
    voiced_recorded = int((np.abs(heard_ch) > 64).sum())
    voiced_heard = int((np.abs(heard) > 64).sum())
    # At each clear the bridge cuts the recording at its own clock.  Twilio lets the frame
    # already sounding finish (up to a frame more heard), and its 20 ms playout clock may
    # have started the stretch up to a frame after the bridge placed it (up to a frame
    # less heard: seen as 14 samples on a loaded host).  So a frame either way per clear.
    slack = FRAME * len(result.clears)
    assert -slack <= voiced_heard - voiced_recorded <= slack + FRAME, (
        voiced_heard, voiced_recorded)
    discarded = sum(c.discarded_bytes for c in result.clears)
    assert discarded > 8000  # seconds of reply were cut, and are not in the recording
    sent = result.outbound_bytes
    assert voiced_recorded < sent - discarded + FRAME
