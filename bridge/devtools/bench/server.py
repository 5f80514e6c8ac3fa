"""Serve the bridge with chosen uvicorn settings, for benchmark comparisons only.

``python -m bridge serve`` lets uvicorn pick its event loop, HTTP parser and
WebSocket implementation ("auto": uvloop and httptools when installed, the
legacy ``websockets`` protocol).  To compare those choices on equal terms the
benchmark starts the same app through this launcher with every choice spelled
out::

    python -m bridge.devtools.bench.server --port 8080 --ws websockets-sansio --loop uvloop

``--json orjson`` sets ``BRIDGE_JSON_CODEC=orjson`` for this run: the wire
protocols then decode frames with orjson (``bridge.jsoncodec``).  Configuration
comes from the environment exactly as for ``serve``.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

WS_CHOICES = ("auto", "websockets", "websockets-sansio", "wsproto")
LOOP_CHOICES = ("auto", "asyncio", "uvloop")
HTTP_CHOICES = ("auto", "h11", "httptools")
JSON_CHOICES = ("stdlib", "orjson")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bridge.devtools.bench.server", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--ws", choices=WS_CHOICES, default="auto")
    p.add_argument("--loop", choices=LOOP_CHOICES, default="auto")
    p.add_argument("--http", choices=HTTP_CHOICES, default="auto")
    p.add_argument("--json", dest="json_lib", choices=JSON_CHOICES, default="stdlib")
    p.add_argument("--log-level", default=None, help="override LOG_LEVEL for this run")
    return p


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from bridge.app import create_app
    from bridge.config import ConfigError, load_settings, startup_problems

    args = build_parser().parse_args(argv)
    if args.json_lib == "orjson":
        os.environ["BRIDGE_JSON_CODEC"] = "orjson"
    try:
        settings = load_settings()
    except ConfigError as exc:
        print("\n".join(exc.problems), file=sys.stderr)
        return 2
    problems = startup_problems(settings)
    if problems:
        print("\n".join(problems), file=sys.stderr)
        return 2
    level = (args.log_level or settings.log_level).upper()
    logging.basicConfig(level=getattr(logging, level, logging.INFO),
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    app = create_app(settings, shutdown_grace_s=0.0)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        ws=args.ws,
        loop=args.loop,
        http=args.http,
        ws_max_size=settings.max_message_bytes,
        ws_per_message_deflate=False,
        log_level=level.lower(),
        timeout_graceful_shutdown=5,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
