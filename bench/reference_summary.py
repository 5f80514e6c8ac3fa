"""Tables for docs/performance.md from ``bench --reference --json`` files.

    python bench/reference_summary.py FILE.json [FILE.json ...]

Each file holds one or more pairs (this bridge, then the reference, same load, same run).
Prints one row per pair and, per call count, the medians of the pair ratios: the ratio is
what survives this host's hour-to-hour drift, the absolute figures are this host's only.
"""

from __future__ import annotations

import json
import statistics
import sys
from collections import defaultdict
from typing import Any


def _p99(s: dict[str, Any], key: str) -> float | None:
    v = s[key]["p99"]
    return None if v is None else float(v)


def _ok(s: dict[str, Any], limit_ms: float = 20.0) -> bool:
    """The calls-per-core criterion: no failed call and p99 <= limit both ways."""
    up, down = _p99(s, "upstream_ms"), _p99(s, "downstream_ms")
    return (s["calls_failed"] == 0 and up is not None and down is not None
            and up <= limit_ms and down <= limit_ms)


def main(paths: list[str]) -> int:
    by_calls: dict[int, list[dict[str, Any]]] = defaultdict(list)
    print("| calls | window s | host µs/frame | CPU ms/call-s ref / this (ratio) | "
          "p99 up ms ref / this | p99 down ms ref / this | RSS KiB/call ref / this | "
          "model sockets left ref / this |")
    print("|---|---|---|---|---|---|---|---|")
    for path in paths:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        for pair in data["pairs"]:
            this, ref, rat = pair["this"], pair["reference"], pair["ratios"]
            by_calls[this["calls"]].append(pair)
            mb, ma = pair["host_marker_us_per_frame"]
            print(f"| {this['calls']} | {this['window_s']:g} | {mb:g} / {ma:g} | "
                  f"{ref['cpu_ms_per_call_s']} / {this['cpu_ms_per_call_s']} "
                  f"({rat['cpu_ms_per_call_s']}x) | "
                  f"{_p99(ref, 'upstream_ms')} / {_p99(this, 'upstream_ms')} | "
                  f"{_p99(ref, 'downstream_ms')} / {_p99(this, 'downstream_ms')} | "
                  f"{ref['rss_per_call_kib']} / {this['rss_per_call_kib']} | "
                  f"{ref['model_sockets_open_1s_after_hangup']} / "
                  f"{this['model_sockets_open_1s_after_hangup']} |")
    print()
    for calls, pairs in sorted(by_calls.items()):
        cpu = [p["ratios"]["cpu_ms_per_call_s"] for p in pairs]
        print(f"{calls} calls: {len(pairs)} pair(s), CPU ratio median "
              f"{statistics.median(cpu):.2f} (spread {min(cpu):.2f}-{max(cpu):.2f}); "
              f"p99 <= 20 ms both ways: this {sum(_ok(p['this']) for p in pairs)}/{len(pairs)}, "
              f"reference {sum(_ok(p['reference']) for p in pairs)}/{len(pairs)}")
    for side in ("this", "reference"):
        # Most pairs at that count must pass: one stall of the shared host is not a limit.
        passing = [c for c, ps in by_calls.items()
                   if 2 * sum(_ok(p[side]) for p in ps) > len(ps)]
        print(f"{side}: largest call count where most runs had p99 <= 20 ms both ways: "
              f"{max(passing) if passing else 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
