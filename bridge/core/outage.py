"""Surviving the loss of the model connection: retry timing and re-seeding.

The Realtime API closes sessions in ordinary operation (server faults, deploys,
the 60-minute cap) and has no session resumption, so a new session starts
empty.  The call goes on: the conversation so far is re-created as items, from
what the core already knows (the transcript of what was said and heard, and the
tools that ran).  Audio cannot be re-created, so agent turns become assistant
text, cut to what the caller heard.

The model's context is finite (32k tokens for gpt-realtime), so the newest
turns are kept and the oldest dropped, whole: a tool call is never separated
from its output.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass

from bridge.core.actions import (
    AddAgentText,
    AddToolCall,
    AddToolOutput,
    AddUserText,
    ToModel,
    TranscriptLine,
)
from bridge.core.dtmf import digit_text

#: Backoff after the first (immediate) retry: base, cap (ms).
BACKOFF_BASE_MS = 250
BACKOFF_CAP_MS = 4_000


def backoff_ms(attempt: int, rng: random.Random) -> int:
    """Delay before connection attempt ``attempt`` (1-based): 0 for the first, then
    exponential with full jitter (50-150 %), so a fleet of calls that lost the same
    server do not all come back in the same millisecond."""
    if attempt <= 1:
        return 0
    base = min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** (attempt - 2))
    return int(base * rng.uniform(0.5, 1.5))


@dataclass(frozen=True, slots=True)
class ToolRecord:
    """A tool call that ran, and where it sits among the transcript lines."""

    after_lines: int
    call_id: str
    name: str
    arguments: str
    output: str


@dataclass(slots=True)
class Outage:
    """One stretch without a model connection."""

    since: int
    cause: str
    budget_until: int
    attempts: int = 0
    agent_was_speaking: bool = False
    gave_up: bool = False


def _line_items(line: TranscriptLine) -> list[ToModel]:
    text = line.text.strip()
    if not text:
        return []
    if line.speaker == "caller":
        return [AddUserText(text)]
    if line.speaker == "agent":
        return [AddAgentText(text)]
    if text.startswith("caller pressed "):
        return [AddUserText(digit_text(text.removeprefix("caller pressed ")))]
    return []


def seed_items(
    lines: Sequence[TranscriptLine], tools: Sequence[ToolRecord], max_chars: int
) -> tuple[list[ToModel], int]:
    """The conversation so far as items for a fresh session, newest kept first.

    Returns the items in conversation order and how many turns were left out."""
    units: list[list[ToModel]] = []
    tool_index = 0
    for position in range(len(lines) + 1):
        while tool_index < len(tools) and tools[tool_index].after_lines <= position:
            tool = tools[tool_index]
            units.append(
                [
                    AddToolCall(tool.call_id, tool.name, tool.arguments),
                    AddToolOutput(tool.call_id, tool.output),
                ]
            )
            tool_index += 1
        if position < len(lines):
            items = _line_items(lines[position])
            if items:
                units.append(items)
    kept: list[list[ToModel]] = []
    used = 0
    for unit in reversed(units):
        size = sum(_size(item) for item in unit)
        if kept and used + size > max_chars:
            break
        kept.append(unit)
        used += size
    kept.reverse()
    return [item for unit in kept for item in unit], len(units) - len(kept)


def _size(item: ToModel) -> int:
    if isinstance(item, AddUserText | AddAgentText):
        return len(item.text)
    if isinstance(item, AddToolCall):
        return len(item.name) + len(item.arguments)
    if isinstance(item, AddToolOutput):
        return len(item.output)
    return 0
