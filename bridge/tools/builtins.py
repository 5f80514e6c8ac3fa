"""Built-in call-control tools, and building an agent's registry from its tool list.

The built-ins perform no I/O.  They return a :class:`CallControlRequest` and the core
acts on it after the agent's last words have played; hanging up mid-sentence is the
classic voice-bot bug.  ``transfer_call`` only reaches numbers on the operator's
allow-list (labels or numbers in the :class:`ToolContext`), so a prompt-injected
"transfer me to +1 900…" is refused with the list of allowed targets instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from bridge.config import AgentConfig
from bridge.tools.registry import (
    DEFAULT_TIMEOUT_S,
    DTMF_PATTERN,
    CallControlRequest,
    Tool,
    ToolContext,
    ToolError,
    ToolLoadError,
    ToolRegistry,
    load_tools,
    tool,
    transfer_refusal_message,
)

MAX_DTMF_DIGITS = 64
"""Enough for an extension plus a PIN; more is a sign the model is looping."""


@tool
def hang_up(
    reason: Annotated[str, "Why the call is ending, for the call record"] = "",
) -> CallControlRequest:
    """End the phone call after your current words have been spoken.

    Use it when the caller says goodbye or the conversation is clearly over. Say
    goodbye before (or while) calling it.
    """
    return CallControlRequest(kind="hang_up", reason=reason)


@tool
def transfer_call(
    to: Annotated[str, "The transfer target: one of the names given in your instructions"],
    reason: Annotated[str, "Why the caller is being transferred, for the call record"] = "",
    context: ToolContext | None = None,
) -> CallControlRequest:
    """Transfer the caller to a person or department after your current words.

    Only the targets the operator allows can be reached; if a target is refused the
    reply lists the allowed ones. Tell the caller you are transferring them first.
    """
    ctx = context or ToolContext()
    target = ctx.resolve_transfer_target(to)
    if target is None:
        raise ToolError(transfer_refusal_message(to, ctx))
    return CallControlRequest(kind="transfer", target=target, reason=reason)


@tool
def send_dtmf(
    digits: Annotated[str, "Keypad digits to press: 0-9, * and #; 'w' waits half a second"],
) -> CallControlRequest:
    """Press keys on the phone keypad, e.g. to navigate another party's phone menu."""
    cleaned = digits.replace(" ", "")
    if not cleaned or not DTMF_PATTERN.fullmatch(cleaned):
        raise ToolError(f"{digits!r} are not valid DTMF digits; use only 0-9, *, # and w (wait).")
    if len(cleaned) > MAX_DTMF_DIGITS:
        raise ToolError(f"At most {MAX_DTMF_DIGITS} digits can be sent at once.")
    return CallControlRequest(kind="send_dtmf", digits=cleaned)


BUILTIN_TOOLS: dict[str, Tool] = {t.name: t for t in (hang_up, transfer_call, send_dtmf)}
"""Built-ins by the name an agent's ``tools`` list uses for them."""


def builtin_registry(*, default_timeout_s: float = DEFAULT_TIMEOUT_S) -> ToolRegistry:
    """A registry holding every built-in tool."""
    return ToolRegistry(BUILTIN_TOOLS.values(), default_timeout_s=default_timeout_s)


def resolve_tool_entry(entry: str) -> list[Tool]:
    """One ``tools`` entry: a built-in name or an import path, as tools.

    Raises :class:`ToolLoadError` with a message naming the entry.
    """
    name = entry.strip()
    if name in BUILTIN_TOOLS:
        return [BUILTIN_TOOLS[name]]
    if ":" not in name and "." not in name:
        raise ToolLoadError(
            f"tool {entry!r} is neither a built-in ({', '.join(BUILTIN_TOOLS)}) nor an "
            "import path like 'package.module:function'"
        )
    return load_tools(name)


def check_tool_entries(entries: Iterable[str]) -> list[str]:
    """Every problem with a ``tools`` list (unresolvable entries, duplicate names)."""
    problems: list[str] = []
    seen: dict[str, str] = {}
    for entry in entries:
        try:
            tools = resolve_tool_entry(entry)
        except ToolLoadError as exc:
            problems.append(str(exc))
            continue
        for item in tools:
            if item.name in seen:
                problems.append(
                    f"tool {entry!r}: name {item.name!r} is also provided by {seen[item.name]!r}"
                )
            else:
                seen[item.name] = entry
    return problems


def build_registry(
    entries: Iterable[str], *, default_timeout_s: float = DEFAULT_TIMEOUT_S
) -> ToolRegistry:
    """The registry for a ``tools`` list; raise :class:`ToolLoadError` listing all problems."""
    entries = list(entries)
    problems = check_tool_entries(entries)
    if problems:
        raise ToolLoadError("; ".join(problems))
    registry = ToolRegistry(default_timeout_s=default_timeout_s)
    for entry in entries:
        for item in resolve_tool_entry(entry):
            registry.register(item)
    return registry


def registry_for_agent(
    agent: AgentConfig, *, default_timeout_s: float = DEFAULT_TIMEOUT_S
) -> ToolRegistry:
    """The registry for an agent profile's ``tools`` (built-in names and import paths)."""
    return build_registry(agent.tools, default_timeout_s=default_timeout_s)
