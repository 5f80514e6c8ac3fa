"""Tools the voice agent may call, and the one safe way to run them.

The model's function calls are untrusted input arriving mid-conversation.  Whatever
goes wrong (an unknown name, broken JSON, a wrong argument, an exception, a slow
backend) must come back as a :class:`ToolOutcome` whose ``output`` the model can
speak about, never as an exception that tears the call down.  Sync functions run in
a worker thread so a slow database call cannot freeze the audio of every call on the
event loop.

Call control (hang up, transfer, DTMF) is expressed as data, a
:class:`CallControlRequest`, because the tool runs while the agent is still talking:
the bridge's core decides *when* to act (after the last words have played).  The
transfer allow-list is enforced here, in the run path, so that the core never even
sees a request for a number the operator did not allow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
import enum
import importlib
import inspect
import json
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, overload

from bridge.tools.schema import (
    JsonSchema,
    SchemaError,
    convert_value,
    derive_parameters,
    description_from_doc,
    validate_arguments,
)

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0
"""Long enough for a real backend lookup, short enough that the caller is not left in silence."""

DTMF_PATTERN = re.compile(r"^[0-9*#wW]+$")
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ToolError(Exception):
    """Raise from a tool to report a failure *to the model* in your own words.

    The message is sent to the model verbatim (as ``{"error": message}``), so write it
    for the conversation: ``raise ToolError("No order with number 123 exists.")``.
    Any other exception is reported to the model only by its type, because its text
    may carry internals that do not belong in a conversation.
    """


class ToolLoadError(ValueError):
    """A tool import path does not resolve to a tool (raised at start-up, not mid-call)."""


@dataclass(frozen=True)
class CallControlRequest:
    """Something the call itself should do once the agent's last words have played.

    ``target`` is the resolved number/URI for ``transfer``; ``digits`` is set for
    ``send_dtmf``.  Tools return this instead of acting so that the sans-I/O core
    keeps control of timing.
    """

    kind: Literal["hang_up", "transfer", "send_dtmf"]
    target: str | None = None
    digits: str | None = None
    reason: str = ""


@dataclass(frozen=True)
class ToolContext:
    """Facts about the call a tool may need; pass ``context: ToolContext`` to receive it.

    ``transfer_numbers`` and ``transfer_labels`` (label → number) form the transfer
    allow-list.  Labels are what the model should say ("sales"); numbers listed only
    in ``transfer_numbers`` are allowed too.
    """

    call_sid: str | None = None
    stream_sid: str | None = None
    from_number: str | None = None
    to_number: str | None = None
    agent_name: str = "default"
    custom_parameters: Mapping[str, str] = field(default_factory=dict)
    transfer_numbers: tuple[str, ...] = ()
    transfer_labels: Mapping[str, str] = field(default_factory=dict)

    def allowed_transfer_targets(self) -> frozenset[str]:
        """Every number/URI a transfer may go to."""
        return frozenset(self.transfer_numbers) | frozenset(self.transfer_labels.values())

    def transfer_choices(self) -> list[str]:
        """How to name the allowed targets to the model: labels if any, else numbers."""
        labelled = set(self.transfer_labels.values())
        return list(self.transfer_labels) + [n for n in self.transfer_numbers if n not in labelled]

    def resolve_transfer_target(self, to: str) -> str | None:
        """The number for a label or an allowed number, or None when not allowed."""
        wanted = to.strip()
        for label, number in self.transfer_labels.items():
            if label.casefold() == wanted.casefold():
                return number
        compact = re.sub(r"[\s().-]", "", wanted)
        allowed = self.allowed_transfer_targets()
        if wanted in allowed:
            return wanted
        if compact in allowed:
            return compact
        return None


@dataclass(frozen=True)
class ToolOutcome:
    """The result of one function call, ready for ``function_call_output``.

    ``output`` is always a JSON string.  ``ok`` is False for every failure, with
    ``error`` holding a log-friendly description.  ``control`` is set when the call
    itself should do something (already checked against the allow-list).
    """

    output: str
    ok: bool = True
    error: str | None = None
    control: CallControlRequest | None = None


@dataclass(frozen=True)
class Tool:
    """A function the model can call: its public definition plus how to invoke it.

    Calling a ``Tool`` calls the underlying function, so decorated functions stay
    directly testable.
    """

    name: str
    description: str
    parameters: JsonSchema
    fn: Callable[..., Any]
    timeout_s: float | None = None
    context_param: str | None = None
    hints: Mapping[str, Any] = field(default_factory=dict)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(*args, **kwargs)

    def definition(self) -> dict[str, Any]:
        """The tool in the Realtime API's ``session.tools`` shape."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": self.parameters,
        }


