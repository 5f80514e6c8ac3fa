"""``python -m bridge bench``: the load benchmark (see docs/performance.md)."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any


def add_bench_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    bench = sub.add_parser(
        "bench",
        help="load benchmark: N simulated calls through a separate bridge process",
        description="Start the bridge as its own process, place N signed calls from "
        "simulated Twilio callers against the Realtime simulator, and print one summary "
        "line (and optionally JSON). With --resampler, measure the pcm16 resamplers "
        "instead (cost per 20 ms frame, delay, alias rejection). See docs/performance.md.",
    )
    bench.add_argument("--resampler", action="store_true",
                       help="run the resampler micro-benchmark instead of the load benchmark")
    bench.add_argument("--frames", type=int, default=1000,
                       help="--resampler: frames per timed pass (default 1000)")
    bench.add_argument("--runs", type=int, default=7,
                       help="--resampler: timed passes, median reported (default 7)")
    bench.add_argument("--calls", type=int, default=50, help="concurrent calls (default 50)")
    bench.add_argument("--duration", type=float, default=30.0,
                       help="seconds of steady state measured after the ramp (default 30)")
    bench.add_argument("--audio", choices=("passthrough", "pcm16"), default="passthrough")
    bench.add_argument("--json", dest="json_path", default=None,
                       help="also write the full results as JSON to this file")
    bench.add_argument("--bridge-cpu", type=int, default=None,
                       help="pin the bridge process to this CPU (e.g. 0)")
    bench.add_argument("--gen-cpu", type=int, default=None,
                       help="pin the load generator (callers + simulator) to this CPU")
    bench.add_argument("--ramp", type=float, default=None,
                       help="seconds over which calls are placed (default max(2, N/150))")
    bench.add_argument("--barge-every", type=int, default=5,
                       help="every n-th call barges in once (0 = never; default 5)")
    bench.add_argument("--tickers", type=int, default=20,
                       help="20 ms caller clocks with random phases (1 = all frames in the "
                       "same instant, the worst case; default 20)")
    bench.add_argument("--ws", choices=("auto", "websockets", "websockets-sansio", "wsproto"),
                       default=None,
                       help="serve via bridge.devtools.bench.server with this ws impl")
    bench.add_argument("--loop", choices=("auto", "asyncio", "uvloop"), default=None,
                       help="serve via bridge.devtools.bench.server with this event loop")
    bench.add_argument("--http", choices=("auto", "h11", "httptools"), default=None,
                       help="serve via bridge.devtools.bench.server with this HTTP parser")
    bench.add_argument("--json-lib", choices=("stdlib", "orjson"), default=None,
                       help="serve via bridge.devtools.bench.server with this JSON codec")
    bench.add_argument("--lean-stream", action="store_true",
                       help="serve via bridge.devtools.bench.server with /media-stream on "
                       "the lean, ASGI-free path (bridge.web.lean_stream)")
    bench.add_argument("--stream-server", choices=("lean", "asgi"), default=None,
                       help="who serves /media-stream in `serve` (BRIDGE_STREAM_SERVER; "
                       "default: serve's own default, lean)")
    bench.add_argument("--log-level", default="INFO", help="the bridge's LOG_LEVEL (INFO)")
    bench.add_argument("--profile", default=None, metavar="FILE",
                       help="record the steady-state window with py-spy into FILE")
    bench.add_argument("--profile-format", default="raw",
                       choices=("raw", "flamegraph", "speedscope"))
    bench.add_argument("--no-warmup", action="store_true",
                       help="skip the warm-up call before the idle RSS reading")
    bench.add_argument("--reference", default=None, metavar="DIR",
                       help="after this bridge, run the same load against the public reference "
                       "sample in DIR (its main.py, requirements.txt, run_reference.py) and "
                       "print both lines and the ratios reference/this")
    bench.add_argument("--reference-python", default=None, metavar="PATH",
                       help="--reference: interpreter with the sample's requirements installed "
                       "(default: a venv built once from DIR/requirements.txt with pip and "
                       "cached under ~/.cache/twilio-realtime-bridge/)")
    bench.add_argument("--reference-only", action="store_true",
                       help="--reference: run only the reference side (e.g. a long memory "
                       "run beside this bridge's own, each bridge pinned to its own core)")
    bench.add_argument("--floor", action="store_true",
                       help="measure the floor: a forwarder that only moves the same "
                       "messages (no framing, JSON or call logic); with --reference, a "
                       "third run in each pair")
    bench.add_argument("--pairs", type=int, default=1,
                       help="--reference: back-to-back pairs to run; with more than one the "
                       "medians are printed last (default 1)")
    bench.set_defaults(func=cmd_bench)


def cmd_bench(args: argparse.Namespace) -> int:
    if args.resampler:
        from bridge.devtools.bench.resampler import run

        return run(args)
    from bridge.devtools.bench.load import BenchOptions, run_bench, summary_line, to_json

    if args.calls < 1 or args.duration <= 0:
        print("bench: --calls must be >= 1 and --duration > 0", file=sys.stderr)
        return 2
    opts = BenchOptions(
        calls=args.calls, duration=args.duration, audio=args.audio, ramp=args.ramp,
        bridge_cpu=args.bridge_cpu, gen_cpu=args.gen_cpu, ws=args.ws, loop=args.loop,
        http=args.http, json_lib=args.json_lib, lean_stream=args.lean_stream,
        stream_server=args.stream_server,
        barge_every=args.barge_every,
        log_level=args.log_level, profile=args.profile, profile_format=args.profile_format,
        warmup=not args.no_warmup, tickers=args.tickers,
    )
    if args.reference is not None:
        return _cmd_reference(args, opts)
    if args.floor:
        from bridge.devtools.bench.floor import floor_bench

        print(floor_bench(args.calls, args.duration, args.bridge_cpu, args.gen_cpu).line(),
              flush=True)
        return 0
    summary = run_bench(opts)
    print(summary_line(summary), flush=True)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            f.write(to_json(summary) + "\n")
    for note in summary.get("notes", []):
        print(f"bench: note: {note}", file=sys.stderr)
    ok = summary["calls_failed"] == 0 and summary["bridge_exit_code"] in (0, None, -signal.SIGTERM)
    return 0 if ok else 1


def _cmd_reference(args: argparse.Namespace, opts: Any) -> int:
    """Pairs of (this bridge, reference) runs; see bridge.devtools.bench.reference."""
    import json

    from bridge.devtools.bench.load import run_bench
    from bridge.devtools.bench.reference import (
        ReferenceEnvError,
        median_line,
        median_pair,
        pair_lines,
        reference_options,
        reference_python,
        run_pair,
        side_line,
    )

    if args.pairs < 1:
        print("bench: --pairs must be >= 1", file=sys.stderr)
        return 2
    try:
        python = reference_python(args.reference, args.reference_python)
    except ReferenceEnvError as exc:
        print(f"bench: reference unavailable: {exc}", file=sys.stderr)
        return 3
    if args.reference_only:
        ref = run_bench(reference_options(opts, args.reference, python))
        print(side_line(ref, "reference"), flush=True)
        if args.json_path:
            with open(args.json_path, "w", encoding="utf-8") as f:
                f.write(json.dumps(ref, indent=2, default=str) + "\n")
        return 0 if ref["calls_failed"] == 0 else 1
    pairs = []
    ok = True
    for i in range(args.pairs):
        pair = run_pair(opts, args.reference, python, floor=args.floor)
        pairs.append(pair)
        if args.pairs > 1:
            print(f"bench: pair {i + 1}/{args.pairs}", flush=True)
        for line in pair_lines(pair):
            print(line, flush=True)
        this, ref = pair["this"], pair["reference"]
        ok = ok and this["calls_failed"] == 0 and this["bridge_exit_code"] in (
            0, None, -signal.SIGTERM)
        if ref["calls_failed"]:
            print(f"bench: note: the reference failed {ref['calls_failed']} calls",
                  file=sys.stderr)
        for note in this.get("notes", []) + ref.get("notes", []):
            print(f"bench: note: {note}", file=sys.stderr)
    out: dict[str, Any] = {"pairs": pairs}
    if args.pairs > 1:
        med = median_pair(pairs)
        out["median"] = med
        print(median_line(med, args.pairs), flush=True)
    if args.json_path:
        with open(args.json_path, "w", encoding="utf-8") as f:
            f.write(json.dumps(out, indent=2, default=str) + "\n")
    return 0 if ok else 1
