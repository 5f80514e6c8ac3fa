"""A tiny, deterministic tool for the recorded-call tapes (``tests/tapes``)."""

from __future__ import annotations

from typing import Annotated

from bridge.tools import tool

_STOCK = {"blue kettle": 3, "red kettle": 0}


@tool(timeout_s=2)
def check_stock(
    product: Annotated[str, "The product the caller asks about, e.g. blue kettle"],
) -> dict[str, object]:
    """How many of a product are in stock (deterministic, so replays can re-run it)."""
    return {"product": product, "in_stock": _STOCK.get(product.lower(), 0)}
