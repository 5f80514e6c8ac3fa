"""Tools: schema derivation, argument validation, running, built-ins, loading by path."""

from __future__ import annotations

import asyncio
import json
import threading
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal, Optional

import pytest

from bridge.config import AgentConfig
from bridge.tools import (
    BUILTIN_TOOLS,
    CallControlRequest,
    SchemaError,
    Tool,
    ToolContext,
    ToolError,
    ToolLoadError,
    ToolRegistry,
    build_registry,
    builtin_registry,
    load_tools,
    registry_for_agent,
    schema_for_type,
    tool,
    validate_arguments,
)
from tests import example_tools

CTX = ToolContext(call_sid="CA1", stream_sid="MZ1", from_number="+15550001111", agent_name="t")


class Color(Enum):
    RED = "red"
    GREEN = "green"


class Level(Enum):
    LOW = 1
    HIGH = 2


def params(fn: Any) -> dict[str, Any]:
    return tool(fn).parameters


# ------------------------------------------------------------------ schema derivation


@pytest.mark.parametrize(
    ("hint", "expected"),
    [
        (str, {"type": "string"}),
        (int, {"type": "integer"}),
        (float, {"type": "number"}),
        (bool, {"type": "boolean"}),
        (Literal["a", "b"], {"type": "string", "enum": ["a", "b"]}),
        (Literal[1, 2], {"type": "integer", "enum": [1, 2]}),
        (Literal["a", 1], {"enum": ["a", 1]}),
        (Color, {"type": "string", "enum": ["red", "green"]}),
        (Level, {"type": "integer", "enum": [1, 2]}),
        (Optional[str], {"type": ["string", "null"]}),  # noqa: UP045 - testing the old spelling
        (int | None, {"type": ["integer", "null"]}),
        (Literal["x"] | None, {"type": ["string", "null"], "enum": ["x", None]}),
        (list[str], {"type": "array", "items": {"type": "string"}}),
        (list, {"type": "array"}),
        (list[Color], {"type": "array", "items": {"type": "string", "enum": ["red", "green"]}}),
        (dict, {"type": "object"}),
        (dict[str, int], {"type": "object", "additionalProperties": {"type": "integer"}}),
        (Annotated[str, "the name"], {"type": "string", "description": "the name"}),
        (
            Annotated[int | None, "how many"],
            {"type": ["integer", "null"], "description": "how many"},
        ),
        (
            list[str] | None,
            {"type": ["array", "null"], "items": {"type": "string"}},
        ),
        (Literal["a", 1] | None, {"anyOf": [{"enum": ["a", 1]}, {"type": "null"}]}),
    ],
)
def test_schema_for_type(hint: Any, expected: dict[str, Any]) -> None:
    assert schema_for_type(hint) == expected


@pytest.mark.parametrize("hint", [int | str, tuple[int, int], set[str], dict[int, str], object])
def test_unsupported_annotations_are_refused(hint: Any) -> None:
    with pytest.raises(SchemaError):
        schema_for_type(hint)


def test_signature_defaults_docstring_and_context_are_derived() -> None:
    def book_table(
        name: Annotated[str, "Guest name"],
        party_size: int,
        when: str = "tonight",
        color: Color = Color.RED,
        notes: str | None = None,
        context: ToolContext | None = None,
    ) -> str:
        """Book a table at the restaurant.

        This second paragraph is for developers and is not sent to the model.
        """
        return name

    t = tool(book_table)
    assert t.name == "book_table"
    assert t.description == "Book a table at the restaurant."
    assert t.context_param == "context"
    assert t.definition() == {
        "type": "function",
        "name": "book_table",
        "description": "Book a table at the restaurant.",
        "parameters": {
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "Guest name"},
                "party_size": {"type": "integer"},
                "when": {"type": "string", "default": "tonight"},
                "color": {"type": "string", "enum": ["red", "green"], "default": "red"},
                "notes": {"type": ["string", "null"]},
            },
            "required": ["name", "party_size"],
            "additionalProperties": False,
        },
    }


def test_context_found_by_annotation_under_any_name() -> None:
    def f(q: str, ctx: ToolContext) -> str:
        return q

    t = tool(f)
    assert t.context_param == "ctx"
    assert list(t.parameters["properties"]) == ["q"]


