"""Fresh catalogs for tests: a SQLite file, or a new database on the local PostgreSQL server."""

from __future__ import annotations

import os
import secrets

import pytest
import sqlalchemy as sa

PG_URL = os.environ.get("OPENCBR_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
_pg_error: str | None = None
_pg_checked = False


def pg_unavailable_reason() -> str | None:
    """None when PostgreSQL answers; else why not (the suite then skips PG tests and says so loudly)."""
    global _pg_error, _pg_checked
    if not _pg_checked:
        _pg_checked = True
        try:
            eng = sa.create_engine(PG_URL, connect_args={"connect_timeout": 3})
            with eng.connect() as c:
                c.execute(sa.text("select 1"))
            eng.dispose()
        except Exception as e:  # noqa: BLE001 - any failure means "not reachable"
            _pg_error = f"{type(e).__name__}: {e}".splitlines()[0]
    return _pg_error


def create_pg_database() -> str:
    """A new empty database on the test server; returns its URL."""
    name = "opencbr_t_" + secrets.token_hex(6)
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return PG_URL.rsplit("/", 1)[0] + "/" + name


def drop_pg_database(url: str) -> None:
    name = url.rsplit("/", 1)[1]
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


def sqlite_url(directory: str) -> str:
    return f"sqlite:///{os.path.join(directory, 'catalog.db')}"


BACKENDS = ["sqlite", "postgresql"]


def make_catalog_url(backend: str, tmp_dir: str) -> str:
    """A fresh catalog on ``backend`` ("sqlite" in ``tmp_dir``, or a new PostgreSQL database); the test is
    skipped, loudly, when PostgreSQL is unreachable."""
    if backend == "sqlite":
        return sqlite_url(tmp_dir)
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable ({reason}); PG catalog tests NOT RUN")
    return create_pg_database()


def release_catalog_url(url: str) -> None:
    if url.startswith("postgresql"):
        drop_pg_database(url)
