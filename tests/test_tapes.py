"""Recorded-call tapes: record, replay, diff, and the tapes kept in tests/tapes.

Every tape in ``tests/tapes`` is a real recording of the bridge against the
simulators (``python -m bridge tape author``); replaying them is the cheapest
regression test of barge-in, truncation, tools and hang-up there is.
"""

from __future__ import annotations

import asyncio
import gzip
import json
from pathlib import Path

import pytest

from bridge.__main__ import main as bridge_main
from bridge.core.ledger import ItemPlayback, PlaybackLedger
from bridge.devtools.tapes.author import FAKE_SECRETS, record_scenario
from bridge.devtools.tapes.replay import replay
from bridge.tapes.format import TAPE_VERSION, TapeError, load_tape
from bridge.testing import assert_replays
from bridge.tools import ToolRegistry, tool

TAPES = Path(__file__).parent / "tapes"
ALL_TAPES = sorted(TAPES.glob("*.jsonl*"))
REQUIRED = {
    "model_reconnect",
    "question_answer", "barge_in", "double_barge_in", "tool_call", "dtmf",
    "hangup_mid_reply", "model_error",
}


def _name(path: Path) -> str:
    return path.name.split(".")[0]


def _text(path: Path) -> str:
    data = path.read_bytes()
    return (gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data).decode()


def _broken_heard_ms(self: PlaybackLedger, playback: ItemPlayback) -> int:
    """The classic barge-in bug: truncating at what was *sent*, not what was heard."""
    return playback.sent // self.samples_per_ms


def test_every_required_scenario_has_a_tape() -> None:
    assert REQUIRED <= {_name(p) for p in ALL_TAPES}
    for path in ALL_TAPES:
        assert path.stat().st_size < 100_000, f"{path.name} is too big for the repository"


@pytest.mark.parametrize("path", ALL_TAPES, ids=_name)
def test_recorded_tapes_replay_identically(path: Path) -> None:
    assert_replays(path)


@pytest.mark.parametrize("path", ALL_TAPES, ids=_name)
def test_tapes_hold_no_secrets(path: Path) -> None:
    text = _text(path)
    for secret in FAKE_SECRETS:
        assert secret not in text
    header = json.loads(text.split("\n", 1)[0])
    assert header["tape"] == TAPE_VERSION
    assert {"bridge_version", "audio_mode", "dialect", "model", "agent", "recorded_at"} <= set(
        header
    )
    start = next(json.loads(line) for line in text.splitlines() if '"kind":"start"' in line)
    assert start["msg"]["start"]["customParameters"]["streamToken"] == "***"


def test_tapes_show_their_scenario() -> None:
    """Guard against a re-authored tape that no longer shows what it is named for."""
    kinds = {
        _name(p): [r["kind"] for r in load_tape(p).records] for p in ALL_TAPES
    }
    assert kinds["barge_in"].count("conversation.item.truncate") == 1
    assert kinds["barge_in"].count("clear") == 1
    assert kinds["double_barge_in"].count("conversation.item.truncate") == 2
    assert "run_tool" in kinds["tool_call"] and "tool_result" in kinds["tool_call"]
    assert kinds["dtmf"].count("dtmf") == 3
    assert "error" in kinds["model_error"] and "notice" in kinds["model_error"]
    assert "call_control" in kinds["agent_hangs_up"]
    assert "control_done" in kinds["agent_hangs_up"]  # REST timing is on the tape
    reconnect = kinds["model_reconnect"]
    assert reconnect.count("model_closed") == 1 and reconnect.count("connect_model") == 2
    assert reconnect.count("session.update") == 2
    ends = [r for r in load_tape(TAPES / "hangup_mid_reply.jsonl.gz").records
            if r["kind"] == "transcript" and r["data"]["speaker"] == "agent"]
    assert ends and ends[-1]["data"]["interrupted"]


def test_broken_core_fails_with_a_readable_diff(monkeypatch: pytest.MonkeyPatch) -> None:
    path = TAPES / "barge_in.jsonl.gz"
    recorded = next(r for r in load_tape(path).records
                    if r["kind"] == "conversation.item.truncate")
    monkeypatch.setattr(PlaybackLedger, "heard_ms", _broken_heard_ms)
    result = replay(path)
    assert not result.ok
    got = next(r for r in result.outputs if r["kind"] == "conversation.item.truncate")
    expected_ms, got_ms = recorded["msg"]["audio_end_ms"], got["msg"]["audio_end_ms"]
    assert expected_ms != got_ms
    line = (f"t={recorded['t']}ms model out conversation.item.truncate: "
            f"audio_end_ms expected {expected_ms}, got {got_ms}")
    with pytest.raises(AssertionError) as failure:
        assert_replays(path)
    assert line in str(failure.value)
    assert bridge_main(["replay", str(path)]) == 1


