"""Agent profiles from a TOML file, and choosing the agent by the number that was called.

One deployment often answers several numbers with different agents (sales, support).
The profiles live in one TOML file (``BRIDGE_AGENTS_FILE``); anything a profile leaves
out is inherited from the environment-configured agent, so the file stays short.

A broken profile must fail the deployment at start-up, not the first caller on that
number, so everything is checked up front (including that tool import paths import)
and every problem is reported together with the file, the line where we can find it
and the key path, e.g. ``agents.toml:12: agents.sales.voice: 'nova' is not a voice``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from bridge.cascade.settings import PROFILE_KEYS as _CASCADE_KEYS
from bridge.config import BACKENDS, VOICES, AgentConfig, TurnDetection
from bridge.tools.builtins import check_tool_entries

E164 = re.compile(r"^\+[1-9][0-9]{1,14}$")
_AGENT_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

_AGENT_KEYS = (
    "instructions",
    "voice",
    "greeting",
    "turn_detection",
    "tools",
    "transcription_model",
    "dtmf_length",
    "on_model_failure",
    "fallback_number",
    "model_retry_s",
    "backend",
    "cascade",
)
_TURN_KEYS = (
    "type",
    "threshold",
    "silence_duration_ms",
    "prefix_padding_ms",
    "eagerness",
    "create_response",
    "interrupt_response",
)
_TOP_KEYS = ("agents", "routes", "default", "transfer")
MODEL_FAILURE_ACTIONS = ("hang_up", "transfer", "retry")
_VAD_TYPES = ("server_vad", "semantic_vad", "none")
_EAGERNESS = ("low", "medium", "high", "auto")


class ProfileError(Exception):
    """The agents file is invalid; ``problems`` holds one line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid agent profiles:\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class AgentDirectory:
    """The agents a deployment serves and which called number gets which agent.

    ``transfer_labels`` (label → number) come from the file's ``[transfer]`` table and
    belong in each call's :class:`bridge.tools.ToolContext`.
    """

    agents: Mapping[str, AgentConfig]
    default: str
    routes: Mapping[str, str] = field(default_factory=dict)
    transfer_labels: Mapping[str, str] = field(default_factory=dict)
    source: str | None = None

    @classmethod
    def single(cls, base: AgentConfig) -> AgentDirectory:
        """Serve the environment-configured agent on every number (no agents file)."""
        return cls(agents={base.name: base}, default=base.name)

    def for_number(self, to: str | None) -> AgentConfig:
        """The agent for the called number (Twilio's ``To``); the default when unrouted."""
        name = self.routes.get(_normalize_number(to)) if to else None
        return self.agents[name or self.default]

    def names(self) -> list[str]:
        return list(self.agents)


def _normalize_number(number: str | None) -> str:
    """Twilio sends E.164, but be forgiving of spaces and punctuation in hand-written input."""
    if not number:
        return ""
    value = number.strip()
    if value.startswith("+"):
        return "+" + re.sub(r"[\s().-]", "", value[1:])
    return value


