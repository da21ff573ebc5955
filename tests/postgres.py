"""A throwaway PostgreSQL cluster for the tests: Debian's binaries, never a mock.

``Cluster.start()`` runs ``initdb`` and ``pg_ctl`` (as the ``postgres`` user when the tests
run as root: the server refuses to run as root) in a new temporary directory, listening
on a free 127.0.0.1 port and a socket in that directory. The superuser connects over the
socket without a password; the tests' role ``agentlog`` has a password and connects over
TCP, so that a wrong password is refused for real. ``database()`` makes a fresh database;
``stop()`` stops the server and removes the directory.
"""

from __future__ import annotations

import glob
import os
import secrets
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg

ROLE = "agentlog"


class ClusterUnavailable(Exception):
    """No PostgreSQL server binaries on this machine (the reason is the message)."""


def find_bindir() -> Path:
    """The directory of ``initdb`` and ``pg_ctl``: ``pg_config --bindir``, else Debian's newest."""
    candidates = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            candidates.append(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True,
                                             timeout=10, check=True).stdout.strip())
        except (OSError, subprocess.SubprocessError):
            pass
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name),
                         reverse=True)
    for directory in candidates:
        if (Path(directory) / "initdb").is_file() and (Path(directory) / "pg_ctl").is_file():
            return Path(directory)
    raise ClusterUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: install Debian's postgresql")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Cluster:
    def __init__(self) -> None:
        self.bindir = find_bindir()
        self.password = "pw-" + secrets.token_hex(12)  # asserted absent from every output
        self.port = 0
        self.dir = Path(tempfile.mkdtemp(prefix="agentlog-pg-"))
        self._as_postgres = os.geteuid() == 0
        self._count = 0

    def _run(self, *argv: str, timeout: float = 60) -> None:
        prefix = ["runuser", "-u", "postgres", "--"] if self._as_postgres else []
        done = subprocess.run([*prefix, *argv], capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stdout}{done.stderr}")

    def start(self) -> "Cluster":
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        data, pwfile = self.dir / "data", self.dir / "pw"
        pwfile.write_text(self.password + "\n")
        if self._as_postgres:
            shutil.chown(pwfile, "postgres", "postgres")
        self._run(str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "--no-locale", "-E", "UTF8",
                  "--auth-local=trust", "--auth-host=scram-sha-256", f"--pwfile={pwfile}", "--no-sync")
        pwfile.unlink()
        # Durability is not under test here: fsync off makes a database per test cheap.
        settings = ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off",
                    f"-c unix_socket_directories={self.dir}", "-c listen_addresses=127.0.0.1",
                    "-c max_connections=200"]
        for attempt in range(3):  # the port was free a moment ago; another process may take it
            self.port = free_port()
            try:
                self._run(str(self.bindir / "pg_ctl"), "-D", str(data), "-l", str(self.dir / "server.log"),
                          "-w", "-t", "60", "-o", " ".join([*settings, f"-p {self.port}"]), "start", timeout=90)
                break
            except RuntimeError:
                if attempt == 2:
                    raise
        with self.admin() as db:
            db.execute(f"CREATE ROLE {ROLE} LOGIN CREATEDB PASSWORD '{self.password}'")
        return self

    def admin(self) -> psycopg.Connection:
        """The superuser over the socket (trusted), in autocommit mode."""
        return psycopg.connect(host=str(self.dir), port=self.port, user="postgres", dbname="postgres",
                               autocommit=True)

    def url(self, database: str, *, password: str | None = None, port: int | None = None) -> str:
        return (f"postgresql://{ROLE}:{self.password if password is None else password}"
                f"@127.0.0.1:{self.port if port is None else port}/{database}")

    def database(self) -> str:
        """A new, empty database owned by the tests' role; its name."""
        self._count += 1
        name = f"t{self._count}_{secrets.token_hex(3)}"
        with self.admin() as db:
            db.execute(f"CREATE DATABASE {name} OWNER {ROLE} TEMPLATE template0")
        return name

    def drop(self, name: str) -> None:
        with self.admin() as db:
            db.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        try:
            if (self.dir / "data" / "postmaster.pid").exists():
                self._run(str(self.bindir / "pg_ctl"), "-D", str(self.dir / "data"), "-m", "immediate", "-w",
                          "stop")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)


def running_cluster() -> Iterator[Cluster]:
    """A started throwaway cluster, stopped and removed after use (a fixture's body). Skipped
    with the reason when the server binaries are missing; a failure instead under
    AGENTLOG_REQUIRE_POSTGRES=1, as CI runs."""
    import pytest

    try:
        cluster = Cluster()
    except ClusterUnavailable as exc:
        if os.environ.get("AGENTLOG_REQUIRE_POSTGRES") == "1":
            pytest.fail(f"{exc} (AGENTLOG_REQUIRE_POSTGRES=1)")
        pytest.skip(str(exc))
    try:
        yield cluster.start()
    finally:
        cluster.stop()
