"""The tape format: one recorded call as JSON Lines (spec in ``docs/tapes.md``).

A tape is the exact input and output streams of one :class:`CallSession`, so
that a call can be replayed through the very same core on a virtual clock.
This module is the single place that knows how records look: the recorder
writes lines with it, the replayer reads them back and turns them into
:class:`~bridge.core.inputs.CallInput` values, and both turn actions into
records the same way so the comparison is a plain equality.

Why JSON Lines: every line is valid on its own, so a tape written by a process
that was killed mid-call is still readable up to its last complete line, and
tapes can be grepped, diffed and read by humans.  Frames are stored parsed
(``msg``) rather than as escaped strings for the same reason.
"""

from __future__ import annotations

import base64
import dataclasses
import gzip
import json
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bridge.config import AgentConfig, AudioMode, Secret, TurnDetection
from bridge.core import events as ev
from bridge.core.actions import (
    TO_CALLER,
    TO_MODEL,
    Action,
    AuthoriseStream,
    ConnectModel,
    ControlCall,
    DiscardStandby,
    EndCall,
    Notice,
    Observed,
    PrepareStandby,
    RunTool,
    SwitchToStandby,
    ToStandby,
    TranscriptLine,
    Usage,
    WakeAt,
)
from bridge.core.config import CallConfig, ControlRequest
from bridge.core.stream import StreamInfo
from bridge.realtime.dialects import DialectSpec
from bridge.realtime.wire import RealtimeProtocol
from bridge.twilio.media import TwilioMediaProtocol
from bridge.twilio.twiml import PARAM_TOKEN

TAPE_VERSION = 2
"""2: the typed core (key presses sent as pressed, hang-up timing on the tape).
Version 1 tapes still load; see docs/tapes.md for when they need re-authoring."""

REDACTED = "***"
_COMPACT = (",", ":")

#: Driver and connection events: record kind <-> event class (frames are stored raw).
EVENT_KINDS: dict[str, type] = {
    "leg_opened": ev.LegOpened,
    "accept": ev.StreamAccepted,
    "refused": ev.StreamRefused,
    "model_connected": ev.ModelConnected,
    "model_failed": ev.ModelUnavailable,
    "tool_result": ev.ToolFinished,
    "control_done": ev.ControlFinished,
    "timer": ev.TimerFired,
    "standby_connected": ev.StandbyConnected,
    "standby_ready": ev.StandbyReady,
    "standby_failed": ev.StandbyFailed,
    "twilio_closed": ev.CallerGone,
    "model_closed": ev.ModelDisconnected,
    "end": ev.EndRequested,
    "problem": ev.ProtocolProblem,
}
_KIND_OF_EVENT = {cls: kind for kind, cls in EVENT_KINDS.items()}
#: Version 1 names for the same inputs.
_V1_KINDS = {"tick": "timer"}

#: The peer each driver-side input is attributed to on the tape.
INPUT_PEERS: dict[str, str] = {
    "model_connected": "model",
    "model_failed": "model",
    "model_closed": "model",
    "twilio_closed": "twilio",
}

#: Bridge-side actions: class -> record kind.
ACTION_KINDS: dict[type, str] = {
    AuthoriseStream: "stream_started",
    ConnectModel: "connect_model",
    PrepareStandby: "prepare_standby",
    ToStandby: "to_standby",
    SwitchToStandby: "switch_to_standby",
    DiscardStandby: "discard_standby",
    RunTool: "run_tool",
    ControlCall: "call_control",
    TranscriptLine: "transcript",
    Usage: "usage",
    Notice: "notice",
    EndCall: "end_call",
}

#: Actions a tape leaves out: derived from the events (timeline) or pure scheduling.
UNRECORDED: tuple[type, ...] = (Observed, WakeAt)


