"""Example tools used by the tests: loaded by import path, as a deployment would."""

from __future__ import annotations

import asyncio
import time
from typing import Annotated

from bridge.tools import ToolContext, ToolError, tool

ORDERS = {"A100": "shipped", "A200": "processing"}


@tool(timeout_s=5)
async def lookup_order(
    order_id: Annotated[str, "The order number the caller reads out, e.g. A100"],
) -> dict[str, str]:
    """Look up the status of an order by its number."""
    await asyncio.sleep(0)  # a real tool would await its database or HTTP API here
    if order_id not in ORDERS:
        raise ToolError(f"No order with number {order_id} exists.")
    return {"order_id": order_id, "status": ORDERS[order_id]}


@tool
def caller_number(context: ToolContext) -> dict[str, str | None]:
    """Tell the agent which number the caller is calling from."""
    return {"from": context.from_number, "agent": context.agent_name}


def opening_hours(day: str = "today") -> str:
    """Opening hours of the shop (a plain function: wrapped when loaded by path)."""
    return f"{day}: 9:00-17:00"


def slow_lookup(seconds: float) -> str:
    """Sleeps in a worker thread; for the timeout test."""
    time.sleep(seconds)
    return "done"


TOOLS = [lookup_order, opening_hours]
NOT_A_TOOL = 42