def make_tool(
    fn: Callable[..., Any],
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: JsonSchema | None = None,
    timeout_s: float | None = None,
) -> Tool:
    """Build a :class:`Tool` from a function; raise :class:`SchemaError` if it cannot be one."""
    if isinstance(fn, Tool):
        return fn
    if not callable(fn):
        raise SchemaError(f"{fn!r} is not callable")
    tool_name: str = name or getattr(fn, "__name__", None) or ""
    if not _NAME_PATTERN.fullmatch(tool_name):
        raise SchemaError(
            f"tool name {tool_name!r} must be 1-64 letters, digits, '_' or '-' (an API rule)"
        )
    if timeout_s is not None and not timeout_s > 0:
        raise SchemaError(f"tool {tool_name!r}: timeout_s must be positive, got {timeout_s!r}")
    derived = derive_parameters(fn, context_type=ToolContext, explicit=parameters)
    return Tool(
        name=tool_name,
        description=description if description is not None else description_from_doc(fn),
        parameters=derived.parameters,
        fn=fn,
        timeout_s=timeout_s,
        context_param=derived.context_param,
        hints=derived.hints,
    )


@overload
def tool(fn: Callable[..., Any], /) -> Tool: ...


@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: JsonSchema | None = None,
    timeout_s: float | None = None,
) -> Callable[[Callable[..., Any]], Tool]: ...


def tool(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    parameters: JsonSchema | None = None,
    timeout_s: float | None = None,
) -> Tool | Callable[[Callable[..., Any]], Tool]:
    """Declare a function (sync or async) as a tool: ``@tool`` or ``@tool(timeout_s=3)``.

    The schema comes from the type hints and the description from the docstring's
    first paragraph unless given explicitly.  Mistakes in the signature raise
    :class:`SchemaError` at import time, not in the middle of a call.
    """

    def wrap(f: Callable[..., Any]) -> Tool:
        return make_tool(
            f, name=name, description=description, parameters=parameters, timeout_s=timeout_s
        )

    return wrap(fn) if fn is not None else wrap


def load_tools(path: str) -> list[Tool]:
    """Resolve ``"package.module:function"`` or ``"package.module"`` to tools.

    A module path must export ``TOOLS`` (a list of tools/functions, or a
    :class:`ToolRegistry`).  Plain functions are wrapped with :func:`tool`.  Every
    failure raises :class:`ToolLoadError` naming the path and what was wrong, so a
    typo fails the deployment at start-up.
    """
    module_name, sep, attr = path.strip().partition(":")
    if not module_name or (sep and not attr):
        raise ToolLoadError(
            f"tool {path!r}: expected 'package.module:function' or 'package.module'"
        )
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ToolLoadError(
            f"tool {path!r}: cannot import module {module_name!r} ({type(exc).__name__}: {exc})"
        ) from exc
    if sep:
        target: Any = module
        for part in attr.split("."):
            try:
                target = getattr(target, part)
            except AttributeError:
                raise ToolLoadError(
                    f"tool {path!r}: module {module_name!r} has no attribute {attr!r}"
                ) from None
        items: Iterable[Any] = [target]
    else:
        exported = getattr(module, "TOOLS", None)
        if exported is None:
            raise ToolLoadError(
                f"tool {path!r}: module {module_name!r} has no TOOLS list; "
                f"name one function with '{module_name}:function'"
            )
        items = list(exported) if isinstance(exported, ToolRegistry) else exported
        if not isinstance(items, Iterable) or isinstance(items, str | bytes):
            raise ToolLoadError(f"tool {path!r}: TOOLS must be a list of tools")
    tools: list[Tool] = []
    for item in items:
        if not callable(item):
            raise ToolLoadError(f"tool {path!r}: {item!r} is not a function or tool")
        try:
            tools.append(make_tool(item))
        except SchemaError as exc:
            raise ToolLoadError(f"tool {path!r}: {exc}") from exc
    return tools


