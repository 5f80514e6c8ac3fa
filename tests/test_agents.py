"""Agent profiles: loading, inheritance from the env agent, routing, and every error kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from bridge.agents import AgentDirectory, ProfileError, load_agents
from bridge.config import AgentConfig, TurnDetection
from bridge.tools import registry_for_agent

REPO = Path(__file__).resolve().parents[1]

BASE = AgentConfig(
    instructions="Base instructions.",
    voice="alloy",
    greeting="Hello from base.",
    turn_detection=TurnDetection(threshold=0.6, silence_duration_ms=700),
    transcription_model="gpt-4o-transcribe",
    tools=("hang_up",),
)

GOOD = """\
[agents.sales]
voice = "coral"
instructions = "Sell things."
tools = ["hang_up", "transfer_call", "tests.example_tools:lookup_order"]
turn_detection = { type = "semantic_vad", eagerness = "high" }

[agents.support]
greeting = ""
transcription_model = "none"

[routes]
"+15551230001" = "sales"
"+15551230002" = "support"
default = "support"

[transfer]
billing = "+15551239999"
"""


def write(tmp_path: Path, text: str, name: str = "agents.toml") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


def problems_for(tmp_path: Path, text: str) -> list[str]:
    path = write(tmp_path, text)
    with pytest.raises(ProfileError) as info:
        load_agents(path, BASE)
    assert all(p.startswith(path) for p in info.value.problems), info.value.problems
    return [p[len(path) :] for p in info.value.problems]


def test_profiles_override_and_inherit_from_the_base(tmp_path: Path) -> None:
    directory = load_agents(write(tmp_path, GOOD), BASE)
    sales = directory.agents["sales"]
    assert sales.name == "sales"
    assert sales.voice == "coral"
    assert sales.instructions == "Sell things."
    assert sales.greeting == "Hello from base."
    assert sales.tools == ("hang_up", "transfer_call", "tests.example_tools:lookup_order")
    assert sales.turn_detection == TurnDetection(
        type="semantic_vad", eagerness="high", threshold=0.6, silence_duration_ms=700
    )
    support = directory.agents["support"]
    assert support.voice == "alloy" and support.instructions == "Base instructions."
    assert support.greeting is None  # "" switches the base greeting off
    assert support.transcription_model is None
    assert support.tools == ("hang_up",) and support.turn_detection == BASE.turn_detection
    assert directory.names() == ["sales", "support"]
    assert directory.transfer_labels == {"billing": "+15551239999"}
    assert registry_for_agent(sales).names() == ["hang_up", "transfer_call", "lookup_order"]


def test_routing_by_called_number_with_default(tmp_path: Path) -> None:
    directory = load_agents(write(tmp_path, GOOD), BASE)
    assert directory.for_number("+15551230001").name == "sales"
    assert directory.for_number(" +1 (555) 123-0001 ").name == "sales"
    assert directory.for_number("+15551230002").name == "support"
    assert directory.for_number("+19999999999").name == "support"
    assert directory.for_number(None).name == "support"
    assert "nobody" not in directory.agents


def test_single_agent_file_needs_no_default(tmp_path: Path) -> None:
    directory = load_agents(write(tmp_path, '[agents.only]\nvoice = "sage"\n'), BASE)
    assert directory.for_number("+15550000000").voice == "sage"


def test_top_level_default_is_accepted(tmp_path: Path) -> None:
    text = 'default = "b"\n[agents.a]\n[agents.b]\n'
    assert load_agents(write(tmp_path, text), BASE).for_number(None).name == "b"


def test_without_a_file_the_env_agent_answers_every_number() -> None:
    directory = AgentDirectory.single(BASE)
    assert directory.for_number("+15551230001") is BASE
    assert directory.for_number(None) is BASE
    assert directory.names() == ["default"]


def test_example_file_loads() -> None:
    directory = load_agents(str(REPO / "deploy" / "agents.example.toml"), AgentConfig())
    assert directory.names() == ["reception", "support"]
    assert directory.for_number("+15551230200").voice == "cedar"
    assert directory.for_number("+15550000000").name == "reception"
    assert "sales" in directory.transfer_labels


# ------------------------------------------------------------------ errors


def test_syntax_error_names_file_line_and_column(tmp_path: Path) -> None:
    problems = problems_for(tmp_path, '[agents.a]\nvoice = "coral"\ngreeting = \n')
    assert len(problems) == 1
    assert problems[0].startswith(":3:")
    assert "TOML syntax error" in problems[0]


def test_missing_and_unreadable_files() -> None:
    with pytest.raises(ProfileError, match="cannot read the agents file"):
        load_agents("/nonexistent/agents.toml", BASE)


def test_typo_keys_are_errors_with_line_and_key_path(tmp_path: Path) -> None:
    text = (
        "[agents.sales]\n"
        'voice = "coral"\n'
        'greetng = "Hi"\n'
        'turn_detection = { type = "server_vad", treshold = 0.2 }\n'
        "\n"
        "[agent.support]\n"
    )
    assert problems_for(tmp_path, text) == [
        ":6: agent: unknown key (expected one of: agents, routes, default, transfer)",
        ":3: agents.sales.greetng: unknown key (expected one of: instructions, voice, greeting, "
        "turn_detection, tools, transcription_model, dtmf_length, on_model_failure, "
        "fallback_number, model_retry_s, backend, cascade)",
        ":4: agents.sales.turn_detection.treshold: unknown key (expected one of: type, "
        "threshold, silence_duration_ms, prefix_padding_ms, eagerness, create_response, "
        "interrupt_response)",
    ]


def test_values_are_checked_for_type_and_range(tmp_path: Path) -> None:
    text = (
        "[agents.a]\n"
        'voice = "nova"\n'
        "instructions = 42\n"
        'greeting = ["hi"]\n'
        "\n"
        "[agents.a.turn_detection]\n"
        'type = "vad"\n'
        "threshold = 1.5\n"
        "silence_duration_ms = 20000\n"
        "prefix_padding_ms = 1.5\n"
        'eagerness = "fast"\n'
        'create_response = "yes"\n'
    )
    problems = problems_for(tmp_path, text)
    assert problems == [
        ":3: agents.a.instructions: must be a string, got an integer",
        ":2: agents.a.voice: 'nova' is not one of: alloy, ash, ballad, coral, echo, sage, "
        "shimmer, verse, marin, cedar",
        ":4: agents.a.greeting: must be a string, got a list",
        ":7: agents.a.turn_detection.type: 'vad' is not one of: server_vad, semantic_vad, none",
        ":11: agents.a.turn_detection.eagerness: 'fast' is not one of: low, medium, high, auto",
        ":8: agents.a.turn_detection.threshold: 1.5 is out of range [0, 1]",
        ":9: agents.a.turn_detection.silence_duration_ms: 20000 is out of range [0, 10000]",
        ":10: agents.a.turn_detection.prefix_padding_ms: must be a whole number, got a number",
        ":12: agents.a.turn_detection.create_response: must be true or false, got a string",
    ]


def test_routes_defaults_and_numbers_are_checked(tmp_path: Path) -> None:
    text = (
        "[agents.a]\n"
        "[agents.b]\n"
        "[routes]\n"
        '"+15551230001" = "a"\n'
        '"5551230002" = "b"\n'
        '"+15551230003" = "ghost"\n'
        '"+15551230004" = 7\n'
    )
    assert problems_for(tmp_path, text) == [
        ":5: routes.5551230002: '5551230002' is not an E.164 number like \"+15551234567\"",
        ":6: routes.\"+15551230003\": routes to undefined agent 'ghost' (defined agents: a, b)",
        ':7: routes."+15551230004": must be an agent name (a string), got an integer',
        ':3: routes.default: missing: say which agent answers unrouted numbers, e.g. default = "a"',
    ]


def test_default_naming_an_undefined_agent(tmp_path: Path) -> None:
    text = '[agents.a]\n[routes]\ndefault = "b"\n'
    assert problems_for(tmp_path, text) == [
        ":3: routes.default: names undefined agent 'b' (defined agents: a)"
    ]


def test_no_agents_at_all(tmp_path: Path) -> None:
    assert problems_for(tmp_path, '[routes]\ndefault = "a"\n') == [
        ": agents: no agents defined (add an [agents.<name>] table)",
        ":2: routes.default: names undefined agent 'a'",
    ]


def test_tools_that_do_not_import_fail_at_load(tmp_path: Path) -> None:
    text = (
        "[agents.a]\n"
        'tools = ["hang_up", "hangup", "tests.example_tools:nope", "no_such_pkg.x:f"]\n'
        "[agents.b]\n"
        'tools = "hang_up"\n'
        "[routes]\n"
        'default = "a"\n'
    )
    problems = problems_for(tmp_path, text)
    assert problems[0].startswith(":2: agents.a.tools: tool 'hangup' is neither a built-in")
    assert problems[1] == (
        ":2: agents.a.tools: tool 'tests.example_tools:nope': module 'tests.example_tools' "
        "has no attribute 'nope'"
    )
    assert problems[2].startswith(
        ":2: agents.a.tools: tool 'no_such_pkg.x:f': cannot import module 'no_such_pkg.x'"
    )
    assert problems[3] == (
        ":4: agents.b.tools: must be a list of tool names or import paths (strings)"
    )


def test_transfer_labels_are_checked(tmp_path: Path) -> None:
    text = '[agents.a]\n[transfer]\nsales = "555"\ndesk = "sip:desk@example.com"\nx = 1\n'
    assert problems_for(tmp_path, text) == [
        ":3: transfer.sales: '555' is not an E.164 number (+15551234567) or sip: URI",
        ":5: transfer.x: must be a number (a string), got an integer",
    ]


def test_dotted_and_quoted_agent_names(tmp_path: Path) -> None:
    text = '[agents."bad name"]\nvoice = "coral"\n'
    assert problems_for(tmp_path, text) == [
        ":1: agents.\"bad name\": agent names may use only letters, digits, '_' and '-'"
    ]


def test_problem_without_a_findable_line_still_names_the_key(tmp_path: Path) -> None:
    text = 'agents = { a = { voice = "nova" } }\n'
    assert problems_for(tmp_path, text) == [
        ":1: agents.a.voice: 'nova' is not one of: alloy, ash, ballad, coral, echo, sage, "
        "shimmer, verse, marin, cedar"
    ]


def test_inherited_env_tools_are_checked_too(tmp_path: Path) -> None:
    path = write(tmp_path, '[agents.a]\n[agents.b]\ntools = []\n[routes]\ndefault = "b"\n')
    base = AgentConfig(tools=("hang_up", "nopkg.tools:x"))
    with pytest.raises(ProfileError) as info:
        load_agents(path, base)
    [problem] = info.value.problems
    assert problem.startswith(f"{path}: agents.a.tools (inherited from AGENT_TOOLS by a): ")
    assert "cannot import module 'nopkg.tools'" in problem