class TapeWire:
    """The wire protocols a tape's frames and sends are written in."""

    def __init__(self, dialect: DialectSpec, audio_mode: AudioMode) -> None:
        self.caller = TwilioMediaProtocol()
        self.model = RealtimeProtocol(dialect, audio_mode)

    def parse(self, peer: str, frame: str | bytes) -> ev.Event:
        if peer == "twilio":
            return self.caller.parse(frame)
        return self.model.parse(frame)


class TapeError(ValueError):
    """The file is not a tape this bridge can read (bad header, newer version)."""


# ------------------------------------------------------------------ secrets


class Redactor:
    """Replaces known secret values wherever they occur in a line.

    The recorder knows the configured secrets up front and learns the stream
    token when ``start`` arrives; scanning every finished line (a few substring
    searches) is cheap and catches a secret however it got there.
    """

    def __init__(self, values: Iterable[str | Secret | None] = ()) -> None:
        self._values: list[str] = []
        for value in values:
            self.add(value)

    def add(self, value: str | Secret | None) -> None:
        raw = value.reveal() if isinstance(value, Secret) else value
        # Very short values would redact innocent text (and are not real secrets).
        if raw and len(raw) >= 6 and raw != REDACTED and raw not in self._values:
            self._values.append(raw)

    def __call__(self, text: str) -> str:
        for value in self._values:
            if value in text:
                text = text.replace(value, REDACTED)
        return text


def redact_start(message: dict[str, Any]) -> str | None:
    """Blank the stream token in a ``start`` message in place; return its old value."""
    start = message.get("start")
    params = start.get("customParameters") if isinstance(start, dict) else None
    if isinstance(params, dict) and isinstance(params.get(PARAM_TOKEN), str):
        token: str = params[PARAM_TOKEN]
        params[PARAM_TOKEN] = REDACTED
        return token
    return None


# ------------------------------------------------------------- session config


def _audio_to_json(audio: bytes) -> str:
    """A prompt clip in the header: the bundled clip's name, else the bytes (base64)."""
    from bridge.audio.prompts import BUNDLED_PROMPTS, bundled_prompt

    for name in BUNDLED_PROMPTS:
        if audio == bundled_prompt(name):
            return f"bundled:{name}"
    return "b64:" + base64.b64encode(audio).decode("ascii")


def _audio_from_json(value: Any) -> bytes:
    text = str(value or "")
    if text.startswith("bundled:"):
        from bridge.audio.prompts import bundled_prompt

        return bundled_prompt(text.removeprefix("bundled:"))
    if text.startswith("b64:"):
        return base64.b64decode(text.removeprefix("b64:"))
    return b""


def config_to_json(config: CallConfig, dialect: DialectSpec) -> dict[str, Any]:
    """The CallConfig as header fields (``agent`` and ``dialect`` flattened)."""
    session = {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if f.name not in {"agent", "audio_mode", "model", "tools"}
    }
    for name, value in session.items():
        if isinstance(value, bytes):
            session[name] = _audio_to_json(value) if value else ""
    return {
        "audio_mode": config.audio_mode,
        "dialect": dialect.name,
        "dialect_beta_shape": dialect.beta_shape,
        "model": config.model,
        "agent": dataclasses.asdict(config.agent),
        "tools": [dict(t) for t in config.tools],
        "session": session,
    }


