"""Markdown table of ``bench`` JSON results, median over repeats (``NAME.R.json``).

    python bench/summarise.py /tmp/bridge-bench
"""

from __future__ import annotations

import glob
import json
import os
import statistics
import sys
from collections import defaultdict


def main(folder: str) -> None:
    runs: dict[str, list[dict]] = defaultdict(list)
    for path in sorted(glob.glob(os.path.join(folder, "*.json"))):
        name = os.path.basename(path)[: -len(".json")]
        base = name.rsplit(".", 1)[0] if name.rsplit(".", 1)[-1].isdigit() else name
        with open(path, encoding="utf-8") as f:
            runs[base].append(json.load(f))

    def med(rs: list[dict], *keys: str) -> str:
        vals = []
        for r in rs:
            v = r
            for k in keys:
                v = v[k]
            vals.append(v)
        return f"{statistics.median(vals):g}" if None not in vals else "-"

    print("| run | n | calls | audio | server | CPU ms/call-s | bridge % core | RSS KiB/call "
          "| up p50/p99 ms | down p50/p99 ms | start->ready p99 ms | dropped up/down B "
          "| open sockets | gen lag p99 ms | gen % core |")
    print("|" + "---|" * 15)
    for name, rs in runs.items():
        r0 = rs[0]
        o = r0["options"]
        server = "serve (auto)" if not any(o[k] for k in ("ws", "loop", "http", "json_lib")) \
            else f"{o['loop']}/{o['http']}/{o['ws']}" + (f"/{o['json_lib']}" if o["json_lib"]
                                                          else "")
        print(f"| {name} | {len(rs)} | {r0['calls']} | {r0['audio']} | {server} "
              f"| {med(rs, 'cpu_ms_per_call_s')} | {med(rs, 'bridge_cpu_pct_of_core')} "
              f"| {med(rs, 'rss_per_call_kib')} "
              f"| {med(rs, 'upstream_ms', 'p50')}/{med(rs, 'upstream_ms', 'p99')} "
              f"| {med(rs, 'downstream_ms', 'p50')}/{med(rs, 'downstream_ms', 'p99')} "
              f"| {med(rs, 'start_to_model_ready_ms', 'p99')} "
              f"| {med(rs, 'dropped_up_bytes')}/{med(rs, 'dropped_down_bytes')} "
              f"| {med(rs, 'model_sockets_open_1s_after_hangup')} "
              f"| {med(rs, 'gen_loop_lag_ms', 'p99')} | {med(rs, 'gen_cpu_pct_of_core')} |")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/bridge-bench")
