"""The JSON decoder the wire protocols use, chosen by configuration.

Every Media Streams frame and every Realtime event is decoded once, about 125
times a second per call, so the decoder is a measurable share of the bridge's
CPU.  The standard library is the default; ``BRIDGE_JSON_CODEC=orjson`` uses
orjson when it is installed.  The benchmark compares them through this same
setting, never by patching modules.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

JsonLoads = Callable[[str | bytes], Any]
CODECS = ("stdlib", "orjson")


def json_loads(codec: str = "stdlib") -> JsonLoads:
    """The decoder for ``codec``; ImportError names the missing package."""
    if codec == "orjson":
        try:
            import orjson
        except ImportError:
            raise ImportError("BRIDGE_JSON_CODEC=orjson needs the orjson package") from None
        return orjson.loads  # type: ignore[no-any-return]
    if codec != "stdlib":
        raise ValueError(f"unknown JSON codec {codec!r}; choose one of {', '.join(CODECS)}")
    return json.loads
