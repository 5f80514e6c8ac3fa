"""``python -m bridge replay`` and ``python -m bridge tape author``.

Exit codes, for CI: 0 every tape replays identically, 1 differences (printed),
2 a tape or scenario could not be read.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from bridge.tapes.format import TapeError


def cmd_replay(args: argparse.Namespace) -> int:
    """Replay tapes offline (or against a running bridge with ``--live``)."""
    tools = [t.strip() for t in (args.tools or "").split(",") if t.strip()] or None
    if args.live:
        return _live(args)
    from bridge.devtools.tapes.replay import replay, update_tape

    worst = 0
    for path in args.tapes:
        try:
            result = replay(path, tools=tools)
        except (OSError, TapeError) as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            worst = 2
            continue
        if args.update:
            if result.ok:
                print(f"{path}: identical, not rewritten")
            else:
                print(result.report(limit=args.limit))
                print(f"{update_tape(result)}: rewritten with the current behaviour")
            continue
        print(result.report(limit=args.limit))
        if not result.ok:
            worst = max(worst, 1)
    return worst


def _live(args: argparse.Namespace) -> int:
    from bridge.devtools.tapes.live import LiveOptions, replay_live

    if len(args.tapes) != 1:
        print("--live plays one tape at a time", file=sys.stderr)
        return 2
    token = os.environ.get(args.auth_token_env) or None
    options = LiveOptions(
        url=args.live,
        model_host=args.model_host,
        model_port=args.model_port,
        auth_token=token,
        wait_s=args.wait,
    )
    try:
        result = asyncio.run(replay_live(args.tapes[0], options))
    except (OSError, TapeError) as exc:
        print(f"{args.tapes[0]}: {exc}", file=sys.stderr)
        return 2
    print(result.report(limit=args.limit))
    return 0 if result.ok else 1


def cmd_author(args: argparse.Namespace) -> int:
    """Record a scenario through the real bridge and simulators into a tape."""
    from bridge.devtools.tapes.author import ScenarioError, author

    output = args.output or f"{args.name}.jsonl.gz"
    try:
        path = asyncio.run(author(args.scenario_file, args.name, output))
    except (OSError, ScenarioError, TapeError) as exc:
        print(f"tape author: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        print(f"tape author: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: {os.path.getsize(path)} bytes")
    return 0


def add_replay_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Register ``replay`` and ``tape`` on the ``python -m bridge`` subcommands."""
    replay = sub.add_parser(
        "replay", help="replay recorded call tapes through the core and diff the outputs",
        description="Replay tapes on a virtual clock and compare what the bridge does now "
        "with what it did when the call was recorded.",
    )
    replay.add_argument("tapes", nargs="+", metavar="TAPE", help=".jsonl or .jsonl.gz tape")
    replay.add_argument("--update", action="store_true",
                        help="rewrite the expected outputs after a deliberate behaviour change")
    replay.add_argument("--tools", metavar="ENTRIES",
                        help="re-run tools instead of using recorded results: comma-separated "
                        "entries as in AGENT_TOOLS (hang_up, package.module:function)")
    replay.add_argument("--limit", type=int, default=30, help="differences to print per tape")
    replay.add_argument("--live", metavar="WS_URL",
                        help="play the Twilio side in real time against a running bridge at "
                        "this Media Streams URL (see docs/tapes.md for the set-up)")
    replay.add_argument("--model-host", default="127.0.0.1",
                        help="--live: where the model stand-in listens (default 127.0.0.1)")
    replay.add_argument("--model-port", type=int, default=8765,
                        help="--live: model stand-in port; point the bridge's "
                        "OPENAI_REALTIME_URL at ws://HOST:PORT/v1/realtime (default 8765)")
    replay.add_argument("--auth-token-env", default="TWILIO_AUTH_TOKEN",
                        help="--live: environment variable holding the bridge's Twilio auth "
                        "token, to sign the upgrade and mint a stream token")
    replay.add_argument("--wait", type=float, default=3.0,
                        help="--live: seconds to wait for the bridge after the tape ends")
    replay.set_defaults(func=cmd_replay)

    tape = sub.add_parser("tape", help="tape tools: author tapes from scenarios")
    tape_sub = tape.add_subparsers(dest="tape_command", required=True)
    author = tape_sub.add_parser(
        "author", help="record a scenario through the real bridge and simulators",
    )
    author.add_argument("scenario_file", help="TOML (or JSON) file of scenarios")
    author.add_argument("name", help="the scenario to record")
    author.add_argument("-o", "--output", help="tape path (default NAME.jsonl.gz)")
    author.set_defaults(func=cmd_author)
