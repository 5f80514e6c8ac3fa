"""``python -m bridge demo --browser``: talk to a simulated agent from your browser.

Serves the real bridge on 127.0.0.1 (a secure context, so browsers allow the
microphone there) with the Realtime simulator as the model, the operator side switched
on with a generated credential, recordings and a call store in a scratch directory, and
prints a sign-in link.  The simulator answers each of your turns with its next scripted
clip (greeting, the opening-hours answer, then a short answer every time), so no key and
no account are needed; with ``OPENAI_API_KEY`` set, ``python -m bridge serve`` and the
same page talk to the real model instead (README, "Softphone and console").
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from pathlib import Path

from bridge.devtools.sim.local_bridge import LocalBridge
from bridge.devtools.sim.realtime_server import RealtimeSimulator

GREETING = "Hello, thanks for calling Acme. How can I help you today?"
SCRIPT = ["agent_greeting", "agent_reply", "agent_short"]


async def run_browser_demo(stop: asyncio.Event | None = None, workdir: str | None = None) -> int:
    """Serve until ``stop`` is set (or forever); return the exit status."""
    token = os.environ.get("BRIDGE_OPERATOR_TOKEN") or secrets.token_urlsafe(24)
    scratch = Path(workdir or tempfile.mkdtemp(prefix="bridge-demo-"))
    sim = RealtimeSimulator(script=SCRIPT, api_key="sk-demo-local-only")
    env = {
        "OPENAI_API_KEY": "sk-demo-local-only",
        "AGENT_GREETING": GREETING,
        "BRIDGE_OPERATOR_TOKEN": token,
        "BRIDGE_RECORDINGS_DIR": str(scratch / "recordings"),
        "BRIDGE_TAPES_DIR": str(scratch / "tapes"),
        "DATABASE_URL": f"sqlite:///{scratch / 'calls.db'}",
    }
    async with sim, LocalBridge(sim.url, env=env) as bridge:
        base = bridge.base_url
        print("Browser demo: the bridge is serving on 127.0.0.1 with a simulated agent.\n")
        print(f"  Open this link to sign in and call:  {base}/login#token={token}")
        print(f"  The live console:                    {base}/console")
        print(f"  (operator token: {token} ; calls, recordings and tapes in {scratch})\n")
        print("Allow the microphone, press Call, and talk; press Ctrl-C here to stop.",
              flush=True)
        await (stop or asyncio.Event()).wait()
    return 0
