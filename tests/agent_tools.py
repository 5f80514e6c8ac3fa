"""Tools for the end-to-end agent tests, loaded by import path like a deployment's own."""

from __future__ import annotations

import asyncio

from bridge.tools import tool


@tool
async def flaky_lookup(order_id: str) -> dict[str, str]:
    """A tool whose backend is down."""
    raise RuntimeError("connection refused by orders-db.internal")


@tool(timeout_s=0.3)
async def stuck_lookup(order_id: str) -> dict[str, str]:
    """A tool that never answers in time."""
    await asyncio.sleep(5)
    return {"order_id": order_id}


@tool(timeout_s=5)
async def slow_lookup(order_id: str) -> dict[str, str]:
    """A tool that answers, slowly (the agent should keep the caller company)."""
    await asyncio.sleep(1.5)
    return {"order_id": order_id, "status": "delivered"}


@tool(timeout_s=10)
async def very_slow_lookup(order_id: str) -> dict[str, str]:
    """Slow enough for the caller to take a whole turn while it runs."""
    await asyncio.sleep(4)
    return {"order_id": order_id, "status": "delivered"}