class ToolRegistry:
    """The tools one agent may use, by name, and the safe way to run them."""

    def __init__(
        self,
        tools: Iterable[Tool | Callable[..., Any]] = (),
        *,
        default_timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        if not default_timeout_s > 0:
            raise ValueError(f"default_timeout_s must be positive, got {default_timeout_s!r}")
        self.default_timeout_s = default_timeout_s
        self._tools: dict[str, Tool] = {}
        for item in tools:
            self.register(item)

    # ------------------------------------------------------------------ declaring

    def register(self, fn_or_tool: Tool | Callable[..., Any]) -> Tool:
        """Add a tool (or a plain function, wrapped); a duplicate name is a ValueError."""
        item = make_tool(fn_or_tool)
        if item.name in self._tools:
            raise ValueError(f"a tool named {item.name!r} is already registered")
        self._tools[item.name] = item
        return item

    def load(self, path: str) -> list[Tool]:
        """Register the tools found at an import path (see :func:`load_tools`)."""
        loaded = load_tools(path)
        for item in loaded:
            try:
                self.register(item)
            except ValueError as exc:
                raise ToolLoadError(f"tool {path!r}: {exc}") from None
        return loaded

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def names(self) -> list[str]:
        return list(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    def __iter__(self) -> Iterator[Tool]:
        return iter(list(self._tools.values()))

    def __len__(self) -> int:
        return len(self._tools)

    def definitions(self) -> list[dict[str, Any]]:
        """The ``session.tools`` list for ``session.update``."""
        return [item.definition() for item in self._tools.values()]

    def subset(self, names: Iterable[str]) -> ToolRegistry:
        """A registry with only ``names`` (in that order); unknown names are a KeyError."""
        wanted = list(names)
        missing = [n for n in wanted if n not in self._tools]
        if missing:
            raise KeyError(f"unknown tools {missing}; registered: {sorted(self._tools)}")
        return ToolRegistry(
            (self._tools[n] for n in dict.fromkeys(wanted)),
            default_timeout_s=self.default_timeout_s,
        )

    # ------------------------------------------------------------------ running

    async def run(
        self,
        name: str,
        arguments_json: str,
        context: ToolContext,
        timeout_s: float | None = None,
    ) -> ToolOutcome:
        """Run one function call from the model; every failure becomes ``ok=False``.

        The time limit is ``timeout_s`` if given, else the tool's own, else the
        registry's default.  Cancellation (the call ended) is not swallowed.
        """
        item = self._tools.get(name)
        if item is None:
            available = ", ".join(self._tools) or "none"
            return _failure(f"There is no tool named {name!r}. Available tools: {available}.")
        try:
            arguments = json.loads(arguments_json) if arguments_json.strip() else {}
        except (json.JSONDecodeError, AttributeError, TypeError) as exc:
            detail = exc.msg if isinstance(exc, json.JSONDecodeError) else "not a string"
            return _failure(f"The arguments for {name} were not valid JSON ({detail}).")
        if not isinstance(arguments, dict):
            return _failure(f"The arguments for {name} must be a JSON object.")
        problems = validate_arguments(item.parameters, arguments)
        if problems:
            return _failure(f"Invalid arguments for {name}: {'; '.join(problems)}.")
        kwargs = {
            key: convert_value(item.hints[key], value) if key in item.hints else value
            for key, value in arguments.items()
        }
        if item.context_param is not None:
            kwargs[item.context_param] = context

        limit = timeout_s if timeout_s is not None else item.timeout_s or self.default_timeout_s
        try:
            async with asyncio.timeout(limit) as deadline:
                result = await _invoke(item.fn, kwargs)
        except ToolError as exc:
            return _failure(str(exc) or f"The tool {name} failed.", error=f"{name}: {exc}")
        except TimeoutError:
            if not deadline.expired():
                log.warning("tool %s raised TimeoutError", name, exc_info=True)
                return _failure(
                    f"The tool {name} failed (a backend timed out).",
                    error=f"{name}: TimeoutError raised inside the tool",
                )
            log.warning("tool %s timed out after %s s", name, _seconds(limit))
            return _failure(f"The tool {name} timed out after {_seconds(limit)} s.")
        except Exception as exc:
            log.warning("tool %s raised %s", name, type(exc).__name__, exc_info=True)
            return _failure(
                f"The tool {name} failed unexpectedly ({type(exc).__name__}).",
                error=f"{name}: {type(exc).__name__}: {exc}",
            )
        return _finish(name, result, context)


async def _invoke(fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
    """Await async functions on the loop; run sync ones in a thread (they may block)."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    ):
        return await fn(**kwargs)
    result = await asyncio.to_thread(fn, **kwargs)
    if inspect.isawaitable(result):
        result = await result
    return result


def _finish(name: str, result: Any, context: ToolContext) -> ToolOutcome:
    if isinstance(result, CallControlRequest):
        return _control_outcome(name, result, context)
    try:
        output = json.dumps(result, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return _failure(
            f"The tool {name} returned a result that could not be read.",
            error=f"{name}: result is not JSON-serializable ({exc})",
        )
    return ToolOutcome(output=output)


def _control_outcome(name: str, request: CallControlRequest, context: ToolContext) -> ToolOutcome:
    """Check a call-control request against policy and describe it to the model."""
    if request.kind == "transfer":
        allowed = context.allowed_transfer_targets()
        if request.target is None or request.target not in allowed:
            return _failure(transfer_refusal_message(request.target or "", context))
        label = next((k for k, v in context.transfer_labels.items() if v == request.target), None)
        payload: dict[str, Any] = {
            "ok": True,
            "action": "transfer",
            "to": label or request.target,
            "note": "The caller will be transferred once you finish speaking.",
        }
    elif request.kind == "send_dtmf":
        if not request.digits or not DTMF_PATTERN.fullmatch(request.digits):
            return _failure(
                f"The tool {name} asked for invalid DTMF digits; use only 0-9, *, # and w.",
            )
        payload = {"ok": True, "action": "send_dtmf", "digits": request.digits}
    elif request.kind == "hang_up":
        payload = {
            "ok": True,
            "action": "hang_up",
            "note": "The call will end once you finish speaking.",
        }
    else:
        return _failure(f"The tool {name} asked for an unknown call action.")
    return ToolOutcome(output=json.dumps(payload, ensure_ascii=False), control=request)


def transfer_refusal_message(to: str, context: ToolContext) -> str:
    """What to tell the model when ``to`` is not on the allow-list: the allowed choices."""
    choices = context.transfer_choices()
    if not choices:
        return "Transfers are not available on this line."
    return f"Transfer to {to!r} is not allowed. Allowed targets: {', '.join(choices)}."


def _failure(message: str, *, error: str | None = None) -> ToolOutcome:
    return ToolOutcome(
        output=json.dumps({"error": message}, ensure_ascii=False),
        ok=False,
        error=error or message,
    )


def _seconds(value: float) -> str:
    return f"{value:g}"


def _json_default(value: Any) -> Any:
    """Serialize the common non-JSON types tools return; refuse anything else."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON-serializable")