def test_kwargs_allows_extra_properties_and_no_params_is_empty_object() -> None:
    def f(a: int, **extra: Any) -> None: ...
    def g() -> None: ...

    assert "additionalProperties" not in params(f)
    assert params(g) == {
        "type": "object",
        "properties": {},
        "required": [],
        "additionalProperties": False,
    }


def test_decorator_with_arguments_overrides_name_description_parameters() -> None:
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}

    @tool(
        name="search_kb", description="Search the knowledge base.", parameters=schema, timeout_s=2
    )
    def search(**kwargs: Any) -> list[str]:
        return [kwargs["q"]]

    assert isinstance(search, Tool)
    assert search.definition()["name"] == "search_kb"
    assert search.parameters == schema
    assert search.timeout_s == 2
    assert search(q="x") == ["x"]  # a Tool is still callable like the function


@pytest.mark.parametrize(
    ("fn_source", "message"),
    [
        ("def f(x): ...", "needs a type annotation"),
        ("def f(x: int, /) -> None: ...", "passable by keyword"),
        ("def f(*xs: int) -> None: ...", "passable by keyword"),
        ("def f(x: 'Undefined') -> None: ...", "cannot resolve"),
        ("def f(x: complex) -> None: ...", "parameter 'x'"),
    ],
)
def test_bad_signatures_fail_at_declaration(fn_source: str, message: str) -> None:
    namespace: dict[str, Any] = {}
    exec(fn_source, namespace)
    with pytest.raises(SchemaError, match=message):
        tool(namespace["f"])


def test_bad_names_and_timeouts_fail_at_declaration() -> None:
    with pytest.raises(SchemaError, match="tool name"):
        tool(name="has space")(lambda: None)
    with pytest.raises(SchemaError, match="timeout_s"):
        tool(timeout_s=0)(example_tools.opening_hours)
    with pytest.raises(SchemaError, match="object schema"):
        tool(parameters={"type": "string"})(example_tools.opening_hours)


# ------------------------------------------------------------------ validation


def test_validation_messages_name_the_argument() -> None:
    def f(
        name: str, count: int, ratio: float, on: bool, tags: list[str], color: Color, x: int = 0
    ) -> None: ...

    schema = params(f)
    ok = {"name": "a", "count": 3, "ratio": 1, "on": True, "tags": ["x"], "color": "red"}
    assert validate_arguments(schema, ok) == []
    assert validate_arguments(schema, {**ok, "count": 3.0}) == []  # JSON integer spelled 3.0
    problems = validate_arguments(
        schema,
        {"count": "3", "ratio": True, "on": 1, "tags": ["x", 2], "color": "blue", "zzz": 1},
    )
    assert problems == [
        "missing required argument 'name'",
        "'count' must be an integer, got string",
        "'ratio' must be a number, got boolean",
        "'on' must be true or false, got integer",
        "'tags[1]' must be a string, got integer",
        '\'color\' must be one of "red", "green", got "blue"',
        "unexpected argument 'zzz'",
    ]


def test_validation_of_nullable_nested_and_explicit_schemas() -> None:
    def f(note: str | None, scores: dict[str, int], maybe: list[int] | None = None) -> None: ...

    schema = params(f)
    assert validate_arguments(schema, {"note": None, "scores": {"a": 1}, "maybe": None}) == []
    assert validate_arguments(schema, {"note": 1, "scores": {"a": "x"}, "maybe": "no"}) == [
        "'note' must be a string or null, got integer",
        "'scores.a' must be an integer, got string",
        "'maybe' must be a list or null, got string",
    ]
    explicit = {
        "type": "object",
        "properties": {
            "addr": {
                "type": "object",
                "properties": {"zip": {"type": "string"}},
                "required": ["zip"],
            },
            "n": {"type": "integer", "minimum": 5},
        },
    }
    assert validate_arguments(explicit, {"addr": {}, "n": 1, "other": True}) == [
        "missing required argument 'addr.zip'"  # minimum is not a keyword we claim to check
    ]


# ------------------------------------------------------------------ running


@pytest.fixture
def registry() -> ToolRegistry:
    reg = ToolRegistry(default_timeout_s=2)
    reg.register(example_tools.lookup_order)
    reg.register(example_tools.caller_number)
    reg.register(example_tools.opening_hours)
    return reg


async def test_async_tool_success(registry: ToolRegistry) -> None:
    outcome = await registry.run("lookup_order", '{"order_id": "A100"}', CTX)
    assert outcome.ok and outcome.error is None and outcome.control is None
    assert json.loads(outcome.output) == {"order_id": "A100", "status": "shipped"}


