"""One real sandbox (index, master, two workers, fixture upstream) shared by the e2e tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from sandbox import Sandbox


@pytest.fixture(scope="session")
def sandbox(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("sandbox")
    sb = Sandbox(root, web_port=0, worker_port=0, index_port=0, poll_interval=1, recheck_since="0.12.0")
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
