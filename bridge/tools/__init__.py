"""Function tools for the voice agent: declare with ``@tool``, run with ``ToolRegistry.run``.

See ``docs/tools-and-agents.md`` for writing a tool and wiring it to an agent.
"""

from bridge.tools.builtins import (
    BUILTIN_TOOLS,
    build_registry,
    builtin_registry,
    check_tool_entries,
    hang_up,
    registry_for_agent,
    resolve_tool_entry,
    send_dtmf,
    transfer_call,
)
from bridge.tools.registry import (
    DEFAULT_TIMEOUT_S,
    CallControlRequest,
    Tool,
    ToolContext,
    ToolError,
    ToolLoadError,
    ToolOutcome,
    ToolRegistry,
    load_tools,
    make_tool,
    tool,
)
from bridge.tools.schema import SchemaError, schema_for_type, validate_arguments

__all__ = [
    "BUILTIN_TOOLS",
    "DEFAULT_TIMEOUT_S",
    "CallControlRequest",
    "SchemaError",
    "Tool",
    "ToolContext",
    "ToolError",
    "ToolLoadError",
    "ToolOutcome",
    "ToolRegistry",
    "build_registry",
    "builtin_registry",
    "check_tool_entries",
    "hang_up",
    "load_tools",
    "make_tool",
    "registry_for_agent",
    "resolve_tool_entry",
    "schema_for_type",
    "send_dtmf",
    "tool",
    "transfer_call",
    "validate_arguments",
]
