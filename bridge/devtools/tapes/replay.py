"""Replaying a tape through the call core on a virtual clock, and diffing the result.

The core is sans-I/O and takes the time as an argument, so a replay is just a
loop: rebuild the :class:`SessionConfig` from the header, create a fresh
:class:`CallSession`, feed every recorded input through
:func:`~bridge.core.inputs.apply_input` at its recorded time, collect the
actions.  No sockets and no sleeping: a five-minute call replays in a fraction
of a second, so every recorded call becomes a regression test of barge-in,
truncation, tool and hang-up behaviour.

Outputs are compared per peer (what went to Twilio, to the model, and the
bridge's own actions).  The live relay may interleave one step's sends with
another step's record lines while it awaits a socket, but each output is
stamped with the time of the input that produced it, and inputs are applied
in order, so sorting the recorded outputs of one peer by time (stably) gives
exactly the order the core produced them in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import dataclasses
import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from difflib import SequenceMatcher
from pathlib import Path
from typing import Any

from bridge.core.actions import RunTool
from bridge.core.call import Call
from bridge.tapes.format import (
    REDACTED,
    Tape,
    input_from_record,
    load_tape,
    output_record,
    write_tape,
)
from bridge.tools import ToolContext, ToolRegistry, build_registry
from bridge.twilio.twiml import PARAM_TOKEN

ToolsSpec = ToolRegistry | Sequence[str] | None
"""A registry, or tool entries as in ``AGENT_TOOLS`` (built-in names, ``module:attr``)."""

_AUDIO_KEYS = {"payload", "delta", "audio"}
_PEERS = ("twilio", "model", "bridge")


@dataclass(frozen=True)
class Difference:
    """One way the replay differs from the tape, readable on its own."""

    t: int
    peer: str
    kind: str
    detail: str

    def __str__(self) -> str:
        side = "bridge" if self.peer == "bridge" else f"{self.peer} out"
        return f"t={self.t}ms {side} {self.kind}: {self.detail}"


@dataclass
class ReplayResult:
    """What a replay produced and how it differs from the recording."""

    tape: Tape
    outputs: list[dict[str, Any]]
    differences: list[Difference]
    records: list[dict[str, Any]] = field(default_factory=list)
    """The tape rewritten with the replay's outputs (for ``--update``)."""
    elapsed_s: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.differences

    def report(self, limit: int = 30) -> str:
        """A readable summary: one line per difference (the first ``limit``)."""
        name = self.tape.path or "tape"
        inputs = sum(1 for r in self.tape.records if r.get("dir") == "in")
        head = (
            f"{name}: {inputs} inputs, {len(self.outputs)} outputs replayed in "
            f"{self.elapsed_s * 1000:.0f} ms"
        )
        notes = [f"  note: {p}" for p in self.tape.problems]
        if self.ok:
            return "\n".join([head + ": identical", *notes])
        lines = [f"{head}: {len(self.differences)} difference(s)", *notes]
        lines += [f"  {d}" for d in self.differences[:limit]]
        if len(self.differences) > limit:
            lines.append(f"  ... and {len(self.differences) - limit} more")
        return "\n".join(lines)


# ------------------------------------------------------------------ running