def _known(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """Only the fields ``cls`` has: a newer recorder may have added some."""
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def dialect_from_json(data: dict[str, Any]) -> DialectSpec:
    return DialectSpec(data.get("dialect", "ga"), bool(data.get("dialect_beta_shape", False)))


def config_from_json(data: dict[str, Any]) -> CallConfig:
    """Rebuild the CallConfig a tape was recorded with (inverse of config_to_json)."""
    agent_data = dict(data.get("agent") or {})
    td = TurnDetection(**_known(TurnDetection, dict(agent_data.pop("turn_detection", {}) or {})))
    if "tools" in agent_data:
        agent_data["tools"] = tuple(agent_data["tools"])
    if "cascade" in agent_data:  # (key, value) pairs: JSON gives lists of lists
        agent_data["cascade"] = tuple(tuple(pair) for pair in agent_data["cascade"] or ())
    agent = AgentConfig(turn_detection=td, **_known(AgentConfig, agent_data))
    session = _known(CallConfig, dict(data.get("session") or {}))
    for name in ("filler_audio", "apology_audio"):
        if name in session:
            session[name] = _audio_from_json(session[name])
    return CallConfig(
        agent=agent,
        audio_mode=data.get("audio_mode", "passthrough"),
        model=str(data.get("model", "gpt-realtime")),
        tools=tuple(data.get("tools") or ()),
        **session,
    )


# ------------------------------------------------------------------ records


def _event_data(event: ev.Event, config_ref: Any) -> dict[str, Any]:
    if isinstance(event, ev.StreamAccepted):
        return {"config": config_ref} if event.config is not None else {}
    data = dataclasses.asdict(event)
    return {k: v for k, v in data.items() if v is not None and v != ""}


def input_line(
    t: int,
    event: ev.Event,
    frame: str | bytes | None,
    peer: str,
    redact: Redactor,
    config_ref: Any = "header",
) -> str:
    """One input as a tape line (with its newline); learns the stream token on ``start``.

    A frame is kept as it arrived (parsed again on replay); other events by kind.  An
    ``accept`` carrying a config stores ``config_ref``: ``"header"`` when the header
    holds that very config (the normal case), else the config itself."""
    if frame is not None and peer in ("twilio", "model"):
        return _frame_line(t, peer, frame, redact)
    kind = _KIND_OF_EVENT.get(type(event))
    if kind is None:
        # An in-process backend's event (no frame): kept by class name.
        record = {"t": t, "dir": "in", "peer": peer, "kind": "event",
                  "type": type(event).__name__, "data": dataclasses.asdict(event)}
    else:
        record = {"t": t, "dir": "in", "peer": INPUT_PEERS.get(kind, peer), "kind": kind}
        data = _event_data(event, config_ref)
        if data:
            record["data"] = data
    return redact(json.dumps(record, default=str, separators=_COMPACT)) + "\n"


def _frame_line(t: int, peer: str, frame: str | bytes, redact: Redactor) -> str:
    head = f'{{"t":{t},"dir":"in","peer":"{peer}",'
    if isinstance(frame, bytes):
        try:
            text = frame.decode("utf-8")
        except UnicodeDecodeError:
            import base64

            return head + f'"kind":"binary","raw_b64":"{base64.b64encode(frame).decode()}"}}\n'
    else:
        text = frame
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError):
        return redact(head + f'"kind":"unparsed","raw":{json.dumps(text)}}}') + "\n"
    kind = "frame"
    if isinstance(msg, dict):
        value = msg.get("event" if peer == "twilio" else "type")
        kind = value if isinstance(value, str) else "frame"
        if peer == "twilio" and kind == "start":
            redact.add(redact_start(msg))
            text = json.dumps(msg, separators=_COMPACT)
    if "\n" in text or "\r" in text:
        text = json.dumps(msg, separators=_COMPACT)  # keep one record per line
    return redact(head + f'"kind":{json.dumps(kind)},"msg":{text}}}') + "\n"


def output_record(t: int, action: Action, wire: TapeWire) -> dict[str, Any] | None:
    """An action as a record dict (None for what tapes leave out).

    Sends are kept as the wire messages they become, so a tape reads like the call's
    traffic and live replays can compare what really went over the sockets."""
    kind_of = type(action)
    if kind_of in UNRECORDED:
        return None
    if kind_of in TO_CALLER:
        msg = json.loads(wire.caller.serialise(action))  # type: ignore[arg-type]
        return {"t": t, "dir": "out", "peer": "twilio", "kind": str(msg.get("event")), "msg": msg}
    if kind_of in TO_MODEL:
        event = wire.model.client_event(action)  # type: ignore[arg-type]
        return {"t": t, "dir": "out", "peer": "model", "kind": str(event.get("type")), "msg": event}
    kind = ACTION_KINDS.get(kind_of, kind_of.__name__)
    if isinstance(action, ToStandby):
        events = [wire.model.client_event(a) for a in action.actions]
        return {"t": t, "dir": "out", "peer": "bridge", "kind": kind, "data": {"events": events}}
    data = dataclasses.asdict(action) if dataclasses.is_dataclass(action) else {}
    if isinstance(action, AuthoriseStream):
        params = dict(action.info.custom_parameters)
        if PARAM_TOKEN in params:
            params[PARAM_TOKEN] = REDACTED
        data["info"]["custom_parameters"] = params
    # Normalise tuples and the like to what JSON gives back, so records compare equal.
    return {"t": t, "dir": "out", "peer": "bridge", "kind": kind,
            "data": json.loads(json.dumps(data, default=str))}


