#!/bin/sh
# Install headless Chromium and its driver from Debian's packages for the browser tests
# (tests/test_softphone_e2e.py). Playwright's Python package drives /usr/bin/chromium
# through the driver inside its wheel; no browser build is downloaded.
set -eu
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
    echo "chromium.sh: found $(/usr/bin/chromium --version 2>/dev/null)"
    exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-dejavu-core >/dev/null
echo "chromium.sh: installed $(/usr/bin/chromium --version 2>/dev/null)"