def _run_blocking(coro: Any) -> Any:
    """Run a coroutine to completion from sync code, even inside a running loop
    (``assert_replays`` is called from async tests too)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coro).result()


def _registry(tools: ToolsSpec) -> ToolRegistry | None:
    if tools is None:
        return None
    if isinstance(tools, ToolRegistry):
        return tools
    return build_registry(list(tools))


def _tool_context(call: Call, tape: Tape) -> ToolContext:
    info = call.stream
    params = dict(info.custom_parameters) if info else {}
    params.pop(PARAM_TOKEN, None)
    return ToolContext(
        call_sid=info.call_sid if info else None,
        stream_sid=info.stream_sid if info else None,
        from_number=params.get("From"),
        to_number=params.get("To"),
        agent_name=call.config.agent.name,
        custom_parameters=params,
        transfer_numbers=tuple(tape.header.get("transfer_numbers") or ()),
        transfer_labels=dict(tape.header.get("transfer_labels") or {}),
    )


def replay(source: str | Path | Tape, *, tools: ToolsSpec = None) -> ReplayResult:
    """Replay a tape through a fresh core and compare its outputs with the recording.

    Tool results come from the tape, unless ``tools`` is given: then each tool the
    model calls is run again, its output compared with the recorded one, and the new
    output fed to the core (so its consequences show up in the diff too).
    """
    tape = source if isinstance(source, Tape) else load_tape(source)
    started = time.perf_counter()
    registry = _registry(tools)
    header_config = tape.config
    call = new_call(tape)
    wire = tape.wire()
    origin = int(tape.header.get("clock_origin_ms") or 0)
    outputs: list[dict[str, Any]] = []
    records: list[dict[str, Any]] = []
    differences: list[Difference] = []
    reruns: dict[str, tuple[str, str, dict[str, Any] | None]] = {}
    for record in tape.records:
        if record.get("dir") != "in":
            continue
        t = int(record["t"])
        if record.get("kind") == "tool_result" and registry is not None:
            record = _rerun_result(record, reruns, differences)
        records.append(record)
        event = input_from_record(record, header_config, wire)
        for action in call.handle(event, origin + t):
            out = output_record(t, action, wire)
            if out is None:
                continue
            outputs.append(out)
            records.append(out)
            if registry is not None and isinstance(action, RunTool):
                outcome = _run_blocking(
                    registry.run(action.name, action.arguments, _tool_context(call, tape))
                )
                control = dataclasses.asdict(outcome.control) if outcome.control else None
                reruns[action.call_id] = (action.name, outcome.output, control)
    differences += compare(tape.outputs, outputs, complete=tape.complete)
    differences.sort(key=lambda d: d.t)
    return ReplayResult(
        tape, outputs, differences, records, elapsed_s=time.perf_counter() - started
    )


def new_call(tape: Tape) -> Call:
    """A fresh core set up as the recorded call's was at its start."""
    config = tape.initial_config
    codec = None
    if config.audio_mode != "passthrough":
        from bridge.audio.transcoder import Pcm16Transcoder

        codec = Pcm16Transcoder()
    return Call(config, codec)


def _rerun_result(
    record: dict[str, Any],
    reruns: dict[str, tuple[str, str, dict[str, Any] | None]],
    differences: list[Difference],
) -> dict[str, Any]:
    """The recorded tool_result with the re-run tool's output, noting any change."""
    data = dict(record.get("data") or {})
    rerun = reruns.get(str(data.get("call_id")))
    if rerun is None:
        return record
    name, output, control = rerun
    t = int(record["t"])
    if _json_or_text(output) != _json_or_text(str(data.get("output", ""))):
        differences.append(Difference(
            t, "bridge", f"tool_result {name}",
            f"output expected {_short(data.get('output'))}, got {_short(output)}",
        ))
    if (control or None) != (data.get("control") or None):
        differences.append(Difference(
            t, "bridge", f"tool_result {name}",
            f"control expected {_short(data.get('control'))}, got {_short(control)}",
        ))
    data["output"], data["control"] = output, control
    return {**record, "data": data}


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


# --------------------------------------------------------------- comparing


def compare(
    expected: list[dict[str, Any]],
    got: list[dict[str, Any]],
    *,
    complete: bool = True,
    with_times: bool = True,
) -> list[Difference]:
    """Differences between recorded and replayed outputs, peer by peer.

    For an incomplete tape (recording cut off) outputs after its last line cannot be
    checked, so replayed outputs past the end of what was recorded are not counted.
    ``with_times=False`` ignores the times (live replays, where timing is real).
    """
    horizon = max((int(r.get("t", 0)) for r in expected), default=0)
    differences: list[Difference] = []
    for peer in _PEERS:
        exp = sorted((r for r in expected if r.get("peer") == peer), key=lambda r: r["t"])
        mine = [r for r in got if r.get("peer") == peer]
        if not complete:
            mine = [r for r in mine if r["t"] <= horizon][: len(exp)]
        if not with_times:
            exp = [{**r, "t": 0} for r in exp]
            mine = [{**r, "t": 0} for r in mine]
        if exp != mine:
            differences += _compare_peer(exp, mine)
    return differences


def _key(record: dict[str, Any]) -> str:
    return json.dumps(record, sort_keys=True)


def _compare_peer(exp: list[dict[str, Any]], got: list[dict[str, Any]]) -> list[Difference]:
    start = 0
    limit = min(len(exp), len(got))
    while start < limit and exp[start] == got[start]:
        start += 1
    end = 0
    while end < limit - start and exp[-1 - end] == got[-1 - end]:
        end += 1
    a, b = exp[start : len(exp) - end], got[start : len(got) - end]
    matcher = SequenceMatcher(None, [_key(r) for r in a], [_key(r) for r in b], autojunk=False)
    out: list[Difference] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag == "equal":
            continue
        out += _pair_block(a[i1:i2], b[j1:j2])
    return out


