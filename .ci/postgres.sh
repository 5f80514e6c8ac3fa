#!/bin/sh
# Make PostgreSQL's server binaries (initdb, pg_ctl) available for the store tests.
#
# The tests start their own throwaway cluster on a free 127.0.0.1 port (tests/conftest_pg.py);
# this script only installs Debian's `postgresql` package when the binaries are missing. It
# does not start or configure a server. Run it before pytest, then run pytest with
# BRIDGE_TEST_POSTGRES=require so that a server that cannot start fails CI instead of
# skipping the PostgreSQL half of the suite.
set -eu

find_bin() {
    # $1 = tool name; prints its path (PATH first, then Debian's versioned layout).
    if command -v "$1" >/dev/null 2>&1; then
        command -v "$1"
        return 0
    fi
    for candidate in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -V -r); do
        if [ -x "$candidate/$1" ]; then
            echo "$candidate/$1"
            return 0
        fi
    done
    return 1
}

if find_bin initdb >/dev/null && find_bin pg_ctl >/dev/null; then
    echo "postgres.sh: found $(find_bin pg_ctl) ($("$(find_bin pg_ctl)" --version))"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1; then
    echo "postgres.sh: initdb/pg_ctl are missing and apt-get is not available;" \
        "install the PostgreSQL server binaries another way" >&2
    exit 1
fi

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi

echo "postgres.sh: installing Debian's postgresql package"
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq
$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql

if ! find_bin initdb >/dev/null || ! find_bin pg_ctl >/dev/null; then
    echo "postgres.sh: postgresql installed but initdb/pg_ctl not found" >&2
    exit 1
fi
# initdb refuses to run as root; the tests then run it as this (package-created) user.
if [ "$(id -u)" -eq 0 ] && ! id postgres >/dev/null 2>&1; then
    echo "postgres.sh: no 'postgres' OS user to run initdb as" >&2
    exit 1
fi
echo "postgres.sh: ready: $(find_bin pg_ctl) ($("$(find_bin pg_ctl)" --version))"
