"""A throwaway PostgreSQL server for the store tests (a pytest fixture module).

Why a real server: the store's behaviour that matters (upserts, transactions, a server
going away mid-call and coming back) cannot be trusted from a fake.  The fixture finds
``initdb``/``pg_ctl`` (on PATH or under ``/usr/lib/postgresql/*/bin``), creates a cluster
in a temporary directory, starts it on a free 127.0.0.1 port with password (SCRAM)
authentication, and removes it at the end of the session.  initdb refuses to run as
root, so as root everything runs as the ``postgres`` OS user via ``runuser``.

If no server can be started the PostgreSQL tests are *skipped* with the reason; set
``BRIDGE_TEST_POSTGRES=require`` (CI does, after ``.ci/postgres.sh``) to make that a
failure instead.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

PG_USER = "bridge"
PG_PASSWORD = "pg-test-Pa55word"  # a throwaway cluster's password; tests check it never leaks
REQUIRE_ENV = "BRIDGE_TEST_POSTGRES"


class PostgresUnavailable(Exception):
    """Why no test server could be started (becomes the skip reason)."""


def find_pg_bin() -> Path | None:
    """The directory holding initdb and pg_ctl: PATH first, then Debian's layout."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(os.path.realpath(on_path)).parent
    candidates = glob.glob("/usr/lib/postgresql/*/bin")

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.name)
        except ValueError:
            return 0.0

    for bin_dir in sorted(candidates, key=version, reverse=True):
        if (Path(bin_dir) / "pg_ctl").exists() and (Path(bin_dir) / "initdb").exists():
            return Path(bin_dir)
    return None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """One temporary cluster; ``stop()``/``start()`` let tests simulate an outage."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.user = PG_USER
        self.password = PG_PASSWORD
        self.run_as: list[str] = []
        owner: pwd.struct_passwd | None = None
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(
                    "running as root and there is no 'postgres' OS user to run initdb as"
                ) from None
            runuser = shutil.which("runuser")
            if runuser is None:
                raise PostgresUnavailable("running as root and 'runuser' is not available")
            self.run_as = [runuser, "-u", "postgres", "--"]
        self.root = Path(tempfile.mkdtemp(prefix="bridge-pg-"))
        if owner is not None:
            os.chown(self.root, owner.pw_uid, owner.pw_gid)
        self.data_dir = self.root / "data"
        self.log_file = self.root / "server.log"
        self.running = False
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        if owner is not None:
            os.chown(pwfile, owner.pw_uid, owner.pw_gid)
        self._run(
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            self.user,
            "--pwfile",
            str(pwfile),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "-E",
            "UTF8",
            "--no-sync",
        )
        pwfile.unlink()

    def _run(self, tool: str, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [*self.run_as, str(self.bin_dir / tool), *args]
        result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        if check and result.returncode != 0:
            tail = ""
            if self.log_file.exists():
                tail = "\n".join(self.log_file.read_text(errors="replace").splitlines()[-5:])
            raise PostgresUnavailable(
                f"{tool} failed ({result.returncode}): {result.stderr.strip()[-500:]} {tail}"
            )
        return result

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.data_dir),
            "-l",
            str(self.log_file),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data_dir), "-m", mode, "-w", "-t", "30", "stop")
        self.running = False

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        secret = self.password if password is None else password
        return f"postgresql://{self.user}:{secret}@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        """A fresh, empty database (one per test keeps tests independent); its URL."""
        name = "t_" + uuid.uuid4().hex[:12]
        env = {**os.environ, "PGPASSWORD": self.password}
        result = subprocess.run(
            [
                str(self.bin_dir / "createdb"),
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                self.user,
                name,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        if result.returncode != 0:
            raise RuntimeError(f"createdb failed: {result.stderr.strip()}")
        return self.url(name)

    def destroy(self) -> None:
        if self.running:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "stop", check=False)
            self.running = False
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    """A running throwaway PostgreSQL server, or a skip saying why there is none."""
    required = os.environ.get(REQUIRE_ENV, "").lower() == "require"
    server: PostgresServer | None = None
    try:
        try:
            import asyncpg  # noqa: F401
        except ImportError:
            raise PostgresUnavailable("asyncpg is not installed (pip install asyncpg)") from None
        bin_dir = find_pg_bin()
        if bin_dir is None:
            raise PostgresUnavailable(
                "no initdb/pg_ctl on PATH or in /usr/lib/postgresql/*/bin "
                "(run .ci/postgres.sh to install them)"
            )
        server = PostgresServer(bin_dir)
        server.start()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        if server is not None:
            server.destroy()
        message = f"PostgreSQL tests need a local server: {exc}"
        if required:
            pytest.fail(f"{message} ({REQUIRE_ENV}=require)", pytrace=False)
        pytest.skip(message)
    try:
        yield server
    finally:
        server.destroy()