def test_update_rewrites_the_expected_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    copy = tmp_path / "barge_in.jsonl"
    copy.write_bytes(gzip.decompress((TAPES / "barge_in.jsonl.gz").read_bytes()))
    with monkeypatch.context() as patch:
        patch.setattr(PlaybackLedger, "heard_ms", _broken_heard_ms)
        assert bridge_main(["replay", "--update", str(copy)]) == 0
        assert_replays(copy)  # the "new behaviour" is now the expectation
    assert not replay(copy).ok  # and the real core differs from it again
    assert load_tape(copy).records[0]["kind"] == "leg_opened"


def test_tools_are_rerun_and_compared() -> None:
    path = TAPES / "tool_call.jsonl.gz"
    assert_replays(path, tools=["tests.tape_tools:check_stock"])

    @tool
    def check_stock(product: str) -> dict[str, object]:
        """A changed tool: the replay must notice its different output."""
        return {"product": product, "in_stock": 0}

    registry = ToolRegistry()
    registry.register(check_stock)
    with pytest.raises(AssertionError) as failure:
        assert_replays(path, tools=registry)
    assert "tool_result check_stock: output expected" in str(failure.value)
    assert "conversation.item.create" in str(failure.value)


@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
def test_cut_tape_replays_up_to_its_last_complete_line(tmp_path: Path, compressed: bool) -> None:
    text = gzip.decompress((TAPES / "double_barge_in.jsonl.gz").read_bytes())
    cut = text[: int(len(text) * 0.6)]
    assert not cut.endswith(b"\n")
    path = tmp_path / ("cut.jsonl.gz" if compressed else "cut.jsonl")
    path.write_bytes(gzip.compress(text)[: int(len(gzip.compress(text)) * 0.6)]
                     if compressed else cut)
    tape = load_tape(path)
    assert not tape.complete and tape.problems
    assert 0 < len(tape.records) < text.count(b"\n")
    result = replay(tape)
    assert result.ok, result.report()


def test_unreadable_tapes_are_refused(tmp_path: Path) -> None:
    newer = tmp_path / "newer.jsonl"
    newer.write_text(json.dumps({"tape": TAPE_VERSION + 1}) + "\n")
    with pytest.raises(TapeError, match="newer"):
        load_tape(newer)
    junk = tmp_path / "junk.jsonl"
    junk.write_text("hello\n")
    with pytest.raises(TapeError):
        load_tape(junk)
    assert bridge_main(["replay", str(junk)]) == 2


@pytest.mark.e2e
@pytest.mark.parametrize("compressed", [False, True], ids=["plain", "gzip"])
async def test_fresh_recording_replays_green(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, compressed: bool
) -> None:
    """A call recorded right now, through the real app, replays identically."""
    env = {"AGENT_GREETING": "Hello there"}
    if compressed:
        env["BRIDGE_TAPES_GZIP"] = "1"
    scenario = {
        "model": ["agent_goodbye"],
        "caller": [{"at": 100, "clip": "caller_question", "ms": 700},
                   {"at": 2300, "clip": "caller_interrupt", "ms": 500}],
        "hangup_at_ms": 3600,
        "env": env,
    }
    path = await record_scenario(scenario, tmp_path)
    assert path.name.endswith(".gz") == compressed
    text = _text(path)
    for secret in FAKE_SECRETS:
        assert secret not in text
    tape = load_tape(path)
    assert tape.complete
    assert tape.header["agent"]["greeting"] == "Hello there"
    assert_replays(path)


async def test_live_replay_keeps_the_recorded_order_of_model_frames() -> None:
    """A frame scheduled by a later trigger never overtakes one recorded before it,
    even when its own delay is shorter (a late trigger on a loaded host)."""
    from bridge.devtools.tapes.live import _Sender

    class Socket:
        def __init__(self) -> None:
            self.sent: list[str] = []

        async def send(self, text: str) -> None:
            self.sent.append(text)

    ws = Socket()
    sender = _Sender(ws)
    running = asyncio.create_task(sender.run())
    sender.schedule([(0, "delta 1"), (60, "delta 2")])
    await asyncio.sleep(0.02)
    sender.schedule([(0, "delta 3")])  # the next trigger: due now, recorded after delta 2
    await asyncio.sleep(0.15)
    running.cancel()
    assert ws.sent == ["delta 1", "delta 2", "delta 3"]


@pytest.mark.e2e
async def test_live_replay_against_a_running_bridge() -> None:
    """``replay --live``: the tape's Twilio side and a model stand-in, over real sockets."""
    from bridge.devtools.sim.local_bridge import LocalBridge, free_socket
    from bridge.devtools.tapes.live import LiveOptions, replay_live

    probe = free_socket()
    port = probe.getsockname()[1]
    probe.close()
    token = "live-replay-test-auth-token"
    async with LocalBridge(f"ws://127.0.0.1:{port}/v1/realtime", auth_token=token) as bridge:
        url = bridge.base_url.replace("http", "ws", 1) + "/media-stream"
        result = await replay_live(
            TAPES / "dtmf.jsonl.gz",
            LiveOptions(url=url, model_port=port, auth_token=token, wait_s=1.0),
        )
    assert result.ok, result.report()
    assert any(r["kind"] == "conversation.item.create" for r in result.to_model)
