#!/bin/bash
cd /work/wt-refbench && . .venv/bin/activate
R=/work/shared/reference/twilio-sample
O=/work/wt-refbench/bench-results
date -u
python -m bridge bench --calls 50 --duration 30 --bridge-cpu 0 --gen-cpu 1 --reference $R --pairs 3 --json $O/pairs50.json
for n in 10 75 100 150 200 300; do
  date -u
  python -m bridge bench --calls $n --duration 20 --bridge-cpu 0 --gen-cpu 1 --reference $R --json $O/sweep$n.json
done
date -u
