"""Reading the console's Server-Sent Events streams in tests."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bridge.devtools.sim.twilio_caller import CallResult, TwilioCaller


async def read_events(lines: AsyncIterator[str], into: list[dict[str, Any]], until: str) -> None:
    """Append each ``data:`` event's JSON to ``into`` until one of type ``until`` arrives."""
    async for line in lines:
        if line.startswith("data: "):
            event = json.loads(line[6:])
            into.append(event)
            if event["type"] == until:
                return


@dataclass
class WatchedCall:
    """One call as a console client saw it, and as its caller did."""

    call_id: str
    calls: list[dict[str, Any]]
    """The live-calls stream (``/console/events``), its snapshot first, to this call's end."""
    timeline: list[dict[str, Any]]
    """The call's own stream (``/console/events/<id>``), joined once it had started."""
    content_type: str
    """The live-calls stream's ``Content-Type``."""
    result: CallResult


async def watch_one_call(
    client: httpx.AsyncClient, place_call: Callable[[], Awaitable[TwilioCaller]]
) -> WatchedCall:
    """Open the live-calls stream on a logged-in ``client``, then place the call, join its
    own stream once the list shows it, and follow both to the call's end."""
    calls: list[dict[str, Any]] = []
    timeline: list[dict[str, Any]] = []
    async with client.stream("GET", "/console/events") as stream:
        lines = stream.aiter_lines()
        caller = await place_call()
        call = asyncio.create_task(caller.run())
        await asyncio.wait_for(read_events(lines, calls, "call_started"), 10)
        call_id = calls[-1]["call_id"]
        # Joining the call mid-way starts from a snapshot of what already happened.
        async with client.stream("GET", f"/console/events/{call_id}") as one:
            await asyncio.wait_for(read_events(one.aiter_lines(), timeline, "call_ended"), 45)
        await asyncio.wait_for(read_events(lines, calls, "call_ended"), 10)
        result = await call
    return WatchedCall(call_id, calls, timeline, stream.headers["content-type"], result)
