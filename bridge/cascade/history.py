"""The conversation as chat-completions messages, kept valid for the API.

The chat API insists that an assistant message with ``tool_calls`` is followed by
one ``tool`` message per call before anything else.  A phone call breaks that
naturally: the caller speaks while a tool runs, so a user message lands between the
call and its output.  Outputs are therefore inserted right after their call, and a
call still running when the next request is built gets a placeholder output.
"""

from __future__ import annotations

from typing import Any

__all__ = ["add_tool_output", "chat_messages"]

Message = dict[str, Any]
PENDING_OUTPUT = '{"status": "still running"}'


def add_tool_output(history: list[Message], call_id: str, output: str) -> None:
    """Insert the output after its call (and after earlier outputs of the same message)."""
    message: Message = {"role": "tool", "tool_call_id": call_id, "content": output}
    for i in range(len(history) - 1, -1, -1):
        calls = history[i].get("tool_calls") or ()
        if any(c.get("id") == call_id for c in calls):
            j = i + 1
            while j < len(history) and history[j].get("role") == "tool":
                j += 1
            history.insert(j, message)
            return
    history.append(message)  # an output for an unknown call: keep it, the API will say


def chat_messages(instructions: str, history: list[Message],
                  extra_instructions: str | None = None) -> list[Message]:
    """System prompt + history (+ this turn's one-off instructions), valid for the API."""
    out: list[Message] = [{"role": "system", "content": instructions}] if instructions else []
    i = 0
    while i < len(history):
        message = history[i]
        out.append(message)
        i += 1
        calls = message.get("tool_calls") or ()
        if not calls:
            continue
        answered: set[str] = set()
        while i < len(history) and history[i].get("role") == "tool":
            answered.add(str(history[i].get("tool_call_id")))
            out.append(history[i])
            i += 1
        for call in calls:
            if call.get("id") not in answered:
                out.append({"role": "tool", "tool_call_id": call.get("id"),
                            "content": PENDING_OUTPUT})
    if extra_instructions:
        out.append({"role": "system", "content": extra_instructions})
    return out