def _pair_block(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[Difference]:
    """Explain one run of differing records: pair those of the same kind, field by field."""
    matcher = SequenceMatcher(None, [r["kind"] for r in a], [r["kind"] for r in b],
                              autojunk=False)
    out: list[Difference] = []
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        pairs = min(i2 - i1, j2 - j1) if tag in ("equal", "replace") else 0
        for k in range(pairs):
            out.append(_record_diff(a[i1 + k], b[j1 + k]))
        for rec in a[i1 + pairs : i2]:
            out.append(_diff(rec, f"expected {_describe(rec)}, but the replay did not send it"))
        for rec in b[j1 + pairs : j2]:
            out.append(_diff(rec, f"the replay sent {_describe(rec)}, which is not on the tape"))
    return out


def _diff(record: dict[str, Any], detail: str) -> Difference:
    return Difference(int(record.get("t", 0)), str(record.get("peer")), str(record.get("kind")),
                      detail)


def _record_diff(exp: dict[str, Any], got: dict[str, Any]) -> Difference:
    if exp.get("kind") != got.get("kind"):
        return _diff(exp, f"expected {_describe(exp)}, got {_describe(got)}")
    parts = field_differences(exp.get("msg", exp.get("data")), got.get("msg", got.get("data")))
    if exp.get("t") != got.get("t"):
        parts.append(f"sent at t={got.get('t')}ms instead of t={exp.get('t')}ms")
    return _diff(exp, "; ".join(parts) or "differs")


def field_differences(exp: Any, got: Any, path: str = "") -> list[str]:
    """``name expected X, got Y`` for every differing leaf (dotted paths)."""
    if isinstance(exp, dict) and isinstance(got, dict):
        out: list[str] = []
        for key in list(exp) + [k for k in got if k not in exp]:
            sub = f"{path}.{key}" if path else str(key)
            if key not in got:
                out.append(f"{sub} expected {_short(exp[key])}, got nothing")
            elif key not in exp:
                out.append(f"{sub} not expected, got {_short(got[key])}")
            elif exp[key] != got[key]:
                out += field_differences(exp[key], got[key], sub)
        return out
    if isinstance(exp, list) and isinstance(got, list) and len(exp) == len(got):
        out = []
        for index, (x, y) in enumerate(zip(exp, got, strict=True)):
            if x != y:
                out += field_differences(x, y, f"{path}[{index}]")
        return out
    leaf = path.rsplit(".", 1)[-1]
    if leaf in _AUDIO_KEYS and isinstance(exp, str) and isinstance(got, str):
        return [f"{path} {_audio_diff(exp, got)}"]
    return [f"{path or 'value'} expected {_short(exp)}, got {_short(got)}"]


def _audio_diff(exp: str, got: str) -> str:
    try:
        x, y = base64.b64decode(exp), base64.b64decode(got)
    except (binascii.Error, ValueError):
        return f"expected {_short(exp)}, got {_short(got)}"
    if len(x) != len(y):
        return f"audio differs: expected {len(x)} bytes, got {len(y)} bytes"
    first = next(i for i, (p, q) in enumerate(zip(x, y, strict=True)) if p != q)
    return f"audio differs ({len(x)} bytes, first difference at byte {first})"


def _short(value: Any, width: int = 80) -> str:
    text = json.dumps(value) if not isinstance(value, str) else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _describe(record: dict[str, Any]) -> str:
    """A one-line description of a record, without audio payloads."""
    body = record.get("msg", record.get("data"))
    if isinstance(body, dict):
        body = _strip_audio(body)
    return f"{record.get('kind')} {_short(body, 160)}"


def _strip_audio(value: Any) -> Any:
    if isinstance(value, dict):
        return {
            k: (f"<{len(v) * 3 // 4} bytes>" if k in _AUDIO_KEYS and isinstance(v, str)
                else _strip_audio(v))
            for k, v in value.items()
        }
    return value


# ------------------------------------------------------------------ updating


def update_tape(result: ReplayResult, path: str | Path | None = None) -> Path:
    """Rewrite the tape with the replay's outputs as the new expected side.

    For a deliberate behaviour change: the inputs (what Twilio and the model sent)
    stay as recorded; what the bridge did is replaced by what it does now.
    """
    target = Path(path or result.tape.path or "")
    if not target.name:
        raise ValueError("no path to write the updated tape to")
    header = dict(result.tape.header)
    from bridge.tapes.recorder import bridge_version

    header["updated_with"] = bridge_version()
    write_tape(target, header, result.records)
    return target


__all__ = [
    "REDACTED",
    "Difference",
    "ReplayResult",
    "ToolsSpec",
    "compare",
    "field_differences",
    "replay",
    "update_tape",
]
