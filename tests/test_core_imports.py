"""The core is sans-I/O: importing it loads no event loop, socket library or numpy."""

from __future__ import annotations

import subprocess
import sys


def test_importing_the_core_loads_no_io_or_numpy() -> None:
    code = (
        "import sys, bridge.core, bridge.core.call, bridge.core.events, bridge.core.actions; "
        "print(','.join(m for m in ('asyncio', 'websockets', 'starlette', 'numpy', 'uvicorn') "
        "if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_the_running_bridge_loads_no_developer_tooling() -> None:
    """Simulators, benchmarks and tape tooling are for developers: serving never needs them."""
    code = (
        "import sys, bridge.app, bridge.services, bridge.call.relay, bridge.tapes.recorder; "
        "print(','.join(m for m in sys.modules if m.startswith('bridge.devtools')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
