"""What the bridge knew when it truncated, read from the call's tape.

A truncate's heard milliseconds come from the last mark echo the bridge had received
when the caller barged in.  How far the caller played on before the clear reached it
depends on the host's round trip; which echo the bridge had does not, and the tape
records the order of what it received and sent.  Whole-call tests check the truncate
against that echo exactly instead of against a timing window.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any


def mark_before_truncate(records: Iterable[dict[str, Any]], item_id: str) -> str:
    """The name of the last mark echo on the tape before the truncate of ``item_id``."""
    last: str | None = None
    for record in records:
        if record.get("dir") == "in" and record.get("kind") == "mark":
            last = record["msg"]["mark"]["name"]
        elif (record.get("dir") == "out" and record.get("kind") == "conversation.item.truncate"
              and record["msg"].get("item_id") == item_id):
            assert last is not None, "truncate before any mark echo"
            return last
    raise AssertionError(f"no truncate of {item_id} on the tape")
