"""Recording live calls to tapes (``BRIDGE_TAPES_DIR``).

The relay hands every input and every action to a :class:`TapeRecorder`
(its ``TapeSink``) on the audio path, so recording must be cheap and must
never break a call:

* a line is a string built by formatting; sends embed the exact wire text the
  relay already serialised, so nothing is encoded twice;
* each line is written to a buffered file and flushed (no fsync): a killed
  process leaves every complete line readable; gzip tapes are flushed in small
  batches (and on close) so compression still works;
* any failure disables the recorder for that call with one log line, the call
  goes on.

The header waits for ``accept``, where the driver picks the agent for the call,
so the header describes the agent that actually answered (the few lines before
it are held in memory meanwhile).
"""

from __future__ import annotations

import gzip
import json
import logging
import secrets
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from bridge.config import Settings
from bridge.core import events as ev
from bridge.core.actions import Action
from bridge.core.call import Call
from bridge.core.config import CallConfig
from bridge.realtime.dialects import DialectSpec, dialect_for
from bridge.tapes.format import (
    TAPE_VERSION,
    Redactor,
    TapeWire,
    config_to_json,
    input_line,
    output_line,
    trailer_line,
)

log = logging.getLogger("bridge.tapes")

_HOLD_LINES = 500
"""Lines kept in memory before ``accept``; past this the header is written with the
session's initial config (a stream that is never accepted still gets its tape)."""
_GZIP_BATCH = 64


def bridge_version() -> str:
    from bridge import __version__

    return __version__


def make_header(
    config: CallConfig,
    initial: CallConfig | None,
    dialect: DialectSpec,
    *,
    clock_origin_ms: int,
    call_sid: str | None = None,
    stream_sid: str | None = None,
) -> dict[str, Any]:
    """The tape's first line: what the call ran with (never a secret)."""
    header: dict[str, Any] = {
        "tape": TAPE_VERSION,
        "bridge_version": bridge_version(),
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
        **config_to_json(config, dialect),
        "call_sid": call_sid,
        "stream_sid": stream_sid,
        "clock_origin_ms": clock_origin_ms,
    }
    if initial is not None:
        initial_json = config_to_json(initial, dialect)
        if initial_json != config_to_json(config, dialect):
            header["initial"] = initial_json
    return header


