#!/usr/bin/env bash
# Regenerate the bundled runtime prompts in bridge/audio/clips/ (raw G.711 mu-law, 8 kHz,
# mono: what Twilio plays, so the bridge sends them without transcoding).
#
# Why generated and not recorded: the text can change in one line here, the result is
# reproducible from Debian packages, and nobody's voice or licence is involved.
# Needs: apt-get install espeak-ng sox   (Debian/Ubuntu)
# Run from the repository root:  bash tooling/make_prompt_clips.sh
# Then commit the .ulaw files (a few KB each) and clips.json.
set -euo pipefail
cd "$(dirname "$0")/.."
out=bridge/audio/clips
mkdir -p "$out"
for tool in espeak-ng sox; do
    command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install espeak-ng sox)" >&2; exit 1; }
done

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

make_clip() {  # name, text
    local name=$1 text=$2
    # -s words per minute, -p pitch; en-us voice of espeak-ng.
    espeak-ng -v en-us -s 155 -p 45 -w "$tmp/$name.wav" "$text"
    # 8 kHz mono mu-law, with gain headroom, 120 ms of silence in front (so the first
    # syllable is not clipped by a jitter buffer) and 200 ms behind, and short fades.
    sox "$tmp/$name.wav" -r 8000 -c 1 -e mu-law -t raw "$out/$name.ulaw" \
        gain -n -3 pad 0.12 0.2 fade t 0.01 0 0.05
    echo "$out/$name.ulaw: $(stat -c %s "$out/$name.ulaw") bytes"
}

one_moment="One moment, please."
apology="Sorry, I'm having trouble connecting. Please hold on, or call back in a few minutes."
make_clip one_moment "$one_moment"
make_clip apology "$apology"

python3 - "$out/clips.json" "$one_moment" "$apology" <<'PY'
import json, sys
path, one_moment, apology = sys.argv[1:]
with open(path, "w", encoding="utf-8") as f:
    json.dump({"one_moment": one_moment, "apology": apology}, f, indent=2)
    f.write("\n")
PY
