"""``python -m bridge demo --browser`` serves the pages and prints a working sign-in link."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from bridge.devtools.sim.browser_demo import run_browser_demo

pytestmark = pytest.mark.e2e


async def test_browser_demo_prints_a_login_link_that_works(tmp_path: Path, capsys) -> None:
    stop = asyncio.Event()
    task = asyncio.create_task(run_browser_demo(stop, workdir=str(tmp_path)))
    link = None
    for _ in range(200):
        await asyncio.sleep(0.05)
        match = re.search(r"(http://127\.0\.0\.1:\d+)/login#token=(\S+)", capsys.readouterr().out)
        if match:
            link = match
            break
    assert link is not None, "no login link printed"
    base, token = link.group(1), link.group(2)
    async with httpx.AsyncClient(base_url=base) as client:
        assert (await client.get("/softphone")).status_code == 401
        response = await client.post("/login", data={"token": token})
        assert response.status_code == 303
        assert (await client.get("/softphone")).status_code == 200
        config = (await client.get("/softphone/config")).json()
        assert "cedar" in config["voices"] and config["agents"] == ["default"]
    stop.set()
    assert await asyncio.wait_for(task, 15) == 0
