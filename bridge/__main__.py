"""Command line: ``python -m bridge <command>``.

Every command reports configuration problems as plain lines (never a
traceback) and exits non-zero, so it behaves well in scripts and CI.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from typing import NoReturn

from bridge.config import ConfigError, Settings, http_url, load_settings, startup_problems


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(exc.problems)
    raise AssertionError("unreachable")


def _fail(problems: list[str], code: int = 2) -> NoReturn:
    print("bridge: configuration problems:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    raise SystemExit(code)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the bridge for real calls (uvicorn + the Starlette app)."""
    from bridge.app import build_services, create_app
    from bridge.logs import configure_logging
    from bridge.server import serve

    settings = _settings_or_exit()
    if args.metrics_port is not None:
        settings = settings.with_changes(metrics_port=args.metrics_port)
    problems = startup_problems(settings)
    if problems:
        _fail(problems)
    configure_logging(settings.log_level, settings.log_format)
    # Built here, before uvicorn: a bad DATABASE_URL or AGENT_TOOLS path is then one plain
    # line and exit 2, instead of a message followed by uvicorn's lifespan tracebacks.
    try:
        services = build_services(settings)
    except ConfigError as exc:
        _fail(exc.problems)
    except Exception as exc:  # noqa: BLE001 - StoreError, a tool import error: one line
        _fail(list(getattr(exc, "problems", None) or [str(exc)]))
    app = create_app(services.settings, services, shutdown_grace_s=0.0)
    options: dict[str, object] = {}
    if settings.log_format == "json":
        options["log_config"] = None  # keep our JSON handler; uvicorn's loggers propagate
    if settings.stream_server == "lean":
        from bridge.web.lean_stream import router_protocol

        # /media-stream without ASGI on the same port; every other request goes to
        # uvicorn's HTTP protocol and Starlette (docs/performance.md, "The lean path").
        options["http"] = router_protocol(app)
    logging.getLogger("bridge").info("media streams served by the %s path",
                                     settings.stream_server)
    serve(
        app,
        host=args.host,
        port=args.port,
        grace_s=args.grace,
        ws_max_size=settings.max_message_bytes,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=5,
        ws="websockets-sansio",  # measured cheaper than the legacy protocol and wsproto
        ws_per_message_deflate=False,
        **options,
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A whole call against local simulators: no accounts, no keys."""
    if args.browser:
        from bridge.devtools.sim.browser_demo import run_browser_demo

        try:
            return asyncio.run(run_browser_demo())
        except KeyboardInterrupt:
            print("\nstopped")
            return 0
    if args.backend == "cascade":
        from bridge.devtools.sim.cascade_demo import run_cascade_demo

        return asyncio.run(run_cascade_demo(wav_path=args.wav, verbose=args.verbose))
    from bridge.devtools.sim.demo import run_demo

    return asyncio.run(
        run_demo(
            wav_path=args.wav,
            audio_mode=args.audio,
            dialect=args.dialect,
            verbose=args.verbose,
            drop_model_at_s=args.drop_model_at,
        )
    )


def cmd_calls(args: argparse.Namespace) -> int:
    """List recent calls, or show one call's transcript."""
    from bridge.store.cli import run_parsed

    settings = _settings_or_exit()
    return run_parsed(args, settings.database_url)


def cmd_call(args: argparse.Namespace) -> int:
    """Place an outbound call whose answered leg connects to this bridge."""
    from bridge.twilio.calls import CallControlError, TwilioCalls

    settings = _settings_or_exit()
    if not settings.public_url:
        _fail(["PUBLIC_URL is required: Twilio fetches the call's TwiML from PUBLIC_URL/twiml"])
    assert settings.public_url is not None
    if not args.from_number:
        _fail(["--from (or TWILIO_PHONE_NUMBER) is required: one of your Twilio numbers"])
    try:
        control = TwilioCalls.from_settings(settings, base_url=settings.twilio_api_base_url)
        sid = asyncio.run(
            control.place_call(
                args.to,
                args.from_number,
                http_url(settings.public_url, "/twiml"),
                status_callback=http_url(settings.public_url, "/status"),
            )
        )
    except CallControlError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 1
    print(sid)
    return 0


def cmd_twilio(args: argparse.Namespace) -> int:
    """``twilio configure +1NUMBER``: point the number's voice webhook at this bridge."""
    from bridge.twilio.calls import CallControlError, TwilioCalls

    settings = _settings_or_exit()
    if not settings.public_url:
        _fail(["PUBLIC_URL is required: the number's webhook will be PUBLIC_URL/twiml"])
    assert settings.public_url is not None
    try:
        control = TwilioCalls.from_settings(settings, base_url=settings.twilio_api_base_url)
        configured = asyncio.run(
            control.configure_number(
                args.number,
                http_url(settings.public_url, "/twiml"),
                http_url(settings.public_url, "/status"),
            )
        )
    except CallControlError as exc:
        print(f"bridge: {exc}", file=sys.stderr)
        return 1
    print(f"{configured.phone_number} ({configured.sid}): voice webhook -> {configured.voice_url}")
    print(f"{configured.phone_number}: status callback -> {configured.status_callback}")
    for warning in configured.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from bridge.store.cli import add_arguments as add_calls_arguments

    parser = argparse.ArgumentParser(
        prog="python -m bridge",
        description="Twilio Media Streams <-> OpenAI Realtime phone bridge",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve",
        help="run the bridge for real calls",
        description="Run the bridge for real calls. Settings come from the environment "
        "(README's table); these options cover the listener only.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on")
    serve.add_argument(
        "--port",
        type=int,
        default=os.environ.get("PORT", "8080"),  # a string: argparse checks it like input
        help="public port for Twilio's webhooks and Media Streams ($PORT)",
    )
    serve.add_argument(
        "--grace",
        type=float,
        default=os.environ.get("BRIDGE_DRAIN_GRACE", "30"),
        help="seconds live calls may continue after SIGTERM ($BRIDGE_DRAIN_GRACE)",
    )
    serve.add_argument(
        "--metrics-port",
        type=int,
        default=None,
        help="serve /metrics on this separate port (default: $BRIDGE_METRICS_PORT, else off)",
    )
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="a simulated call end to end, no accounts needed")
    demo.add_argument("--wav", default="demo-call.wav", help="where to write the caller's audio")
    demo.add_argument("--audio", choices=("passthrough", "pcm16"), default="passthrough")
    demo.add_argument("--dialect", choices=("ga", "beta"), default="ga")
    demo.add_argument(
        "--backend",
        choices=("realtime", "cascade"),
        default="realtime",
        help="the model backend: the Realtime simulator, or the STT -> LLM -> TTS stand-ins",
    )
    demo.add_argument("-v", "--verbose", action="store_true")
    demo.add_argument(
        "--drop-model-at",
        type=float,
        metavar="SECONDS",
        help="have the model server drop the session this many seconds in (shows a reconnect)",
    )
    demo.add_argument(
        "--browser",
        action="store_true",
        help="serve the softphone on 127.0.0.1 with the simulated agent and print its URL",
    )
    demo.set_defaults(func=cmd_demo)

    calls = sub.add_parser(
        "calls",
        help="recent calls; 'calls show CA...' for a transcript",
        description="Recorded calls from DATABASE_URL, newest first (costs are estimates).",
    )
    add_calls_arguments(calls)
    calls.set_defaults(func=cmd_calls)

    call = sub.add_parser("call", help="place an outbound call connected to this bridge")
    call.add_argument("to", help="E.164 number to call, e.g. +15551234567")
    call.add_argument("--from", dest="from_number", default=os.environ.get("TWILIO_PHONE_NUMBER"))
    call.set_defaults(func=cmd_call)

    twilio = sub.add_parser("twilio", help="Twilio account helpers")
    twilio_sub = twilio.add_subparsers(dest="twilio_command", required=True)
    configure = twilio_sub.add_parser("configure", help="point a number's webhooks here")
    configure.add_argument("number", help="your Twilio number, E.164")
    configure.set_defaults(func=cmd_twilio)

    from bridge.devtools.bench.cli import add_bench_parser
    from bridge.devtools.tapes.cli import add_replay_parser

    add_replay_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