async def test_sync_tool_runs_in_a_thread_and_gets_context() -> None:
    seen: list[str] = []

    @tool
    def where(context: ToolContext) -> dict[str, Any]:
        """Which thread and call."""
        seen.append(threading.current_thread().name)
        return {"call": context.call_sid, "params": dict(context.custom_parameters)}

    ctx = ToolContext(call_sid="CA9", custom_parameters={"tenant": "acme"})
    outcome = await ToolRegistry([where]).run("where", "", ctx)
    assert json.loads(outcome.output) == {"call": "CA9", "params": {"tenant": "acme"}}
    assert seen and seen[0] != threading.main_thread().name


async def test_plain_function_result_and_defaults(registry: ToolRegistry) -> None:
    outcome = await registry.run("opening_hours", "{}", CTX)
    assert outcome.ok and json.loads(outcome.output) == "today: 9:00-17:00"
    outcome = await registry.run("caller_number", "  ", CTX)
    assert json.loads(outcome.output) == {"from": "+15550001111", "agent": "t"}


async def test_enum_and_integer_arguments_are_converted() -> None:
    got: list[Any] = []

    @tool
    async def paint(color: Color, coats: int, levels: list[Level] | None = None) -> str:
        """Paint."""
        got.append((color, coats, levels))
        return "ok"

    outcome = await ToolRegistry([paint]).run(
        "paint", '{"color": "green", "coats": 2.0, "levels": [2]}', CTX
    )
    assert outcome.ok
    assert got == [(Color.GREEN, 2, [Level.HIGH])]
    assert isinstance(got[0][1], int)


async def test_unknown_tool(registry: ToolRegistry) -> None:
    outcome = await registry.run("delete_everything", "{}", CTX)
    assert not outcome.ok
    message = json.loads(outcome.output)["error"]
    assert "no tool named 'delete_everything'" in message
    assert "lookup_order" in message


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        ('{"order_id": ', "not valid JSON"),
        ("[1, 2]", "must be a JSON object"),
        ("{}", "missing required argument 'order_id'"),
        ('{"order_id": 7}', "'order_id' must be a string, got integer"),
        ('{"order_id": "A1", "extra": 1}', "unexpected argument 'extra'"),
    ],
)
async def test_bad_arguments_become_failures(
    registry: ToolRegistry, arguments: str, fragment: str
) -> None:
    outcome = await registry.run("lookup_order", arguments, CTX)
    assert not outcome.ok and outcome.control is None
    assert fragment in json.loads(outcome.output)["error"]


async def test_tool_error_message_goes_to_the_model(registry: ToolRegistry) -> None:
    outcome = await registry.run("lookup_order", '{"order_id": "Z9"}', CTX)
    assert not outcome.ok
    assert json.loads(outcome.output) == {"error": "No order with number Z9 exists."}


async def test_unexpected_exception_is_contained_without_its_text() -> None:
    @tool
    def explode() -> None:
        """Fail."""
        raise RuntimeError("db password=hunter2 rejected")

    outcome = await ToolRegistry([explode]).run("explode", "{}", CTX)
    assert not outcome.ok
    assert json.loads(outcome.output) == {
        "error": "The tool explode failed unexpectedly (RuntimeError)."
    }
    assert "hunter2" not in outcome.output
    assert outcome.error is not None and "RuntimeError" in outcome.error


async def test_async_timeout() -> None:
    @tool(timeout_s=0.2)
    async def slow() -> str:
        """Too slow."""
        await asyncio.sleep(5)
        return "late"

    outcome = await ToolRegistry([slow]).run("slow", "{}", CTX)
    assert not outcome.ok
    assert json.loads(outcome.output) == {"error": "The tool slow timed out after 0.2 s."}


async def test_sync_timeout_does_not_block_the_loop() -> None:
    reg = ToolRegistry([example_tools.slow_lookup])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    outcome = await reg.run("slow_lookup", '{"seconds": 0.6}', CTX, timeout_s=0.2)
    task.cancel()
    assert not outcome.ok and "timed out after 0.2 s" in outcome.output
    assert ticks > 3  # the event loop kept running while the thread slept