class TapeRecorder:
    """A ``TapeSink`` (see ``bridge.relay``) writing one call to ``directory``."""

    def __init__(
        self,
        directory: str | Path,
        call: Call,
        dialect: DialectSpec,
        redactor: Redactor,
        *,
        compress: bool = False,
        header_extra: dict[str, Any] | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.call = call
        self.dialect = dialect
        self.wire = TapeWire(dialect, call.config.audio_mode)
        self.redact = redactor
        self.compress = compress
        self.path: Path | None = None
        self._header_extra = dict(header_extra or {})
        self._initial = call.config
        self._header_config: dict[str, Any] | None = None
        self._held: list[str] = []
        self._file: IO[bytes] | None = None
        self._raw: IO[bytes] | None = None
        self._unflushed = 0
        self._t0: int | None = None
        self._last_t = 0
        self._closed = False

    # ----------------------------------------------------------- TapeSink

    def event(self, now: int, event: ev.Event, frame: str | bytes | None, peer: str) -> None:
        if self._closed:
            return
        try:
            if self._t0 is None:
                self._t0 = now
            t = now - self._t0
            if isinstance(event, ev.StreamStarted) and frame is not None:
                self.wire.caller.parse(frame)  # learn the stream SID our sends carry
            if isinstance(event, ev.StreamAccepted) and event.config is not None:
                self._accept(t, event)
                return
            self._emit(input_line(t, event, frame, peer, self.redact), t)
        except Exception:  # noqa: BLE001 - a tape must never break a call
            self._fail()

    def action(self, now: int, action: Action) -> None:
        if self._closed:
            return
        try:
            t = now - (self._t0 if self._t0 is not None else now)
            line = output_line(t, action, self.wire, self.redact)
            if line is not None:
                self._emit(line, t)
        except Exception:  # noqa: BLE001
            self._fail()

    def close(self) -> None:
        if self._closed:
            return
        try:
            if self._file is None:
                self._open(self._initial)
            self._write(trailer_line(self._last_t), force_flush=True)
        except Exception:  # noqa: BLE001
            self._fail()
            return
        self._closed = True
        self._close_files()
        log.info("call tape written: %s", self.path)

    # ----------------------------------------------------------- internals

    def _accept(self, t: int, event: ev.StreamAccepted) -> None:
        config_json = config_to_json(event.config, self.dialect)
        if self._file is None:
            self._open(event.config)
        ref: Any = "header" if config_json == self._header_config else config_json
        self._emit(input_line(t, event, None, "bridge", self.redact, ref), t)

    def _emit(self, line: str, t: int) -> None:
        if t > self._last_t:
            self._last_t = t
        if self._file is None:
            self._held.append(line)
            if len(self._held) >= _HOLD_LINES:
                self._open(self._initial)
            return
        self._write(line)

    def _open(self, config: CallConfig) -> None:
        stream = self.call.stream
        call_sid = stream.call_sid if stream else None
        header = make_header(
            config,
            self._initial,
            self.dialect,
            clock_origin_ms=self._t0 or 0,
            call_sid=call_sid,
            stream_sid=stream.stream_sid if stream else None,
        )
        header.update(self._header_extra)
        self._header_config = config_to_json(config, self.dialect)
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        name = f"{stamp}-{call_sid or 'call-' + secrets.token_hex(4)}.jsonl"
        if self.compress:
            name += ".gz"
        self.directory.mkdir(parents=True, exist_ok=True)
        self.path = self.directory / name
        self._raw = open(self.path, "wb")  # noqa: SIM115 - closed in close()
        self._file = (
            gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6)  # type: ignore[assignment]
            if self.compress
            else self._raw
        )
        held, self._held = self._held, []
        self._write(self.redact(json.dumps(header)) + "\n" + "".join(held), force_flush=True)

    def _write(self, text: str, force_flush: bool = False) -> None:
        assert self._file is not None
        self._file.write(text.encode("utf-8"))
        if not self.compress:
            self._file.flush()
            return
        self._unflushed += 1
        if force_flush or self._unflushed >= _GZIP_BATCH:
            self._unflushed = 0
            self._file.flush(zlib.Z_SYNC_FLUSH)  # type: ignore[call-arg]
            assert self._raw is not None
            self._raw.flush()

    def _close_files(self) -> None:
        for handle in (self._file, self._raw):
            if handle is not None:
                try:
                    handle.close()
                except Exception:  # noqa: BLE001
                    pass
        self._file = self._raw = None

    def _fail(self) -> None:
        log.warning("call tape disabled after an error (%s)", self.path or self.directory,
                    exc_info=True)
        self._closed = True
        self._close_files()


def settings_redactor(settings: Settings) -> Redactor:
    """Every configured secret value, for scanning tape lines."""
    return Redactor(
        [settings.openai_api_key, settings.twilio_auth_token, settings.twilio_api_secret]
    )


def open_tape(
    settings: Settings, call: Call, *, compress: bool | None = None
) -> TapeRecorder | None:
    """A recorder for one call in ``settings.tapes_dir``, or None when tapes are off.

    ``compress`` defaults to ``settings.tapes_gzip`` (``BRIDGE_TAPES_GZIP``)."""
    if not settings.tapes_dir:
        return None
    if compress is None:
        compress = settings.tapes_gzip
    return TapeRecorder(
        settings.tapes_dir,
        call,
        dialect_for(settings.dialect, settings.realtime_url),
        settings_redactor(settings),
        compress=compress,
        header_extra={"transfer_numbers": list(settings.transfer_numbers)},
    )


__all__ = ["TapeRecorder", "make_header", "open_tape", "settings_redactor"]