def output_line(t: int, action: Action, wire: TapeWire, redact: Redactor) -> str | None:
    record = output_record(t, action, wire)
    if record is None:
        return None
    return redact(json.dumps(record, default=str, separators=_COMPACT)) + "\n"


def input_from_record(
    record: dict[str, Any], header_config: CallConfig | None, wire: TapeWire
) -> ev.Event:
    """The event a tape input record stands for (frames parsed by ``wire``)."""
    peer = str(record.get("peer"))
    if "msg" in record or "raw" in record or "raw_b64" in record:
        frame: str | bytes
        if "msg" in record:
            frame = json.dumps(record["msg"])
        elif "raw" in record:
            frame = str(record["raw"])
        else:
            import base64

            frame = base64.b64decode(record["raw_b64"])
        return wire.parse(peer, frame)
    kind = str(record.get("kind"))
    data = dict(record.get("data") or {})
    if kind == "event":
        return _typed_event(str(record.get("type")), data)
    kind = _V1_KINDS.get(kind, kind)
    cls = EVENT_KINDS.get(kind)
    if cls is None:
        raise TapeError(f"unknown input kind {kind!r} at t={record.get('t')}")
    if cls is ev.StreamAccepted:
        spec = data.get("config")
        if spec is None:
            return ev.StreamAccepted()
        return ev.StreamAccepted(header_config if spec == "header" else config_from_json(spec))
    if cls is ev.ToolFinished:
        control = data.get("control")
        request = ControlRequest(**_known(ControlRequest, control)) if control else None
        return ev.ToolFinished(str(data["call_id"]), str(data["output"]), request)
    return cls(**_known(cls, data))  # type: ignore[no-any-return,return-value]


def _typed_event(name: str, data: dict[str, Any]) -> ev.Event:
    cls = getattr(ev, name, None)
    if not isinstance(cls, type) or not dataclasses.is_dataclass(cls):
        raise TapeError(f"unknown event type {name!r}")
    if cls is ev.StreamStarted:
        info = dict(data["info"])
        info["tracks"] = tuple(info.get("tracks") or ())
        return ev.StreamStarted(StreamInfo(**_known(StreamInfo, info)))
    return cls(**_tuples_back(cls, _known(cls, data)))  # type: ignore[no-any-return,return-value]


def _tuples_back(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    """JSON has no tuples: a field declared ``tuple[...]`` gets its list back as a tuple
    (nested lists too), so a replayed event equals the recorded one and stays hashable.
    Dict fields (a cascade's usage with its latency breakdown) need nothing: JSON keeps
    them as they were."""
    hints = {f.name: str(f.type) for f in dataclasses.fields(cls)}
    out = dict(data)
    for name, value in data.items():
        if isinstance(value, list) and hints.get(name, "").startswith("tuple"):
            out[name] = _as_tuple(value)
    return out


def _as_tuple(value: Any) -> Any:
    return tuple(_as_tuple(v) for v in value) if isinstance(value, list) else value


# -------------------------------------------------------------------- files


@dataclass
class Tape:
    """A loaded tape: header, records in file order, and how the file ended."""

    header: dict[str, Any]
    records: list[dict[str, Any]] = field(default_factory=list)
    complete: bool = True
    """False when the trailer is missing (the recorder was killed or the file was cut)."""
    problems: list[str] = field(default_factory=list)
    path: str | None = None

    @property
    def inputs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("dir") == "in"]

    @property
    def outputs(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("dir") == "out"]

    @property
    def config(self) -> CallConfig:
        """The config the call was accepted with."""
        return config_from_json(self.header)

    @property
    def dialect(self) -> DialectSpec:
        return dialect_from_json(self.header)

    def wire(self) -> TapeWire:
        """Fresh protocol state for reading this tape's frames and writing its sends."""
        return TapeWire(self.dialect, self.config.audio_mode)

    @property
    def initial_config(self) -> CallConfig:
        """The config the session was created with (before the agent was chosen)."""
        initial = self.header.get("initial")
        return config_from_json(initial) if initial else self.config


