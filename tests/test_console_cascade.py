"""A cascade call as the console sees it: the per-turn latency breakdown on the live
timeline (Server-Sent Events) and in the past call's data (``/api/calls/<id>``), and the
interrupted turn restated to the words the caller heard; then the same in real headless
Chromium, where the page must render them.

Real sockets throughout: the Twilio caller simulator, the bridge with
``BRIDGE_BACKEND=cascade``, the OpenAI REST and transcription-session stand-ins.
"""

from __future__ import annotations

import asyncio
import secrets
from pathlib import Path
from typing import Any

import httpx
import pytest

from bridge.devtools.sim.cascade_standins import CascadeStandIns
from bridge.devtools.sim.clips import clip_text, load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.store.records import LATENCY_SPANS
from tests import browser
from tests.sse import watch_one_call

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
KEY = "sk-cascade-console-secret-0123456789"
NO_REALTIME = "ws://127.0.0.1:9/v1/realtime"
QUESTION = load_clip("caller_question")[: 8 * 1000]
INTERRUPT = load_clip("caller_interrupt")[: 8 * 1100]
#: The reply's second piece is playing at 7.4 s (see test_cascade_e2e).
SCRIPT: list[tuple[float, str | bytes]] = [(200, QUESTION), (7400, INTERRUPT)]
DURATION_MS = 10_000
STAND_INS = {"chat_first_token_ms": 60.0, "speech_first_byte_ms": 60.0,
             "transcription_latency_ms": 60.0}


def _env(token: str, tmp_path: Path, standins: CascadeStandIns) -> dict[str, str]:
    return {**standins.env(), "BRIDGE_OPERATOR_TOKEN": token,
            "DATABASE_URL": f"sqlite:///{tmp_path / 'calls.db'}"}


async def test_the_console_streams_and_serves_each_cascade_turns_latency(tmp_path: Path) -> None:
    token = secrets.token_urlsafe(24)
    async with CascadeStandIns(KEY, **STAND_INS) as standins, \
            LocalBridge(NO_REALTIME, env=_env(token, tmp_path, standins)) as bridge:
        async with httpx.AsyncClient(base_url=bridge.base_url, timeout=60) as client:
            await client.post("/login", data={"token": token})
            watched = await watch_one_call(client, lambda: bridge.place_call(
                script=SCRIPT, duration_ms=DURATION_MS))
            call_id, timeline = watched.call_id, watched.timeline
            detail = (await client.get(f"/api/calls/{call_id}")).json()
        history = [r.body for r in standins.rest.chat_requests]
        store = bridge.services.store
        assert store is not None
        record = await store.get_call(call_id)
    assert record is not None
    events = timeline[0]["timeline"] + timeline[1:]
    # Live: one timeline entry per cascade response, with the breakdown in pipeline order.
    live = [e["data"] for e in events if e.get("kind") == "latency_breakdown"]
    stored = {r.response_id: r for r in record.responses}
    assert len(live) == len(stored) >= 2, live
    for entry in live:
        response = stored[entry["response_id"]]
        assert entry["status"] == response.status
        assert {k: entry[k] for k in LATENCY_SPANS} == {
            k: response.latency_ms.get(k) for k in LATENCY_SPANS}
    # The first answer's turn was measured end to end: every span is there.
    first = live[0]
    assert all(isinstance(first[k], int) for k in LATENCY_SPANS[:5]), first
    assert first["speech_stopped_to_transcript"] > 0  # (its size: test_cascade_e2e)
    assert first["speech_stopped_to_first_audio_out"] >= sum(
        first[k] for k in LATENCY_SPANS[:4]) - 4  # rounded per span
    # Past call: the API carries the same breakdown per response.
    assert [d["response_id"] for d in detail["latency"]] == [e["response_id"] for e in live]
    for row, entry in zip(detail["latency"], live, strict=True):
        assert {k: row[k] for k in LATENCY_SPANS} == {k: entry[k] for k in LATENCY_SPANS}
    # The interrupted turn, restated live under its seq, is what the store and API hold.
    said = [e for e in events if e["type"] == "transcript" and e["speaker"] == "agent"]
    first_cut = next(e for e in said if e["interrupted"])
    cut = [e for e in said if e["seq"] == first_cut["seq"]]
    # The core's own heard-share cut (first) may be longer or shorter than the words the
    # cascade kept; a restatement under the same seq makes the last one those words.
    assert 1 <= len(cut) <= 2 and (len(cut) == 1 or cut[0]["text"] != cut[1]["text"]), cut
    (assistant,) = [m for m in history[1]["messages"] if m["role"] == "assistant"]
    assert cut[-1]["text"] == assistant["content"]
    assert clip_text("agent_reply").startswith(cut[-1]["text"])
    api_line = next(t for t in detail["turns"] if t["seq"] == cut[0]["seq"])
    assert api_line["text"] == cut[-1]["text"]


async def test_the_console_page_renders_the_latency_breakdown(
    tmp_path: Path, chromium_or_skip: None
) -> None:
    token = secrets.token_urlsafe(24)
    async with CascadeStandIns(KEY, **STAND_INS) as standins, \
            LocalBridge(NO_REALTIME, env=_env(token, tmp_path, standins)) as bridge, \
            browser.chromium(tmp_path / "profile") as context:
        console = await context.new_page()
        await console.goto(f"{bridge.base_url}/login?next=/console#token={token}")
        await console.wait_for_url("**/console")
        await console.wait_for_function(
            "document.getElementById('stream-state').textContent === 'live'")
        caller = await bridge.place_call(script=SCRIPT, duration_ms=DURATION_MS)
        call = asyncio.create_task(caller.run())
        row = await console.wait_for_selector("#live tr[data-call-id^='CA']", timeout=10_000)
        assert row is not None
        call_id = await row.get_attribute("data-call-id")
        # A locator, not the handle: the list re-renders its rows as the call's state moves.
        await console.locator(f"#live tr[data-call-id='{call_id}']").click()
        # Live: the first answer's breakdown appears on the timeline as it happens.
        entry = await console.wait_for_selector(
            "#detail-timeline [data-kind='latency_breakdown']", timeout=20_000)
        assert entry is not None
        live_text = await entry.inner_text()
        await call
        # Past call: opened from the list, the table has a row per cascade response.
        past = await console.wait_for_selector(f"#past tr[data-call-id='{call_id}']",
                                               timeout=10_000)
        assert past is not None
        await console.locator(f"#past tr[data-call-id='{call_id}']").click()
        await console.wait_for_function(
            "window.consoleDebug.latency !== null && window.consoleDebug.latency.length >= 2",
            timeout=10_000)
        data: list[dict[str, Any]] = await console.evaluate("window.consoleDebug.latency")
        rows = await console.locator("#latency-rows tr").all_inner_texts()
        visible = await console.is_visible("#latency")
        transcript = await console.inner_text("#detail-transcript")
        await console.screenshot(path=str(SCREENSHOTS / "console-cascade.png"), full_page=True)
    first = data[0]
    assert "→ 1st LLM token +" in live_text and f"{first['response_id']}" in live_text
    assert f"turn {first['speech_stopped_to_first_audio_out']} ms" in live_text
    assert visible and len(rows) == len(data)
    cells = rows[0].split("\t")
    assert cells[1:6] == [str(first[k]) for k in LATENCY_SPANS[:5]], cells
    # The restated (heard) line, not the over-claiming first one, is what the page shows.
    full = clip_text("agent_reply")
    assert "Saturdays" not in transcript and full[:40] in transcript
