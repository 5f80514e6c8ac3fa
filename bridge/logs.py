"""Log set-up: the classic text format, or one JSON object per line carrying the call's ids.

Why JSON: a fleet's logs end up in one search index, where a call is found by its
``call_sid`` and ``stream_sid``, not by grepping free text.  The ids travel in a
:mod:`contextvars` holder created per stream: the relay's tasks (model reader, tools) are
spawned from the stream's task and copy its context, so their lines carry the ids too,
without the call core knowing about logging.
"""

from __future__ import annotations

import contextvars
import json
import logging
import sys
from datetime import UTC, datetime

__all__ = ["CallIdFilter", "JsonFormatter", "bind_call", "call_log_context", "configure_logging"]

_CALL: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar(
    "bridge_call_ids", default=None
)

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def call_log_context() -> dict[str, str]:
    """Give the current task (and tasks it spawns later) a fresh holder for call ids."""
    holder: dict[str, str] = {}
    _CALL.set(holder)
    return holder


def bind_call(call_sid: str | None, stream_sid: str | None = None) -> None:
    """Record the call's ids in the current holder (one is created if there is none)."""
    holder = _CALL.get()
    if holder is None:
        holder = call_log_context()
    if call_sid:
        holder["call_sid"] = call_sid
    if stream_sid:
        holder["stream_sid"] = stream_sid


class CallIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        holder = _CALL.get()
        record.call_sid = holder.get("call_sid") if holder else None
        record.stream_sid = holder.get("stream_sid") if holder else None
        return True


class JsonFormatter(logging.Formatter):
    """``{"ts", "level", "logger", "message", "call_sid", "stream_sid"[, "exc"]}``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            "call_sid": getattr(record, "call_sid", None),
            "stream_sid": getattr(record, "stream_sid", None),
        }
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def configure_logging(level: str, fmt: str = "text") -> None:
    """Root logging for ``serve``: ``fmt`` is ``text`` or ``json`` (``LOG_FORMAT``)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(CallIdFilter())
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    # uvicorn's own loggers propagate to root in JSON mode, so every line is one format.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if fmt == "json":
            logger.handlers.clear()
            logger.propagate = True
