#!/bin/bash
cd /work/wt-refbench && . .venv/bin/activate
R=/work/shared/reference/twilio-sample
O=/work/wt-refbench/bench-results
B="--duration 30 --bridge-cpu 0 --gen-cpu 1"
echo "== lean A/B"; date -u
for i in 1 2 3; do
  python -m bridge bench --resampler --runs 7 | grep "^up"
  python -m bridge bench --calls 50 $B --ws websockets-sansio --json $O/ab-asgi-$i.json
  python -m bridge bench --calls 50 $B --ws websockets-sansio --lean-stream --json $O/ab-lean-$i.json
done
echo "== lean profile"; date -u
python -m bridge bench --calls 50 $B --ws websockets-sansio --lean-stream --profile $O/lean-profile.txt --json $O/lean-profile.json
echo "== reference vs lean"; date -u
python -m bridge bench --calls 50 $B --ws websockets-sansio --lean-stream --reference $R --pairs 3 --json $O/pairs50-lean.json
echo "== sweep"; date -u
for n in 10 100 150 200 300; do
  date -u
  python -m bridge bench --calls $n --duration 20 --bridge-cpu 0 --gen-cpu 1 --reference $R --json $O/sweep$n.json
done
echo "== pcm16 A/B"; date -u
for i in 1 2; do
  python -m bridge bench --calls 50 $B --ws websockets-sansio --lean-stream --json $O/ab-lean-pt-$i.json
  python -m bridge bench --calls 50 $B --ws websockets-sansio --lean-stream --audio pcm16 --json $O/ab-lean-pcm-$i.json
done
echo "== long"; date -u
python -m bridge bench --calls 50 --duration 600 --bridge-cpu 0 --gen-cpu 1 --reference $R --json $O/long600.json 2>&1
echo "== end"; date -u
