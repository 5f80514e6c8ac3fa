#!/bin/bash
. /work/venv-lead/bin/activate
cd /tmp/m2
B="python -m bridge bench --bridge-cpu 0 --gen-cpu 1 --calls 50 --duration 20"
marker() { python -m bridge bench --resampler 2>/dev/null | awk '/^up /{print $5}'; }
for i in 1 2 3; do
  echo "round $i $(date +%H:%M:%S) marker=$(PYTHONPATH=/work/wt-ab-flush marker)"
  echo -n "noflush: "; PYTHONPATH=/work/wt-ab-push $B 2>/dev/null | grep "^bench"
  echo -n "flush: "; PYTHONPATH=/work/wt-ab-flush $B 2>/dev/null | grep "^bench"
done
echo "== done $(date +%H:%M:%S)"