def load_agents(path: str, base: AgentConfig) -> AgentDirectory:
    """Read and validate the agents file; raise :class:`ProfileError` listing every problem.

    ``base`` is the agent configured by environment variables: each profile starts
    from it and overrides only the keys it sets.
    """
    try:
        with open(path, "rb") as handle:
            raw = handle.read()
    except OSError as exc:
        raise ProfileError([f"{path}: cannot read the agents file ({exc.strerror})"]) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProfileError([f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProfileError([_syntax_problem(path, exc)]) from None
    return _Loader(path, text, base).load(data)


def _syntax_problem(path: str, exc: tomllib.TOMLDecodeError) -> str:
    """``file:line:col: TOML syntax error: …`` from the decoder's message."""
    message = str(exc)
    lineno = getattr(exc, "lineno", None)
    colno = getattr(exc, "colno", None)
    found = re.search(r"\s*\(at line (\d+), column (\d+)\)$", message)
    if found:
        message = message[: found.start()]
        lineno = lineno or int(found.group(1))
        colno = colno or int(found.group(2))
    where = f"{path}:{lineno}:{colno}" if lineno else path
    return f"{where}: TOML syntax error: {message}"


class _Loader:
    """Validates one parsed file, collecting problems instead of stopping at the first."""

    def __init__(self, path: str, text: str, base: AgentConfig) -> None:
        self.path = path
        self.lines = text.splitlines()
        self.base = base
        self.problems: list[str] = []

    def problem(self, key: str, reason: str) -> None:
        line = self.locate(key)
        where = f"{self.path}:{line}" if line else self.path
        self.problems.append(f"{where}: {key}: {reason}")

    # -------------------------------------------------------------- the document

    def load(self, data: dict[str, Any]) -> AgentDirectory:
        for key in data:
            if key not in _TOP_KEYS:
                self.problem(key, f"unknown key (expected one of: {', '.join(_TOP_KEYS)})")

        agents: dict[str, AgentConfig] = {}
        tables = data.get("agents")
        if tables is None:
            self.problem("agents", "no agents defined (add an [agents.<name>] table)")
        elif not isinstance(tables, dict):
            self.problem("agents", "must be a table of [agents.<name>] tables")
        else:
            if not tables:
                self.problem("agents", "no agents defined (add an [agents.<name>] table)")
            for name, table in tables.items():
                agent = self.agent(name, table)
                if agent is not None:
                    agents[name] = agent

        inheriting = [
            name
            for name, table in (tables.items() if isinstance(tables, dict) else ())
            if isinstance(table, dict) and "tools" not in table
        ]
        if inheriting and self.base.tools:
            # The env agent's AGENT_TOOLS is not checked by config; an agent inheriting it
            # must fail here just like one that names the same tools itself.
            for reason in check_tool_entries(self.base.tools):
                self.problems.append(
                    f"{self.path}: agents.{_key(inheriting[0])}.tools (inherited from "
                    f"AGENT_TOOLS by {', '.join(inheriting)}): {reason}"
                )

        known = set(tables) if isinstance(tables, dict) else set()
        routes, default = self.routing(data, known)
        transfer = self.transfer(data.get("transfer"))

        if self.problems:
            raise ProfileError(self.problems)
        return AgentDirectory(
            agents=agents,
            default=default or "",
            routes=routes,
            transfer_labels=transfer,
            source=self.path,
        )

    def routing(self, data: dict[str, Any], known: set[str]) -> tuple[dict[str, str], str | None]:
        routes: dict[str, str] = {}
        default: str | None = None
        table = data.get("routes", {})
        if not isinstance(table, dict):
            self.problem("routes", "must be a table mapping called numbers to agent names")
            table = {}
        top_default = data.get("default")
        if top_default is not None and "default" in table:
            self.problem("default", "set the default in one place only ([routes] default)")
        for number, name in table.items():
            key = f"routes.{_key(number)}"
            if not isinstance(name, str):
                self.problem(key, f"must be an agent name (a string), got {_kind(name)}")
                continue
            if number == "default":
                default = name
                continue
            if not E164.fullmatch(number):
                self.problem(key, f'{number!r} is not an E.164 number like "+15551234567"')
                continue
            if name not in known:
                self.problem(key, f"routes to undefined agent {name!r}{_known(known)}")
                continue
            routes[number] = name
        if top_default is not None:
            if isinstance(top_default, str):
                default = top_default
            else:
                self.problem(
                    "default", f"must be an agent name (a string), got {_kind(top_default)}"
                )
        if default is None:
            if len(known) == 1:
                default = next(iter(known))
            elif known:
                self.problem(
                    "routes.default",
                    "missing: say which agent answers unrouted numbers, "
                    f'e.g. default = "{sorted(known)[0]}"',
                )
        elif default not in known:
            key = "default" if top_default is not None else "routes.default"
            self.problem(key, f"names undefined agent {default!r}{_known(known)}")
        return routes, default

    def transfer(self, table: Any) -> dict[str, str]:
        if table is None:
            return {}
        if not isinstance(table, dict):
            self.problem("transfer", "must be a table mapping labels to numbers")
            return {}
        labels: dict[str, str] = {}
        for label, number in table.items():
            key = f"transfer.{_key(label)}"
            if not isinstance(number, str):
                self.problem(key, f"must be a number (a string), got {_kind(number)}")
            elif not (E164.fullmatch(number) or number.startswith("sip:")):
                self.problem(key, f"{number!r} is not an E.164 number (+15551234567) or sip: URI")
            else:
                labels[label] = number
        return labels

    # -------------------------------------------------------------- one agent

    def agent(self, name: str, table: Any) -> AgentConfig | None:
        prefix = f"agents.{_key(name)}"
        if not _AGENT_NAME.fullmatch(name):
            self.problem(prefix, "agent names may use only letters, digits, '_' and '-'")
        if not isinstance(table, dict):
            self.problem(prefix, f"must be a table, got {_kind(table)}")
            return None
        before = len(self.problems)
        for key in table:
            if key not in _AGENT_KEYS:
                self.problem(
                    f"{prefix}.{_key(key)}",
                    f"unknown key (expected one of: {', '.join(_AGENT_KEYS)})",
                )
        changes: dict[str, Any] = {"name": name}
        if "instructions" in table:
            value = self.string(f"{prefix}.instructions", table["instructions"])
            if value is not None and not value.strip():
                self.problem(f"{prefix}.instructions", "must not be empty")
            elif value is not None:
                changes["instructions"] = value.strip()
        if "voice" in table:
            value = self.one_of(f"{prefix}.voice", table["voice"], VOICES)
            if value is not None:
                changes["voice"] = value
        if "greeting" in table:
            value = self.string(f"{prefix}.greeting", table["greeting"])
            if value is not None:
                changes["greeting"] = value.strip() or None
        if "transcription_model" in table:
            value = self.string(f"{prefix}.transcription_model", table["transcription_model"])
            if value is not None:
                changes["transcription_model"] = (
                    None if value.strip() in ("", "none") else value.strip()
                )
        if "dtmf_length" in table:
            length = self.whole_number(f"{prefix}.dtmf_length", table["dtmf_length"], 1, 64)
            if length is not None:
                changes["dtmf_length"] = length
        if "on_model_failure" in table:
            value = self.one_of(
                f"{prefix}.on_model_failure", table["on_model_failure"], MODEL_FAILURE_ACTIONS
            )
            if value is not None:
                changes["on_model_failure"] = value
        if "fallback_number" in table:
            value = self.string(f"{prefix}.fallback_number", table["fallback_number"])
            if value is not None:
                changes["fallback_number"] = value.strip() or None
        if "model_retry_s" in table:
            seconds = self.whole_number(f"{prefix}.model_retry_s", table["model_retry_s"], 1, 3600)
            if seconds is not None:
                changes["model_retry_s"] = seconds
        if "tools" in table:
            tools = self.tools(f"{prefix}.tools", table["tools"])
            if tools is not None:
                changes["tools"] = tools
        if "turn_detection" in table:
            turn = self.turn_detection(f"{prefix}.turn_detection", table["turn_detection"])
            if turn is not None:
                changes["turn_detection"] = turn
        if "backend" in table:
            value = self.one_of(f"{prefix}.backend", table["backend"], BACKENDS)
            if value is not None:
                changes["backend"] = value
        if "cascade" in table:
            overrides = self.cascade(f"{prefix}.cascade", table["cascade"])
            if overrides is not None:
                changes["cascade"] = overrides
        if len(self.problems) > before:
            return None
        return replace(self.base, **changes)

    def one_of(self, key: str, value: Any, options: tuple[str, ...]) -> str | None:
        text = self.string(key, value)
        if text is not None and text not in options:
            self.problem(key, f"{text!r} is not one of: {', '.join(options)}")
            return None
        return text

    def whole_number(self, key: str, value: Any, low: int, high: int) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            self.problem(key, f"must be a whole number from {low} to {high}")
            return None
        return value

    def string(self, key: str, value: Any) -> str | None:
        if not isinstance(value, str):
            self.problem(key, f"must be a string, got {_kind(value)}")
            return None
        return value

    def tools(self, key: str, value: Any) -> tuple[str, ...] | None:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            self.problem(key, "must be a list of tool names or import paths (strings)")
            return None
        for reason in check_tool_entries(value):
            self.problem(key, reason)
        return tuple(v.strip() for v in value)

    def cascade(self, key: str, value: Any) -> tuple[tuple[str, str], ...] | None:
        """``[agents.<name>.cascade]``: string overrides of the CASCADE_* stage settings."""
        if not isinstance(value, dict):
            example = '{ llm_model = "gpt-4o-mini" }'
            self.problem(key, f"must be a table like {example}, got {_kind(value)}")
            return None
        before = len(self.problems)
        pairs: list[tuple[str, str]] = []
        for name, item in value.items():
            sub = f"{key}.{_key(name)}"
            if name not in _CASCADE_KEYS:
                self.problem(sub, f"unknown key (expected one of: {', '.join(_CASCADE_KEYS)})")
                continue
            text = self.string(sub, item)
            if text is None:
                continue
            text = text.strip()
            if not text:
                self.problem(sub, "must not be empty")
            elif name == "stt_mode" and text not in ("realtime", "rest"):
                self.problem(sub, f"{text!r} is not one of: realtime, rest")
            elif name.endswith("_url") and not re.match(r"^(https?|wss?)://[^\s/]+", text):
                self.problem(sub, f"{text!r} is not an http(s):// or ws(s):// URL")
            else:
                pairs.append((name, text))
        if len(self.problems) > before:
            return None
        return tuple(pairs)

    def turn_detection(self, key: str, value: Any) -> TurnDetection | None:
        if not isinstance(value, dict):
            self.problem(key, f'must be a table like {{ type = "server_vad" }}, got {_kind(value)}')
            return None
        before = len(self.problems)
        for name in value:
            if name not in _TURN_KEYS:
                self.problem(
                    f"{key}.{_key(name)}", f"unknown key (expected one of: {', '.join(_TURN_KEYS)})"
                )
        changes: dict[str, Any] = {}
        for name, options in (("type", _VAD_TYPES), ("eagerness", _EAGERNESS)):
            if name in value:
                text = self.string(f"{key}.{name}", value[name])
                if text is not None and text not in options:
                    self.problem(f"{key}.{name}", f"{text!r} is not one of: {', '.join(options)}")
                elif text is not None:
                    changes[name] = text
        if "threshold" in value:
            number = value["threshold"]
            if isinstance(number, bool) or not isinstance(number, int | float):
                self.problem(f"{key}.threshold", f"must be a number, got {_kind(number)}")
            elif not 0.0 <= number <= 1.0:
                self.problem(f"{key}.threshold", f"{number} is out of range [0, 1]")
            else:
                changes["threshold"] = float(number)
        for name in ("silence_duration_ms", "prefix_padding_ms"):
            if name in value:
                number = value[name]
                if isinstance(number, bool) or not isinstance(number, int):
                    self.problem(f"{key}.{name}", f"must be a whole number, got {_kind(number)}")
                elif not 0 <= number <= 10_000:
                    self.problem(f"{key}.{name}", f"{number} is out of range [0, 10000]")
                else:
                    changes[name] = number
        for name in ("create_response", "interrupt_response"):
            if name in value:
                if not isinstance(value[name], bool):
                    self.problem(
                        f"{key}.{name}", f"must be true or false, got {_kind(value[name])}"
                    )
                else:
                    changes[name] = value[name]
        if len(self.problems) > before:
            return None
        return replace(self.base.turn_detection, **changes)

    # -------------------------------------------------------------- finding lines

    def locate(self, key: str) -> int | None:
        """Best-effort line of a key path (tomllib keeps no positions for valid documents).

        Finds the ``[table]`` header for the key's parent, then the ``key =`` line
        inside it; a key inside an inline table reports the inline table's line.
        """
        parts = _split_key(key)
        for depth in range(len(parts), 0, -1):
            table, leaf = parts[: depth - 1], parts[depth - 1]
            line = self._find_in_table(table, leaf)
            if line is not None:
                return line
            line = self._find_header(parts[:depth])
            if line is not None:
                return line
        return None

    def _find_header(self, table: list[str], *, exact: bool = False) -> int | None:
        """The ``[table]`` header line; else the first ``[table.sub]`` that implies it."""
        implied: int | None = None
        for index, raw in enumerate(self.lines):
            found = re.match(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$", raw)
            if not found:
                continue
            parts = _split_key(found.group(1))
            if parts == table:
                return index + 1
            if not exact and implied is None and parts[: len(table)] == table:
                implied = index + 1
        return implied

    def _find_in_table(self, table: list[str], leaf: str) -> int | None:
        start = 0
        if table:
            header = self._find_header(table, exact=True)
            if header is None:
                return None
            start = header
        key_re = re.compile(r'^\s*("?)' + re.escape(leaf) + r"\1\s*=")
        for index in range(start, len(self.lines)):
            raw = self.lines[index]
            if re.match(r"^\s*\[", raw):
                break  # the next table starts: the key is not in this one
            if key_re.match(raw):
                return index + 1
        return None


def _split_key(key: str) -> list[str]:
    """Split a dotted key path, honouring quoted parts like ``routes."+1555"``."""
    return [a or b for a, b in re.findall(r'"([^"]*)"|([^.\s"]+)', key)]


def _key(part: str) -> str:
    """Quote a key part when it is not a bare TOML key (``"+15551234567"``)."""
    return part if re.fullmatch(r"[A-Za-z0-9_-]+", part) else f'"{part}"'


def _kind(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return names.get(type(value), type(value).__name__)


def _known(known: set[str]) -> str:
    return f" (defined agents: {', '.join(sorted(known))})" if known else ""
