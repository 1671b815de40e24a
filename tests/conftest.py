"""Shared fixtures. Catalog tests run on SQLite and on PostgreSQL (``OPENCBR_TEST_PG_URL``); when
PostgreSQL is unreachable those runs are skipped and the summary says so loudly."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.support.databases import (  # noqa: E402
    PG_URL,
    create_pg_database,
    drop_pg_database,
    pg_unavailable_reason,
    sqlite_url,
)
from tests.support.server import ServerProcess  # noqa: E402

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
BACKENDS = ["sqlite", "postgresql"]


def make_catalog_url(backend: str, tmp_dir: str) -> str:
    if backend == "sqlite":
        return sqlite_url(tmp_dir)
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable ({reason}); PG catalog tests NOT RUN")
    return create_pg_database()


def release_catalog_url(url: str) -> None:
    if url.startswith("postgresql"):
        drop_pg_database(url)


@pytest.fixture(params=BACKENDS)
def catalog_url(request, tmp_path):
    """A fresh, empty catalog on each backend."""
    url = make_catalog_url(request.param, str(tmp_path))
    yield url
    release_catalog_url(url)


@pytest.fixture(scope="module", params=BACKENDS)
def server(request, tmp_path_factory):
    """A running server (SQLite or PostgreSQL catalog), shared by a test module."""
    d = str(tmp_path_factory.mktemp(f"srv-{request.param}"))
    url = make_catalog_url(request.param, d)
    srv = ServerProcess(d, url).start()
    srv.backend = request.param
    yield srv
    srv.stop()
    release_catalog_url(url)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    reason = pg_unavailable_reason() if any("postgresql" in i.nodeid for i in terminalreporter.stats.get("skipped", [])) else None
    if reason:
        terminalreporter.write_sep("!", "POSTGRESQL TESTS SKIPPED", red=True, bold=True)
        terminalreporter.write_line(f"PostgreSQL at {PG_URL} is unreachable: {reason}", red=True, bold=True)
        terminalreporter.write_line("The catalog was tested on SQLite only.", red=True, bold=True)
