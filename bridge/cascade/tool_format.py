"""Realtime function tools -> chat-completions tools.

The core hands every backend the Realtime ``session.tools`` shape (flat ``name``,
``description``, ``parameters``); chat completions nest those under ``function``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

__all__ = ["chat_tools"]


def chat_tools(realtime_tools: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The same functions in the chat-completions ``tools`` shape (non-functions dropped)."""
    out: list[dict[str, Any]] = []
    for tool in realtime_tools:
        if tool.get("type", "function") != "function" or not tool.get("name"):
            continue
        function: dict[str, Any] = {"name": tool["name"]}
        if tool.get("description"):
            function["description"] = tool["description"]
        function["parameters"] = tool.get("parameters") or {"type": "object", "properties": {}}
        out.append({"type": "function", "function": function})
    return out
