"""The softphone and the console in real headless Chromium, against the Realtime simulator.

One scripted call (the demo's): the agent greets, the fake microphone asks a question,
talks over the long answer (barge-in), says thanks, and the agent says goodbye and hangs
up.  The microphone is Chromium's fake capture device playing a WAV built from the
simulator's caller clips.  The console is open in a second tab throughout.
"""

from __future__ import annotations

import json
import secrets
import wave
from pathlib import Path
from typing import Any

import pytest

from bridge.devtools.sim.caller_track import write_caller_wav
from bridge.devtools.sim.clips import clip_text, load_clip
from bridge.devtools.sim.demo import AGENT_SCRIPT, CALLER_SCRIPT, GREETING
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from tests import browser
from tests.tape_marks import mark_before_truncate

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parents[1] / "docs" / "screenshots"
#: The page's wire (and AudioContext) rate per negotiated encoding.
PAGE_RATE = {"mulaw": 8000, "pcm16": 24000}


def _level(levels: list[dict[str, Any]], start: float, end: float, who: str = "agent") -> float:
    window = [entry[who] for entry in levels if start <= entry["t"] <= end]
    assert window, f"no level samples between {start:.0f} and {end:.0f} ms"
    return max(window)


@pytest.mark.parametrize("encoding", ["mulaw", "pcm16"])
async def test_softphone_call_and_live_console(
    tmp_path: Path, chromium_or_skip: None, encoding: str
) -> None:
    """The same call with either wire encoding: the bridge's setting picks among the
    two the page offers; marks, clear and heard-ms truncation must not care."""
    per_ms = PAGE_RATE[encoding] / 1000
    wav = tmp_path / "caller.wav"
    write_caller_wav(wav, CALLER_SCRIPT, 30_000)
    token = secrets.token_urlsafe(24)
    recordings = tmp_path / "recordings"
    sim = RealtimeSimulator(
        script=AGENT_SCRIPT,
        api_key="sk-browser-test",
        caller_transcripts=[clip_text(c) for _, c in CALLER_SCRIPT],
    )
    env = {
        "OPENAI_API_KEY": "sk-browser-test",
        "AGENT_GREETING": GREETING,
        "BRIDGE_OPERATOR_TOKEN": token,
        "BRIDGE_RECORDINGS_DIR": str(recordings),
        "BRIDGE_TAPES_DIR": str(tmp_path / "tapes"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'calls.db'}",
        "BRIDGE_SOFTPHONE_AUDIO": encoding,
    }
    async with sim, LocalBridge(sim.url, env=env) as bridge:
        async with browser.chromium(tmp_path / "profile", wav) as context:
            console = await context.new_page()
            await console.goto(f"{bridge.base_url}/login?next=/console#token={token}")
            await console.wait_for_url("**/console")
            await console.wait_for_function(
                "document.getElementById('stream-state').textContent === 'live'"
            )
            phone = await context.new_page()
            await phone.goto(f"{bridge.base_url}/softphone")
            await phone.wait_for_selector("#agent option", state="attached")
            await phone.select_option("#voice", "cedar")
            await phone.click("#call")

            # The console lists the live call as it happens (pushed, no reload).
            row = await console.wait_for_selector("#live tr[data-call-id^='BR']", timeout=10_000)
            assert row is not None
            live_id = await row.get_attribute("data-call-id")
            await console.locator(f"#live tr[data-call-id='{live_id}']").click()
            await console.wait_for_selector("#detail-timeline [data-kind='barge_in']",
                                            timeout=20_000)
            await console.screenshot(path=str(tmp_path / "console-live.png"))

            await phone.wait_for_function(
                "window.softphone.state.startsWith('Call ended')", timeout=40_000
            )
            page: dict[str, Any] = await phone.evaluate("window.softphone")
            shown = await phone.inner_text("#transcript")
            if encoding == "mulaw":
                await phone.screenshot(path=str(SCREENSHOTS / "softphone.png"), full_page=True)

            # After the call: gone from the live list, in the past calls with its recording,
            # whose waveform the open detail view draws.
            await console.wait_for_function(
                "window.consoleDebug.waveform !== null", timeout=15_000
            )
            await console.wait_for_function(
                f"!window.consoleDebug.live.includes('{live_id}')", timeout=5_000
            )
            await console.wait_for_selector(f"#past tr[data-call-id='{live_id}']")
            past_row = await console.inner_text(f"#past tr[data-call-id='{live_id}']")
            waveform: dict[str, Any] = await console.evaluate("window.consoleDebug.waveform")
            timeline = await console.inner_text("#detail-timeline")
            tape = await console.request.get(f"{bridge.base_url}/api/calls/{live_id}/tape")
            tape_lines = (await tape.body()).decode().splitlines()
            assert tape.ok and live_id in tape_lines[0]
            assert await console.is_visible("#tape-link")
            if encoding == "mulaw":
                await console.screenshot(path=str(SCREENSHOTS / "console.png"), full_page=True)
        record = await bridge.services.store.get_call(live_id)  # type: ignore[union-attr]
        session = sim.last_connection.effective_session

    assert page["callIds"] == [live_id], "one call, no reconnect"
    assert (page["encoding"], page["sampleRate"]) == (encoding, PAGE_RATE[encoding])
    # Each chunk the core sent (mu-law 8 kHz) reached the page as exactly its samples at
    # the page's rate: the leg's resampler keeps chunk boundaries, so marks stay put.
    assert all(m["size"] % (PAGE_RATE[encoding] // 8000) == 0 for m in page["media"])
    assert page["errors"] == []

    # The page's voice choice reached the model's session.
    assert session is not None and json.dumps(session).count('"cedar"') == 1

    # -- greeting and reply played in the page (Web Audio analyser on the playout) -----
    media, marks, levels = page["media"], page["marks"], page["levels"]
    truncate = sim.truncations[0]
    first_reply_mark = next(m for m in marks if f":{truncate.item_id}:" in m["name"])
    reply_media = next(
        m for m in media if m["position"] + m["size"] == first_reply_mark["position"]
    )
    greeting_at = media[0]["at"]
    greeting_ms = len(load_clip("agent_greeting")) / 8  # the clip is mu-law 8 kHz
    assert _level(levels, greeting_at + 300, greeting_at + 3000) > 0.02
    # Silence between the greeting's end and the reply: the meter really follows playback.
    assert _level(levels, greeting_at + greeting_ms + 400, reply_media["at"] - 300) < 0.003
    clear = page["clears"][0]
    assert _level(levels, reply_media["at"] + 300, clear["at"] - 100) > 0.02

    # -- transcripts of both sides appeared --------------------------------------------
    for text in (GREETING, clip_text("caller_question"), clip_text("caller_interrupt"),
                 clip_text("agent_short"), clip_text("agent_goodbye")):
        assert text in shown
    agent_lines = [t for t in page["transcripts"] if t["speaker"] == "agent"]
    assert [t["interrupted"] for t in agent_lines] == [False, True, False, False]

    # -- barge-in: one clear, and a truncate matching the page's own playback ---------
    assert len(page["clears"]) == 1 and len(sim.truncations) == 1 and truncate.ok
    reply_start = reply_media["position"]
    page_heard_ms = (clear["played"] - reply_start) / per_ms
    # The heard milliseconds are the page's own playback position at the last mark echo
    # the bridge had when it decided (its tape shows which), exactly.  The next echo had
    # not reached it, so at that moment the page had played less than one chunk more:
    # the truncate matches the page's playback to within one chunk.  (The page plays on
    # while the clear is in flight, so its position at the clear is further still, by a
    # round trip that depends on the host; that is not the figure the bridge can know.)
    last_echo = mark_before_truncate(map(json.loads, tape_lines[1:]), truncate.item_id)
    echoed = next(m for m in marks if m["name"] == last_echo)
    assert echoed["played"] == echoed["position"] and not echoed["cleared"]
    assert truncate.audio_end_ms == (echoed["position"] - reply_start) / per_ms, (
        echoed, reply_start, truncate.audio_end_ms)
    assert page_heard_ms >= truncate.audio_end_ms, (page_heard_ms, truncate.audio_end_ms)
    flushed = [m for m in marks if m.get("cleared")]
    assert flushed and all(f":{truncate.item_id}:" in m["name"] for m in flushed)

    # -- console: live timeline, then the finished call with its recording ------------
    assert f"truncate {truncate.item_id} at heard {truncate.audio_end_ms} ms" in timeline
    assert "●" in past_row
    assert waveform["channels"] == 2
    assert min(waveform["peaks"]) > 0.05, waveform
    assert record is not None and record.recording_path is not None
    with wave.open(record.recording_path) as wav_file:
        assert wav_file.getnchannels() == 2 and wav_file.getframerate() == 8000


async def test_softphone_denied_microphone_expired_session_and_reconnect(
    tmp_path: Path, chromium_or_skip: None
) -> None:
    token = secrets.token_urlsafe(24)
    env = {"OPENAI_API_KEY": "sk-browser-test", "BRIDGE_OPERATOR_TOKEN": token}
    async with RealtimeSimulator(script=["agent_short"], api_key="sk-browser-test") as sim:
        async with LocalBridge(sim.url, env=env) as bridge:
            async with browser.chromium(tmp_path / "denied", allow_microphone=False) as context:
                page = await context.new_page()
                await page.goto(f"{bridge.base_url}/login#token={token}")
                await page.wait_for_url("**/softphone")
                await page.wait_for_selector("#agent option", state="attached")
                await page.click("#call")
                await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
                assert "denied" in await page.inner_text("#error")
                assert not bridge.services.active

            async with browser.chromium(tmp_path / "expired") as context:
                page = await context.new_page()
                await page.goto(f"{bridge.base_url}/login#token={token}")
                await page.wait_for_url("**/softphone")
                await page.wait_for_selector("#agent option", state="attached")
                await context.clear_cookies()  # the session cookie is gone (as when expired)
                await page.click("#call")
                await page.wait_for_selector("#error:not([hidden])", timeout=10_000)
                assert "session has expired" in await page.inner_text("#error")
                assert await page.inner_text("#status") == "Signed out"

            # A connection lost mid-call (closed without a normal close): the page gets a
            # new ticket and calls again; the bridge ends the first call and takes the new one.
            async with browser.chromium(tmp_path / "lost") as context:
                page = await context.new_page()
                await page.goto(f"{bridge.base_url}/login#token={token}")
                await page.wait_for_url("**/softphone")
                await page.wait_for_selector("#agent option", state="attached")
                await page.click("#call")
                await page.wait_for_function("window.softphone.state === 'In call'")
                await page.evaluate("window.softphone.socket.close(4000, 'network test')")
                await page.wait_for_function(
                    "window.softphone.callIds.length === 2 && window.softphone.state === 'In call'",
                    timeout=10_000,
                )
                ids = await page.evaluate("window.softphone.callIds")
                assert ids[0] != ids[1]
                assert [r.call_sid for r in bridge.services.active] == [ids[1]]
                await page.click("#hangup")
                await page.wait_for_function("window.softphone.state.startsWith('Call ended')")


async def test_page_mulaw_codec_matches_audioop(tmp_path: Path, chromium_or_skip: None) -> None:
    """The page's G.711 code (it has no audioop) against Python's, on every code and
    across the whole 16-bit range."""
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import audioop
    token = secrets.token_urlsafe(24)
    env = {"OPENAI_API_KEY": "sk-browser-test", "BRIDGE_OPERATOR_TOKEN": token}
    samples = list(range(-32768, 32768, 7)) + [32767]
    async with RealtimeSimulator(script=["agent_short"], api_key="sk-browser-test") as sim:
        async with LocalBridge(sim.url, env=env) as bridge:
            async with browser.chromium(tmp_path / "codec") as context:
                page = await context.new_page()
                await page.goto(f"{bridge.base_url}/login#token={token}")
                await page.wait_for_url("**/softphone")
                decoded, encoded = await page.evaluate(
                    """async (samples) => {
                        const m = await import('/operator/static/mulaw.js');
                        const codes = Array.from({length: 256}, (_, i) => m.decodeSample(i));
                        return [codes, samples.map((s) => m.encodeSample(s))];
                    }""",
                    samples,
                )
    expected = [
        int.from_bytes(audioop.ulaw2lin(bytes([code]), 2), "little", signed=True)
        for code in range(256)
    ]
    assert decoded == expected
    pcm = b"".join(s.to_bytes(2, "little", signed=True) for s in samples)
    assert bytes(encoded) == audioop.lin2ulaw(pcm, 2)
