"""Test helpers for projects built on the bridge.

``assert_replays`` turns a recorded call into a regression test: put tapes in
your repository and assert that your agent configuration and tools still make
the bridge behave as it did on the recorded call.
"""

from __future__ import annotations

from pathlib import Path

from bridge.devtools.tapes.replay import ToolsSpec, replay

__all__ = ["assert_replays"]


def assert_replays(path: str | Path, *, tools: ToolsSpec = None) -> None:
    """Replay the tape at ``path``; raise AssertionError with the diff if anything differs.

    ``tools`` (a ``ToolRegistry`` or ``AGENT_TOOLS``-style entries) re-runs the tools
    the model called instead of using the recorded results, and compares their output.
    """
    result = replay(path, tools=tools)
    if not result.ok:
        raise AssertionError(result.report())
