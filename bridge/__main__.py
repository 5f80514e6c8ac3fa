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

from bridge.config import ConfigError, Settings, http_url, load_settings, startup_problems


def _settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ConfigError as exc:
        _fail(exc.problems)
    raise AssertionError("unreachable")


def _fail(problems: list[str], code: int = 2) -> None:
    print("bridge: configuration problems:", file=sys.stderr)
    for problem in problems:
        print(f"  - {problem}", file=sys.stderr)
    raise SystemExit(code)


def _logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
    )


def cmd_serve(args: argparse.Namespace) -> int:
    """Run the bridge for real calls (uvicorn + the Starlette app)."""
    from bridge.app import create_app
    from bridge.server import serve

    settings = _settings_or_exit()
    problems = startup_problems(settings)
    if problems:
        _fail(problems)
    _logging(settings.log_level)
    app = create_app(settings)
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
    )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """A whole call against local simulators: no accounts, no keys."""
    from bridge.sim.demo import run_demo

    return asyncio.run(
        run_demo(
            wav_path=args.wav, audio_mode=args.audio, dialect=args.dialect, verbose=args.verbose
        )
    )


def cmd_calls(args: argparse.Namespace) -> int:
    """List recent calls, or show one call's transcript."""
    from bridge.store.cli import main as calls_main

    settings = _settings_or_exit()
    argv = list(args.rest)
    return calls_main(argv, settings.database_url)


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
    parser = argparse.ArgumentParser(
        prog="python -m bridge",
        description="Twilio Media Streams <-> OpenAI Realtime phone bridge",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the bridge for real calls")
    serve.add_argument("--host", default="0.0.0.0")
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    serve.add_argument(
        "--grace",
        type=float,
        default=30.0,
        help="seconds live calls may continue after SIGTERM (default 30)",
    )
    serve.set_defaults(func=cmd_serve)

    demo = sub.add_parser("demo", help="a simulated call end to end, no accounts needed")
    demo.add_argument("--wav", default="demo-call.wav", help="where to write the caller's audio")
    demo.add_argument("--audio", choices=("passthrough", "pcm16"), default="passthrough")
    demo.add_argument("--dialect", choices=("ga", "beta"), default="ga")
    demo.add_argument("-v", "--verbose", action="store_true")
    demo.set_defaults(func=cmd_demo)

    calls = sub.add_parser("calls", help="recent calls; 'calls show CA...' for a transcript")
    calls.add_argument("rest", nargs=argparse.REMAINDER)
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

    from bridge.bench.cli import add_bench_parser
    from bridge.tapes.cli import add_replay_parser

    add_replay_parser(sub)
    add_bench_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
