"""Reading the console's Server-Sent Events stream in tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any


async def read_events(lines: AsyncIterator[str], into: list[dict[str, Any]], until: str) -> None:
    """Append each ``data:`` event's JSON to ``into`` until one of type ``until`` arrives."""
    async for line in lines:
        if line.startswith("data: "):
            event = json.loads(line[6:])
            into.append(event)
            if event["type"] == until:
                return