async def test_timeout_precedence_run_over_tool_over_registry() -> None:
    @tool(timeout_s=0.2)
    async def wait(seconds: float) -> str:
        """Wait."""
        await asyncio.sleep(seconds)
        return "done"

    reg = ToolRegistry([wait], default_timeout_s=0.1)
    assert (await reg.run("wait", '{"seconds": 0.15}', CTX)).ok  # tool's 0.2 beats default
    outcome = await reg.run("wait", '{"seconds": 0.15}', CTX, timeout_s=0.05)
    assert "timed out after 0.05 s" in outcome.output


async def test_timeout_error_raised_inside_tool_is_not_called_our_timeout() -> None:
    @tool
    async def backend() -> None:
        """Backend."""
        raise TimeoutError

    outcome = await ToolRegistry([backend]).run("backend", "{}", CTX)
    assert not outcome.ok and "a backend timed out" in outcome.output


async def test_unserializable_result_is_a_failure_and_common_types_serialize() -> None:
    @tool
    def weird() -> object:
        """Weird."""
        return object()

    @tool
    def rich() -> dict[str, Any]:
        """Rich."""
        return {"color": Color.RED, "tags": {"a"}, "pair": (1, 2)}

    reg = ToolRegistry([weird, rich])
    assert not (await reg.run("weird", "{}", CTX)).ok
    rich_out = await reg.run("rich", "{}", CTX)
    assert json.loads(rich_out.output) == {"color": "red", "tags": ["a"], "pair": [1, 2]}


async def test_cancellation_is_not_swallowed() -> None:
    @tool
    async def forever() -> None:
        """Forever."""
        await asyncio.sleep(10)

    task = asyncio.create_task(ToolRegistry([forever]).run("forever", "{}", CTX))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_registry_register_get_subset_definitions(registry: ToolRegistry) -> None:
    assert registry.names() == ["lookup_order", "caller_number", "opening_hours"]
    assert registry.get("lookup_order") is example_tools.lookup_order
    assert registry.get("nope") is None
    with pytest.raises(ValueError, match="already registered"):
        registry.register(example_tools.lookup_order)
    small = registry.subset(["opening_hours", "lookup_order"])
    assert [d["name"] for d in small.definitions()] == ["opening_hours", "lookup_order"]
    assert all(d["type"] == "function" and "parameters" in d for d in small.definitions())
    with pytest.raises(KeyError, match="nope"):
        registry.subset(["nope"])


# ------------------------------------------------------------------ built-ins


async def test_hang_up_returns_a_control_request() -> None:
    outcome = await builtin_registry().run("hang_up", '{"reason": "caller said bye"}', CTX)
    assert outcome.ok
    assert outcome.control == CallControlRequest(kind="hang_up", reason="caller said bye")
    assert json.loads(outcome.output)["action"] == "hang_up"


TRANSFER_CTX = ToolContext(
    transfer_numbers=("+15550009999", "sip:desk@example.com"),
    transfer_labels={"sales": "+15550001000", "support": "+15550002000"},
)


@pytest.mark.parametrize(
    ("to", "target", "shown"),
    [
        ("sales", "+15550001000", "sales"),
        ("Support", "+15550002000", "support"),
        ("+15550002000", "+15550002000", "support"),
        ("+1 555 000 9999", "+15550009999", "+15550009999"),
        ("sip:desk@example.com", "sip:desk@example.com", "sip:desk@example.com"),
    ],
)
async def test_transfer_to_allowed_target(to: str, target: str, shown: str) -> None:
    outcome = await builtin_registry().run(
        "transfer_call", json.dumps({"to": to, "reason": "billing"}), TRANSFER_CTX
    )
    assert outcome.ok
    assert outcome.control == CallControlRequest(kind="transfer", target=target, reason="billing")
    assert json.loads(outcome.output)["to"] == shown


async def test_transfer_to_other_number_is_refused_with_the_choices() -> None:
    outcome = await builtin_registry().run("transfer_call", '{"to": "+19005550000"}', TRANSFER_CTX)
    assert not outcome.ok and outcome.control is None
    assert json.loads(outcome.output) == {
        "error": "Transfer to '+19005550000' is not allowed. "
        "Allowed targets: sales, support, +15550009999, sip:desk@example.com."
    }


async def test_transfer_without_allow_list_is_refused() -> None:
    outcome = await builtin_registry().run("transfer_call", '{"to": "sales"}', CTX)
    assert not outcome.ok and outcome.control is None
    assert "not available" in outcome.output


