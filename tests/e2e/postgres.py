"""A throwaway PostgreSQL server (Debian's ``postgresql`` package) for the production tests.

The cluster lives in a fresh temporary directory owned by the ``postgres``
user (``initdb`` refuses root), listens on 127.0.0.1 on a free port and on a
Unix socket in that directory, and is removed by ``stop()``.  Authentication
is Debian's default: the socket with peer authentication (the ``postgres``
superuser, as ``runuser -u postgres -- createuser`` in the README), TCP with a
SCRAM password (the master).  ``env`` (PGHOST, PGPORT) points libpq's tools
(psql, createdb, pg_dump, pg_restore) at this cluster and not the system's.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.e2e.services import free_port

SUPERUSER = "postgres"


def bindir() -> Path:
    """The newest ``/usr/lib/postgresql/N/bin`` (Debian keeps initdb and pg_ctl there, off PATH)."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parent.parent.name))
    if not found:
        raise RuntimeError("PostgreSQL server binaries not found: apt-get install postgresql (make setup does)")
    return found[-1].parent


def as_postgres(cmd: list[str], env: dict[str, str] | None = None, input: str | None = None,
                timeout: float = 120) -> subprocess.CompletedProcess:
    out = subprocess.run(["runuser", "-u", SUPERUSER, "--", *cmd], env=env, input=input, capture_output=True,
                         text=True, timeout=timeout, cwd="/")
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stdout}{out.stderr}")
    return out


class PostgresCluster:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="vllm-cpu-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.bin = bindir()
        shutil.chown(self.root, SUPERUSER, SUPERUSER)

    @property
    def env(self) -> dict[str, str]:
        """libpq's connection defaults for this cluster (socket directory and port)."""
        return {"PGHOST": str(self.root), "PGPORT": str(self.port)}

    def start(self) -> PostgresCluster:
        as_postgres([str(self.bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "-E", "UTF8",
                     "--locale=C.UTF-8", "--auth-local=peer", "--auth-host=scram-sha-256"])
        as_postgres([str(self.bin / "pg_ctl"), "-D", str(self.data), "-l", str(self.root / "server.log"), "-w",
                     "-t", "120", "-o", f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.root}", "start"])
        return self

    def psql(self, sql: str, db: str = "postgres") -> str:
        """Run ``sql`` as the superuser; returns the unaligned, tuples-only output."""
        env = {**os.environ, **self.env}
        return as_postgres(["psql", "-X", "-q", "-At", "-v", "ON_ERROR_STOP=1", "-d", db], env=env,
                           input=sql).stdout

    def stop(self) -> None:
        if (self.data / "postmaster.pid").exists():
            subprocess.run(["runuser", "-u", SUPERUSER, "--", str(self.bin / "pg_ctl"), "-D", str(self.data),
                            "-m", "fast", "-w", "stop"], capture_output=True, timeout=120, cwd="/")
        shutil.rmtree(self.root, ignore_errors=True)
