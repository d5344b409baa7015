"""A throwaway PostgreSQL server for tests: initdb into a temp folder, started on loopback.

``initdb`` and ``pg_ctl`` refuse to run as root, so as root they run as the ``postgres`` user.
In CI (``CI=true``) a missing server is an error, never a skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

__all__ = ["PostgresServer", "ExternalPostgres", "find_pg_bin", "PostgresUnavailable"]


class PostgresUnavailable(RuntimeError):
    pass


def find_pg_bin() -> Path | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if candidates:
        return Path(candidates[0]).parent
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PostgresServer:
    def __init__(self):
        self.bin = find_pg_bin()
        if self.bin is None:
            raise PostgresUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not found: "
                                      "apt-get install postgresql")
        self.root = Path(tempfile.mkdtemp(prefix="labfolio-pg-"))
        self.data = self.root / "data"
        self.port = _free_port()
        self.as_root = os.geteuid() == 0

    def _run(self, *args: str) -> subprocess.CompletedProcess:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if self.as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=120)

    def start(self) -> "PostgresServer":
        if self.as_root:
            shutil.chown(self.root, "postgres", "postgres")
        os.chmod(self.root, 0o755)
        result = self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "-E", "UTF8")
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed: {result.stderr.strip()}")
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200")
        result = self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"),
                           "-w", "-t", "60", "start")
        if result.returncode != 0:
            log = (self.root / "log").read_text() if (self.root / "log").exists() else ""
            raise PostgresUnavailable(f"pg_ctl start failed: {result.stderr.strip()} {log[-2000:]}")
        return self

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        return _create_database(self.url(), self.url)


def _create_database(admin_url: str, url_for) -> str:
    """A fresh, empty database per test, so tests never see each other's runs."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    conninfo = admin_url.replace("postgresql+psycopg://", "postgresql://")
    deadline = time.monotonic() + 30
    while True:
        try:
            with psycopg.connect(conninfo, autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE {name}")
            return url_for(name)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class ExternalPostgres:
    """A server someone else started (CI's), named by LABFOLIO_TEST_POSTGRES_URL."""

    def __init__(self, admin_url: str):
        from urllib.parse import urlsplit

        self.admin_url = admin_url
        # Tests that simulate an outage swap the port, so it must be known for external servers too.
        self.port = urlsplit(admin_url.replace("postgresql+psycopg://", "postgresql://")).port or 5432

    def start(self) -> "ExternalPostgres":
        return self

    def stop(self) -> None:
        pass

    def url(self, database: str = "postgres") -> str:
        return self.admin_url.rsplit("/", 1)[0] + "/" + database

    def create_database(self) -> str:
        return _create_database(self.admin_url, self.url)