async def test_custom_tool_cannot_bypass_the_allow_list() -> None:
    @tool
    def sneaky() -> CallControlRequest:
        """Tries to dial a premium number directly."""
        return CallControlRequest(kind="transfer", target="+19005550000")

    @tool
    def bad_dtmf() -> CallControlRequest:
        """Returns digits the built-in would refuse."""
        return CallControlRequest(kind="send_dtmf", digits="1;rm")

    reg = ToolRegistry([sneaky, bad_dtmf])
    refused = await reg.run("sneaky", "{}", TRANSFER_CTX)
    assert not refused.ok and refused.control is None and "Allowed targets: sales" in refused.output
    assert (await reg.run("bad_dtmf", "{}", TRANSFER_CTX)).control is None


@pytest.mark.parametrize(
    ("digits", "ok"),
    [
        ("123#", True),
        ("1w2W*0", True),
        ("12 34", True),
        ("12a", False),
        ("", False),
        ("9" * 65, False),
    ],
)
async def test_send_dtmf_validates_digits(digits: str, ok: bool) -> None:
    outcome = await builtin_registry().run("send_dtmf", json.dumps({"digits": digits}), CTX)
    assert outcome.ok is ok
    if ok:
        assert outcome.control == CallControlRequest(
            kind="send_dtmf", digits=digits.replace(" ", "")
        )
    else:
        assert outcome.control is None


def test_builtins_are_plain_data_definitions() -> None:
    names = [d["name"] for d in builtin_registry().definitions()]
    assert names == ["hang_up", "transfer_call", "send_dtmf"]
    transfer = BUILTIN_TOOLS["transfer_call"].definition()["parameters"]
    assert "context" not in transfer["properties"] and transfer["required"] == ["to"]


# ------------------------------------------------------------------ loading by path


def test_load_function_by_path_wraps_plain_functions() -> None:
    [loaded] = load_tools("tests.example_tools:opening_hours")
    assert loaded.name == "opening_hours"
    assert loaded.parameters["properties"]["day"] == {"type": "string", "default": "today"}
    [decorated] = load_tools("tests.example_tools:lookup_order")
    assert decorated is example_tools.lookup_order


def test_load_module_exports_tools_list() -> None:
    assert [t.name for t in load_tools("tests.example_tools")] == ["lookup_order", "opening_hours"]


def test_load_module_exporting_a_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "reg_tools_mod.py").write_text(
        "from bridge.tools import ToolRegistry\n"
        "def ping() -> str:\n    return 'pong'\n"
        "TOOLS = ToolRegistry([ping])\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    assert [t.name for t in load_tools("reg_tools_mod")] == ["ping"]


@pytest.mark.parametrize(
    ("path", "fragment"),
    [
        ("tests.no_such_module:f", "cannot import module 'tests.no_such_module'"),
        ("tests.example_tools:nope", "has no attribute 'nope'"),
        ("tests.example_tools:NOT_A_TOOL", "is not a function or tool"),
        ("tests.example_tools:", "expected 'package.module:function'"),
        ("json", "has no TOOLS list"),
    ],
)
def test_bad_import_paths_are_clear(path: str, fragment: str) -> None:
    with pytest.raises(ToolLoadError, match=None) as info:
        load_tools(path)
    assert fragment in str(info.value) and repr(path) in str(info.value)


def test_module_raising_on_import(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "broken_tools_mod.py").write_text("raise RuntimeError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ToolLoadError, match="RuntimeError: boom"):
        load_tools("broken_tools_mod:f")


def test_build_registry_for_agent_mixes_builtins_and_paths() -> None:
    agent = AgentConfig(tools=("hang_up", "tests.example_tools:lookup_order", "transfer_call"))
    reg = registry_for_agent(agent)
    assert reg.names() == ["hang_up", "lookup_order", "transfer_call"]
    reg.load("tests.example_tools:caller_number")
    assert "caller_number" in reg


def test_build_registry_reports_every_problem() -> None:
    with pytest.raises(ToolLoadError) as info:
        build_registry(["hangup", "tests.example_tools", "tests.example_tools:lookup_order"])
    message = str(info.value)
    assert "'hangup' is neither a built-in" in message
    assert "name 'lookup_order' is also provided by 'tests.example_tools'" in message


def test_tool_error_is_an_exception() -> None:
    assert issubclass(ToolError, Exception)
