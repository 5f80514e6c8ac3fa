"""Recording files: a two-channel WAV per call, and the retention sweep.

PCM16 WAV rather than μ-law WAV: every browser, editor and ``sox`` plays it, and the
console draws its waveform with the browser's own decoder.  Written with the standard
library's ``wave`` in a worker thread, because an hour-long call is ~115 MB and the
event loop carries live audio.
"""

from __future__ import annotations

import logging
import re
import time
import warnings
import wave
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = ["recording_path", "sweep", "write_recording"]

log = logging.getLogger("bridge.recordings")
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def recording_path(directory: str | Path, call_id: str, when: float | None = None) -> Path:
    """Where a call's recording goes: ``<dir>/<UTC stamp>-<call id>.wav``."""
    stamp = datetime.fromtimestamp(when or time.time(), UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(directory) / f"{stamp}-{_SAFE.sub('_', call_id)[:64]}.wav"


def write_recording(path: Path, caller: bytes, heard: bytes) -> Path:
    """Write channel 1 = caller, channel 2 = heard (μ-law in, PCM16 8 kHz out)."""
    n = max(len(caller), len(heard))
    left = np.frombuffer(audioop.ulaw2lin(caller.ljust(n, b"\xff"), 2), dtype=np.int16)
    right = np.frombuffer(audioop.ulaw2lin(heard.ljust(n, b"\xff"), 2), dtype=np.int16)
    frames = np.empty(2 * n, dtype="<i2")
    frames[0::2] = left
    frames[1::2] = right
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".wav.partial")
    with wave.open(str(partial), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(8000)
        out.writeframes(frames.tobytes())
    partial.replace(path)  # readers never see half a file
    return path


def sweep(directory: str | Path, retention_days: int, now: float | None = None) -> int:
    """Delete recordings older than ``retention_days`` (0 keeps everything); return count."""
    if retention_days <= 0:
        return 0
    cutoff = (now or time.time()) - retention_days * 86400
    removed = 0
    for path in Path(directory).glob("*.wav"):
        try:
            if path.stat().st_mtime < cutoff:
                path.unlink()
                removed += 1
        except OSError as exc:
            log.warning("recording retention: cannot remove %s: %s", path.name, exc)
    if removed:
        log.info("recording retention: removed %d recording(s) older than %d days",
                 removed, retention_days)
    return removed
