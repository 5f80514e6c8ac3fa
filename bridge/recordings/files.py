"""Recording files: a two-channel WAV per call, written as the call goes; the retention
sweep; and the repair of files a crash left open.

PCM16 WAV rather than μ-law WAV: every browser, editor and ``sox`` plays it, and the
console draws its waveform with the browser's own decoder.  Written with the standard
library's ``wave`` in worker threads (the event loop carries live audio).

**Crash safety.**  :class:`RecordingFile` appends each flushed stretch and ``wave``
rewrites the RIFF and data sizes after every write, so the file on disk is a valid WAV
up to the last flush at all times; the bytes reach the OS at each flush (a killed
process loses nothing the OS has), and are ``fsync``ed on close (an OS crash can lose
the last few seconds).  While a recording is open a marker ``<name>.wav.open`` sits
beside it: a clean close removes it, so a marker found at startup means the process
died mid-call.  :func:`repair_open_recordings` then fixes that file's header from its
length (a kill between a write and the header rewrite leaves the sizes one flush
short, or a half frame) and removes the marker; the call record already points at the
file, since it is recorded at the first flush.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import struct
import time
import warnings
import wave
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

__all__ = [
    "RecordingFile",
    "interleave",
    "recording_path",
    "repair_open_recordings",
    "sweep",
]

log = logging.getLogger("bridge.recordings")
_SAFE = re.compile(r"[^A-Za-z0-9_-]")


def recording_path(directory: str | Path, call_id: str, when: float | None = None) -> Path:
    """Where a call's recording goes: ``<dir>/<UTC stamp>-<call id>.wav``."""
    stamp = datetime.fromtimestamp(when or time.time(), UTC).strftime("%Y%m%dT%H%M%SZ")
    return Path(directory) / f"{stamp}-{_SAFE.sub('_', call_id)[:64]}.wav"


def interleave(caller: bytes, heard: bytes) -> bytes:
    """Channel 1 = caller, channel 2 = heard: μ-law in, PCM16LE stereo frames out."""
    n = max(len(caller), len(heard))
    left = np.frombuffer(audioop.ulaw2lin(caller.ljust(n, b"\xff"), 2), dtype=np.int16)
    right = np.frombuffer(audioop.ulaw2lin(heard.ljust(n, b"\xff"), 2), dtype=np.int16)
    frames = np.empty(2 * n, dtype="<i2")
    frames[0::2] = left
    frames[1::2] = right
    return frames.tobytes()


def _marker(path: Path) -> Path:
    return path.with_name(path.name + ".open")


class RecordingFile:
    """One call's WAV, open for appending while the call runs (blocking: use a thread)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        # First: a crash from here on is found at startup.  It names its writer, so a
        # replica sharing the directory never "repairs" a file another one is writing.
        _marker(path).write_text(f"{socket.gethostname()} {os.getpid()}\n")
        self._raw = open(path, "wb")  # noqa: SIM115 - closed in close()
        self._wav = wave.open(self._raw, "wb")
        self._wav.setnchannels(2)
        self._wav.setsampwidth(2)
        self._wav.setframerate(8000)
        self.frames = 0

    def append(self, caller: bytes, heard: bytes) -> None:
        """Append a stretch of both channels; the header then counts it (see the notes)."""
        data = interleave(caller, heard)
        if not data:
            return
        self._wav.writeframes(data)  # writes, then patches the RIFF and data sizes
        self._raw.flush()
        self.frames += len(data) // 4

    def close(self) -> None:
        self._wav.close()  # patches the header one last time
        os.fsync(self._raw.fileno())
        self._raw.close()
        _marker(self.path).unlink(missing_ok=True)

    def discard(self) -> None:
        """Close and delete (a call that recorded nothing)."""
        self._wav.close()
        self._raw.close()
        self.path.unlink(missing_ok=True)
        _marker(self.path).unlink(missing_ok=True)


#: ``wave`` writes PCM files with this canonical 44-byte header: RIFF, fmt, data.
_HEADER = 44


#: A recording another host left open counts as abandoned once untouched this long
#: (a live one is appended to every second or so).
STALE_AFTER_S = 120.0


def _abandoned(marker: Path, path: Path, now: float) -> bool:
    """Whether the writer named in ``marker`` is gone: a dead process on this host, or
    (another host's, whose processes we cannot see) a file not written for a while."""
    try:
        host, pid_text = marker.read_text().split()
        pid = int(pid_text)
    except (OSError, ValueError):
        host, pid = "", 0
    if host == socket.gethostname() and pid > 0:
        if pid == os.getpid():
            return False
        try:
            os.kill(pid, 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    try:
        return now - path.stat().st_mtime > STALE_AFTER_S
    except FileNotFoundError:
        return True


def repair_open_recordings(directory: str | Path, now: float | None = None) -> list[Path]:
    """Fix the header of every recording a crash left open; return their paths."""
    repaired: list[Path] = []
    now = time.time() if now is None else now
    for marker in sorted(Path(directory).glob("*.wav.open")):
        path = marker.with_name(marker.name[: -len(".open")])
        if not _abandoned(marker, path, now):
            continue
        try:
            if path.exists():
                _repair(path)
                repaired.append(path)
            marker.unlink()
        except (OSError, ValueError) as exc:
            log.error("recording %s was cut short and cannot be repaired: %s", path.name, exc)
    if repaired:
        log.warning("repaired %d recording(s) cut short by a crash: %s", len(repaired),
                    ", ".join(p.name for p in repaired))
    return repaired


def _repair(path: Path) -> None:
    with open(path, "r+b") as f:
        head = f.read(_HEADER)
        if len(head) < _HEADER or head[:4] != b"RIFF" or head[36:40] != b"data":
            raise ValueError("not a WAV written by the bridge")
        size = os.fstat(f.fileno()).st_size
        data = (size - _HEADER) // 4 * 4  # whole stereo frames only
        f.truncate(_HEADER + data)
        f.seek(4)
        f.write(struct.pack("<I", 36 + data))
        f.seek(40)
        f.write(struct.pack("<I", data))


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