def _read_text(path: Path) -> tuple[str, bool]:
    """The file's text and whether it decoded cleanly (a cut gzip stream still yields
    everything up to its last flushed block)."""
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        inflater = zlib.decompressobj(wbits=31)
        try:
            raw = inflater.decompress(data)
            ok = inflater.eof
        except zlib.error:
            raw, ok = b"", False
        return raw.decode("utf-8", errors="replace"), ok
    return data.decode("utf-8", errors="replace"), True


def load_tape(path: str | Path) -> Tape:
    """Read a tape, tolerating a cut-off end: a partial last line is dropped."""
    path = Path(path)
    text, clean = _read_text(path)
    lines = text.split("\n")
    problems: list[str] = []
    if not clean:
        problems.append("the gzip stream ends early (recording interrupted)")
    if not lines or not lines[0].strip():
        raise TapeError(f"{path}: empty file, not a tape")
    try:
        header = json.loads(lines[0])
    except ValueError as exc:
        raise TapeError(f"{path}: the first line is not a tape header ({exc})") from None
    if not isinstance(header, dict) or "tape" not in header:
        raise TapeError(f"{path}: the first line is not a tape header (no 'tape' key)")
    if not isinstance(header["tape"], int) or header["tape"] > TAPE_VERSION:
        raise TapeError(
            f"{path}: tape format {header['tape']!r} is newer than this bridge reads "
            f"(up to {TAPE_VERSION}); upgrade the bridge"
        )
    tape = Tape(header=header, path=str(path), problems=problems)
    complete = False
    last = len(lines) - 1
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            if number - 1 == last or (number - 1 == last - 1 and not lines[last].strip()):
                problems.append(f"line {number} is cut off; ignored")
                break
            raise TapeError(f"{path}:{number}: not valid JSON") from None
        if record.get("dir") == "meta":
            complete = complete or record.get("kind") == "end_of_tape"
            continue
        tape.records.append(record)
    tape.complete = complete and clean
    if not complete:
        problems.append("no end-of-tape trailer: the recording did not finish")
    return tape


def dump_lines(header: dict[str, Any], records: Iterable[dict[str, Any]]) -> Iterator[str]:
    """Header, records and trailer as lines (for rewriting a tape, e.g. ``--update``)."""
    yield json.dumps(header) + "\n"
    last_t = 0
    for record in records:
        last_t = max(last_t, int(record.get("t", 0)))
        yield json.dumps(record, separators=_COMPACT) + "\n"
    yield trailer_line(last_t)


def trailer_line(t: int) -> str:
    return json.dumps({"t": t, "dir": "meta", "kind": "end_of_tape"}, separators=_COMPACT) + "\n"


def write_tape(path: str | Path, header: dict[str, Any], records: Iterable[dict[str, Any]]) -> None:
    """Write a whole tape at once (gzip when the name ends in ``.gz``)."""
    path = Path(path)
    text = "".join(dump_lines(header, records)).encode("utf-8")
    if path.name.endswith(".gz"):
        # mtime=0 keeps regenerated tapes byte-identical when nothing changed.
        text = gzip.compress(text, compresslevel=9, mtime=0)
    path.write_bytes(text)
