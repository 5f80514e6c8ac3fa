"""Real headless Chromium for the softphone and console tests.

Chromium and its driver come from the OS packages (``apt-get install chromium
chromium-driver``, done by ``.ci/run``); Playwright's Python package drives it through
the driver its wheel ships, pointed at ``/usr/bin/chromium`` (no browser download).
Tests that need it skip, with the reason, when either is missing.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("BRIDGE_TEST_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not Path(CHROMIUM).exists():
        return f"no Chromium at {CHROMIUM} (apt-get install chromium chromium-driver)"
    try:
        import playwright.async_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (pip install -e '.[dev]')"
    return None


@pytest.fixture
def chromium_or_skip() -> None:
    """Skip with the reason when the browser is missing; fail instead where CI installed
    it (``BRIDGE_TEST_BROWSER=require``), so a broken install cannot pass as skipped."""
    reason = missing()
    if reason:
        if os.environ.get("BRIDGE_TEST_BROWSER") == "require":
            pytest.fail(reason)
        pytest.skip(reason)


def flags(fake_audio: Path | None, *, allow_microphone: bool = True) -> list[str]:
    args = [
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--use-fake-device-for-media-stream",
    ]
    if allow_microphone:  # without it, nothing grants the permission: getUserMedia fails
        args.append("--use-fake-ui-for-media-stream")
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}%noloop")
    return args


@contextlib.asynccontextmanager
async def chromium(
    profile: Path, fake_audio: Path | None = None, *, allow_microphone: bool = True
) -> AsyncIterator[Any]:
    """A fresh browser context (its own ``--user-data-dir``), closed afterwards."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        context = await pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=flags(fake_audio, allow_microphone=allow_microphone),
            viewport={"width": 1200, "height": 860},
        )
        try:
            yield context
        finally:
            await context.close()
