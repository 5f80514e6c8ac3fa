"""Authoring tapes: run a scripted call through the real bridge and keep its tape.

A scenario says who says what when: the caller's clips and keypad digits (for
``TwilioCaller``), the model's replies (for ``RealtimeSimulator``) and the
bridge's environment.  ``author`` serves the real app with ``LocalBridge``
(security on, tapes on), places the call, and copies the recorded tape to the
output path, after checking that it replays identically.  Tapes made this way
are real recordings of the real code path, and can be regenerated with one
command when the core changes on purpose.

Scenario file (TOML), one table per tape::

    [barge_in]
    description = "caller interrupts the agent's reply"
    model = ["agent_short", "agent_goodbye"]      # RealtimeSimulator script
    caller = [{at = 200, clip = "caller_question", ms = 900},
              {at = 2600, clip = "caller_interrupt"}]
    dtmf = [[1500, "4"], [1700, "#"]]             # optional
    hangup_at_ms = 5000
    abrupt_hangup = false                         # optional
    env = {AGENT_GREETING = "Hi"}                 # optional bridge settings
    simulator = {chunk_interval_ms = 50}          # optional RealtimeSimulator options
    faults = {close_after_ms = 4200, connections = [1]}  # optional FaultPlan fields
    rest = true                                   # optional: hang-up/transfer through the
                                                  # Twilio REST stand-in, which then ends
                                                  # the stream as Twilio does
    backend = "cascade"                           # optional: BRIDGE_BACKEND=cascade against
                                                  # the STT/LLM/TTS stand-ins (``model`` is
                                                  # then unused; the chat stand-in's rules
                                                  # answer)
    stand_ins = {chat_first_token_ms = 60}        # optional OpenAIRestSimulator options

``ms`` keeps only the start of a clip, which keeps tapes small.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import shutil
import tempfile
import time
import tomllib
from pathlib import Path
from typing import Any

from bridge.devtools.sim.clips import load_clip

#: Distinctive fake secrets used while authoring, so tests can prove none leak into tapes.
FAKE_OPENAI_KEY = "sk-tapeauthor-FAKE-openai-key-7f3a9c"
FAKE_AUTH_TOKEN = "tapeauthorfaketwilioauthtoken4e21"
FAKE_API_SECRET = "tapeauthor-FAKE-twilio-api-secret-91bd"
FAKE_SECRETS = (FAKE_OPENAI_KEY, FAKE_AUTH_TOKEN, FAKE_API_SECRET)
#: The CallSid of an authored call whose call control goes through the REST stand-in.
AUTHOR_CALL_SID = "CA" + "a0" * 16


class ScenarioError(ValueError):
    """The scenario file or entry is malformed."""


def load_scenarios(path: str | Path) -> dict[str, dict[str, Any]]:
    """Every scenario in a TOML (or JSON) file, by name."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json":
        import json

        data = json.loads(text)
    else:
        data = tomllib.loads(text)
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: expected a table of scenarios")
    return {str(k): v for k, v in data.items() if isinstance(v, dict)}


def _caller_script(entries: list[Any]) -> list[tuple[float, bytes]]:
    script: list[tuple[float, bytes]] = []
    for entry in entries:
        if isinstance(entry, list | tuple):
            at, clip, ms = entry[0], entry[1], entry[2] if len(entry) > 2 else None
        elif isinstance(entry, dict):
            at, clip, ms = entry.get("at", 0), entry["clip"], entry.get("ms")
        else:
            raise ScenarioError(f"bad caller entry {entry!r}")
        audio = load_clip(str(clip))
        if ms is not None:
            audio = audio[: int(ms) * 8]
        script.append((float(at), audio))
    return script


