"""Real masters shared by the e2e tests: one per configuration.

``sandbox``: the open sandbox (no users file: anyone on 127.0.0.1 may force).
``prod``: the same with a users file (argon2 hashes, 0600) and one admin, as
production runs it.  Both have two x86_64 workers, a package index and a
fixture upstream, and accept tags on the signed webhook.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest

from sandbox import Sandbox

ADMIN, USER = "alice", "carol"  # carol may log in, but is no admin
PROD_TAGS = ["v0.11.2", "v0.12.0"]


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("sandbox")
    sb = Sandbox(root, web_port=0, worker_port=0, index_port=0, poll_interval=1, recheck_since="0.12.0",
                 max_builds_per_request=10)
    try:
        sb.start()
        yield sb
    finally:
        sb.stop()


@pytest.fixture(scope="session")
def prod(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("prod")
    users = {ADMIN: secrets.token_urlsafe(12), USER: secrets.token_urlsafe(12)}
    sb = Sandbox(root / "sb", tags=PROD_TAGS, web_port=0, worker_port=0, index_port=0, poll_interval=1,
                 quiet=True, users=users, admins=(ADMIN,))
    try:
        sb.start()
        yield sb
    finally:
        sb.stop()


@pytest.fixture(scope="session")
def postgres():
    """One PostgreSQL cluster (Debian's postgresql) in a temporary directory for the whole run."""
    from tests.e2e.postgres import PostgresCluster

    pg = PostgresCluster()
    try:
        yield pg.start()
    finally:
        pg.stop()
