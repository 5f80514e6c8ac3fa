#!/bin/bash
# RSS after multi-second stalls of the bridge: lean (default) vs asgi, same load.
. /work/venv-lead/bin/activate
cd /tmp/m2
export PYTHONPATH=/work/wt-ab-flush
for server in lean asgi; do
  python -m bridge bench --calls 50 --duration 80 --bridge-cpu 0 --gen-cpu 1 --stream-server $server --json /tmp/m2/stall-$server.json 2>/dev/null | grep "^bench" &
  bench=$!
  sleep 25
  pid=$(pgrep -f "bridge serve --host 127.0.0.1" | head -1)
  for k in 1 2 3; do
    sleep 12; kill -STOP $pid; sleep 5; kill -CONT $pid
  done
  wait $bench
  python3 - "$server" <<'PY'
import json, sys
d = json.load(open(f"/tmp/m2/stall-{sys.argv[1]}.json"))
print(sys.argv[1], "idle", d["rss_idle_kib"], "series", [v for _, v in d["rss_series_kib"]])
PY
done