async def record_scenario(scenario: dict[str, Any], out_dir: Path) -> Path:
    """Run ``scenario`` through LocalBridge + simulators; return the recorded tape's path."""
    from bridge.devtools.sim.local_bridge import LocalBridge
    from bridge.devtools.sim.realtime_server import RealtimeSimulator

    env = {
        "BRIDGE_TAPES_DIR": str(out_dir),
        "OPENAI_API_KEY": FAKE_OPENAI_KEY,
        "TWILIO_API_SECRET": FAKE_API_SECRET,
        "BRIDGE_AUDIO": "passthrough",
    }
    env.update({str(k): str(v) for k, v in (scenario.get("env") or {}).items()})
    simulator = dict(scenario.get("simulator") or {})
    if scenario.get("faults"):
        from bridge.devtools.sim.realtime_faults import FaultPlan

        faults = dict(scenario["faults"])
        if "connections" in faults:
            faults["connections"] = set(faults["connections"])
        simulator["faults"] = FaultPlan(**faults)
    backend = str(scenario.get("backend") or "realtime")
    if backend not in ("realtime", "cascade"):
        raise ScenarioError(f"backend = {backend!r}: expected realtime or cascade")
    async with contextlib.AsyncExitStack() as stack:
        if backend == "cascade":
            from bridge.devtools.sim.cascade_standins import CascadeStandIns

            options = dict(scenario.get("stand_ins") or {})
            standins = await stack.enter_async_context(
                CascadeStandIns(FAKE_OPENAI_KEY, **options)
            )
            # Scenario env comes last, so a scenario can still override a stage.
            env = {**env, **standins.env(), **{
                str(k): str(v) for k, v in (scenario.get("env") or {}).items()}}
            realtime_url = "ws://127.0.0.1:9/v1/realtime"  # never contacted
        else:
            sim = await stack.enter_async_context(
                RealtimeSimulator(
                    list(scenario.get("model") or []), api_key=FAKE_OPENAI_KEY, **simulator
                )
            )
            realtime_url = sim.url
        rest = None
        if scenario.get("rest"):
            from bridge.devtools.sim.twilio_rest import TwilioRestSimulator

            rest = await stack.enter_async_context(
                TwilioRestSimulator(auth_token=FAKE_AUTH_TOKEN)
            )
            env.update(TWILIO_ACCOUNT_SID=rest.account_sid, TWILIO_API_BASE_URL=rest.base_url)
            env.pop("TWILIO_API_SECRET")  # REST authenticates with the auth token here
            rest.add_call(AUTHOR_CALL_SID, to="+15559990000", from_="+15550001111")
        bridge = await stack.enter_async_context(
            LocalBridge(realtime_url, auth_token=FAKE_AUTH_TOKEN, env=env)
        )
        caller = await bridge.place_call(
            call_sid=AUTHOR_CALL_SID if rest is not None else None,
            script=_caller_script(list(scenario.get("caller") or [])),
            dtmf=[(float(at), str(d)) for at, d in scenario.get("dtmf") or []],
            hangup_at_ms=scenario.get("hangup_at_ms"),
            abrupt_hangup=bool(scenario.get("abrupt_hangup", False)),
        )
        if rest is not None:
            # Twilio ends the Media Stream once the call is hung up or redirected.
            def ended(sid: str, form: dict[str, str]) -> None:
                asyncio.get_running_loop().call_soon(
                    lambda: asyncio.ensure_future(caller.hangup())
                )

            rest.on_call_update = ended
        await caller.run()
        return await _wait_for_tape(out_dir)


async def _wait_for_tape(directory: Path, timeout_s: float = 10.0) -> Path:
    """The relay writes the trailer when its shutdown finishes, just after the call."""
    from bridge.tapes.format import load_tape

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        tapes = sorted(directory.glob("*.jsonl*"))
        if tapes and load_tape(tapes[-1]).complete:
            return tapes[-1]
        await asyncio.sleep(0.05)
    raise RuntimeError(f"no complete tape appeared in {directory}")


async def author(scenario_file: str | Path, name: str, output: str | Path) -> Path:
    """Record scenario ``name`` and write its tape to ``output`` (gzip if ``.gz``).

    The tape is replayed before it is kept: a recording that does not replay
    identically would be a useless regression test (and points at a core bug)."""
    from bridge.devtools.tapes.replay import replay

    scenarios = load_scenarios(scenario_file)
    if name not in scenarios:
        raise ScenarioError(f"no scenario {name!r} in {scenario_file} "
                            f"(known: {', '.join(sorted(scenarios))})")
    with tempfile.TemporaryDirectory(prefix="tape-author-") as tmp:
        recorded = await record_scenario(scenarios[name], Path(tmp))
        result = replay(recorded)
        if not result.ok:
            raise RuntimeError("the fresh recording does not replay identically:\n"
                               + result.report())
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        if output.name.endswith(".gz"):
            output.write_bytes(gzip.compress(recorded.read_bytes(), compresslevel=9, mtime=0))
        else:
            shutil.copyfile(recorded, output)
    return output


__all__ = [
    "FAKE_API_SECRET",
    "FAKE_AUTH_TOKEN",
    "FAKE_OPENAI_KEY",
    "FAKE_SECRETS",
    "ScenarioError",
    "author",
    "load_scenarios",
    "record_scenario",
]
