#!/bin/bash
# All issue-15 measurements of this session, in one sequence (see docs/performance.md)
. /work/venv-lead/bin/activate
cd /tmp/m2
REF=/work/shared/reference/twilio-sample
export PYTHONPATH=/work/wt-ab-push
B="python -m bridge bench --bridge-cpu 0 --gen-cpu 1"
marker() { python -m bridge bench --resampler 2>/dev/null | awk '/^up /{print $5}'; }
echo "== A/B pull / push / push+orjson, 50 calls, 20 s"
for i in 1 2 3 4; do
  echo "round $i $(date +%H:%M:%S) marker=$(marker)"
  echo -n "pull: "; PYTHONPATH=/work/wt-ab-pull $B --calls 50 --duration 20 2>/dev/null | grep "^bench"
  echo -n "push: "; PYTHONPATH=/work/wt-ab-push $B --calls 50 --duration 20 2>/dev/null | grep "^bench"
  echo -n "orjson: "; BRIDGE_JSON_CODEC=orjson PYTHONPATH=/work/wt-ab-push $B --calls 50 --duration 20 2>/dev/null | grep "^bench"
done
echo "== reference + floor pairs, 50 calls, 20 s $(date +%H:%M:%S)"
$B --calls 50 --duration 20 --reference $REF --floor --pairs 3 --json /tmp/m2/pairs.json 2>/dev/null | grep "^bench"
echo "== pcm16 / passthrough pairs $(date +%H:%M:%S)"
for i in 1 2; do
  echo "round $i marker=$(marker)"
  echo -n "passthrough: "; $B --calls 50 --duration 20 2>/dev/null | grep "^bench"
  echo -n "pcm16: "; $B --calls 50 --duration 20 --audio pcm16 2>/dev/null | grep "^bench"
done
echo "== scale sweep, 20 s $(date +%H:%M:%S)"
for n in 10 50 100 150 200 300; do
  echo "calls=$n marker=$(marker)"
  $B --calls $n --duration 20 --reference $REF --floor --json /tmp/m2/sweep$n.json 2>/dev/null | grep "^bench"
done
echo "== done $(date +%H:%M:%S)"
