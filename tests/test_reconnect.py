"""A call outlives its model connection: reconnect, rollover and fallback, end to end.

Real sockets throughout: the bridge served by ``LocalBridge``, the Realtime simulator
with injected faults (closes, the session cap, refused handshakes), the Twilio caller
simulator as the phone, and the Twilio REST stand-in for the fallback transfer.
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from bridge.audio.prompts import bundled_prompt
from bridge.devtools.sim.clips import load_clip
from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_faults import FaultPlan
from bridge.devtools.sim.realtime_server import RealtimeSimulator
from bridge.devtools.sim.twilio_rest import TwilioRestSimulator

pytestmark = pytest.mark.e2e

KEY = "sk-reconnect-test"


def user_texts(items: list[dict[str, Any]]) -> list[str]:
    return [
        part.get("text", "")
        for event in items
        if (item := event.get("item") or {}).get("role") == "user"
        for part in item.get("content") or []
    ]


def agent_texts(items: list[dict[str, Any]]) -> list[str]:
    return [
        part.get("text", "")
        for event in items
        if (item := event.get("item") or {}).get("role") == "assistant"
        for part in item.get("content") or []
    ]


async def call(
    sim: RealtimeSimulator, script: list[tuple[int, str]], duration_ms: int, **env: str
) -> Any:
    async with sim, LocalBridge(sim.url, env={"OPENAI_API_KEY": KEY, **env}) as bridge:
        caller = await bridge.place_call(script=script, duration_ms=duration_ms)
        result = await caller.run()
        return result, bridge


async def test_a_drop_mid_reply_costs_under_a_second_and_the_next_turn_is_answered() -> None:
    """The agent is speaking when the server closes with 1011: the caller hears the
    reply cut, the next session gets the same configuration and the conversation so
    far, and the caller's next question is answered by it."""
    plan = FaultPlan(close_after_ms=4200, connections={1})  # the reply is playing then
    sim = RealtimeSimulator(
        script=["agent_reply", "agent_short", "agent_goodbye"], api_key=KEY, faults=plan
    )
    result, bridge = await call(
        sim, [(200, "caller_question"), (6500, "caller_thanks")], duration_ms=11000
    )
    assert sim.connection_count == 2
    first, second = sim.connections
    assert first.closed_by == "server" and first.close_code == 1011
    # The same session configuration, the caller's turn as text, the heard agent text.
    assert second.session_updates[0]["session"] == first.session_updates[0]["session"]
    assert user_texts(second.items_created)
    heard_agent = agent_texts(second.items_created)
    # Cut to what the caller heard: a few words of the reply, not all of it.
    assert heard_agent and 0 < len(heard_agent[0].split()) < 12
    # From the drop to the new session being configured: well under a second here.
    assert first.closed_at is not None and second.session is not None
    gap = second.opened_at - first.closed_at
    assert 0 <= gap < 1.0, gap
    # The reply that was playing was cleared (it was cut where the caller stopped hearing it).
    assert result.clears
    # The next question was answered on the new session: its audio reached the caller.
    assert second.responses, "the new session never answered"
    assert not result.violations
    stats = bridge.services.metrics
    assert stats.value("bridge_reconnects_total", {"cause": "close_1011"}) == 1


async def test_a_drop_while_idle_and_mid_caller_speech_keeps_the_caller_audio() -> None:
    """The model closes while the caller is talking: what the caller says during the gap
    is held and appended to the new session, which answers it."""
    plan = FaultPlan(close_after_ms=900, connections={1})
    sim = RealtimeSimulator(script=["agent_short"], api_key=KEY, faults=plan)
    result, _ = await call(sim, [(600, "caller_question")], duration_ms=7000)
    assert sim.connection_count == 2
    second = sim.connections[1]
    appended = second.received_events("input_audio_buffer.append")
    assert len(appended) > 10  # held audio, then live audio
    assert second.responses, "the new session never answered the question"
    assert load_clip("agent_short") in result.heard


async def test_rollover_before_the_session_cap_is_silent() -> None:
    """A session near its maximum age is replaced at a quiet moment: no clear, no gap
    in what the caller hears, the old session closed only after the switch."""
    plan = FaultPlan(max_session_ms=11000, connections={1})
    sim = RealtimeSimulator(script=["agent_short", "agent_short"], api_key=KEY, faults=plan)
    result, bridge = await call(
        sim,
        [(200, "caller_question"), (6500, "caller_thanks")],
        duration_ms=13500,
        BRIDGE_ROLLOVER_AFTER_S="5",
    )
    # Every session is replaced before it reaches its age limit (here 5 s).
    assert sim.connection_count >= 2
    first, second = sim.connections[:2]
    assert first.closed_by == "client"  # we closed it after switching, before its cap
    assert first.closed_at is not None and first.closed_at > second.opened_at
    assert not result.clears  # nothing the caller was hearing was cut
    assert second.responses, "the second session never answered"
    assert result.heard.count(load_clip("agent_short")) == 2
    assert bridge.services.metrics.value("bridge_rollovers_total") >= 1
    assert all(c.close_code != 1001 for c in sim.connections)  # no session hit its cap


async def test_an_unreachable_model_ends_the_call_politely_with_a_transfer() -> None:
    """Every handshake refused with 503: the caller hears the apology, then the call is
    transferred to the profile's fallback number through Twilio's REST API."""
    plan = FaultPlan()
    plan.refuse(1000, "unavailable")
    sim = RealtimeSimulator(script=["agent_short"], api_key=KEY, faults=plan)
    token = "e" * 32
    call_sid = "CA" + "5" * 32
    async with sim, TwilioRestSimulator(auth_token=token) as rest:
        env = {
            "OPENAI_API_KEY": KEY,
            "TWILIO_ACCOUNT_SID": rest.account_sid,
            "TWILIO_API_BASE_URL": rest.base_url,
            "TRANSFER_NUMBERS": "+15550009999",
            "AGENT_ON_MODEL_FAILURE": "transfer",
            "AGENT_FALLBACK_NUMBER": "+15550009999",
            "BRIDGE_RECONNECT_BUDGET_S": "1.5",
            "BRIDGE_PRECONNECT": "false",
        }
        async with LocalBridge(sim.url, auth_token=token, env=env) as bridge:
            rest.add_call(call_sid, to="+15559990000", from_="+15550001111")
            caller = await bridge.place_call(call_sid=call_sid, duration_ms=15000)
            updated: list[float] = []

            def ended(sid: str, form: dict[str, str]) -> None:
                updated.append(time.monotonic())
                import asyncio

                asyncio.get_running_loop().call_soon(
                    lambda: asyncio.ensure_future(caller.hangup())
                )

            rest.on_call_update = ended
            result = await caller.run()
        posts = [r for r in rest.requests if r.method == "POST" and call_sid in r.path]
    assert sim.handshakes >= 3  # retried with backoff within the budget
    assert bundled_prompt("apology")[:4000] in result.heard
    assert len(posts) == 1 and "+15550009999" in posts[0].form.get("Twiml", "")


async def test_a_bad_key_is_not_retried_and_the_caller_hears_why() -> None:
    plan = FaultPlan()
    plan.refuse(1000, "bad_key")
    sim = RealtimeSimulator(script=["agent_short"], api_key=KEY, faults=plan)
    result, bridge = await call(sim, [], duration_ms=12000, BRIDGE_PRECONNECT="false")
    assert sim.handshakes == 1  # 401 is final: no retry loop
    assert bundled_prompt("apology")[:4000] in result.heard
    records = bridge.services.metrics
    assert records.value("bridge_fallbacks_total", {"cause": "bad_api_key"}) == 1
