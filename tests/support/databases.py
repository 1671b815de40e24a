"""Fresh catalogs for tests: a SQLite file, or a new database on the local PostgreSQL server.

A fresh catalog is at the newest schema and holds no rows: it is a copy of one catalog that this test
process migrated once per backend (a file copy on SQLite, ``CREATE DATABASE ... TEMPLATE`` on
PostgreSQL), because running the Alembic chain for every test cost 1-3 s a test. Tests of the migrations
themselves ask for an empty catalog (``migrated=False``)."""

from __future__ import annotations

import atexit
import os
import queue
import secrets
import shutil
import tempfile
import threading

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


def create_pg_database(template: str | None = None, prefix: str = "opencbr_t_") -> str:
    """A new database on the test server (empty, or a copy of the database ``template``); returns its URL."""
    name = prefix + secrets.token_hex(6)
    admin = sa.create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else "")))
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

# backend -> this process's migrated catalog that fresh ones copy: the SQLite file, or the PG database name
_templates: dict[str, str] = {}


def _template(backend: str) -> str:
    if backend not in _templates:
        from opencbr.catalog.db import upgrade

        if backend == "sqlite":
            directory = tempfile.mkdtemp(prefix="opencbr-catalog-template-")
            atexit.register(shutil.rmtree, directory, True)  # (a campaign run outside pytest, too)
            url = sqlite_url(directory)
            upgrade(url)  # closes its connections: the WAL is checkpointed into the file and removed
            path = url.split("///", 1)[1]
            assert not os.path.exists(path + "-wal"), "the template catalog still has a write-ahead log"
            _templates[backend] = path
        else:
            url = create_pg_database(prefix="opencbr_tpl_")
            upgrade(url)
            _templates[backend] = url.rsplit("/", 1)[1]
    return _templates[backend]


def drop_templates() -> None:
    """Remove this process's template catalogs (at the end of the test session)."""
    for backend, where in list(_templates.items()):
        if backend == "sqlite":
            shutil.rmtree(os.path.dirname(where), ignore_errors=True)
        else:
            drop_pg_database(PG_URL.rsplit("/", 1)[0] + "/" + where)
        del _templates[backend]


def make_catalog_url(backend: str, tmp_dir: str, *, migrated: bool = True) -> str:
    """A fresh catalog on ``backend`` ("sqlite" in ``tmp_dir``, or a new PostgreSQL database): at the newest
    schema without rows, or empty (no tables) when not ``migrated``; the test is skipped, loudly, when
    PostgreSQL is unreachable. (On SQLite an existing ``catalog.db`` in ``tmp_dir`` is left as it is.)"""
    if backend == "sqlite":
        url = sqlite_url(tmp_dir)
        if migrated:
            fresh_sqlite_catalog(url)
        return url
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable ({reason}); PG catalog tests NOT RUN")
    return create_pg_database(_template("postgresql") if migrated else None)


def fresh_sqlite_catalog(url: str) -> None:
    """A SQLite catalog at ``url`` that does not exist yet is made a copy of the migrated template (any other
    URL, or an existing file, is left as it is): what a server's first start would otherwise migrate."""
    if not url.startswith("sqlite:///"):
        return
    path = url.split("///", 1)[1]
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        shutil.copyfile(_template("sqlite"), path)


# PostgreSQL databases that tests are done with, dropped by one background thread: DROP DATABASE waits for a
# checkpoint (1-3 s on a loaded machine), which no test needs to wait for.
_to_drop: queue.Queue[str] = queue.Queue()
_dropper: threading.Thread | None = None
_drop_errors: list[str] = []


def _drop_loop() -> None:
    while True:
        url = _to_drop.get()
        try:
            drop_pg_database(url)
        except Exception as e:  # noqa: BLE001 - reported at the end of the session
            _drop_errors.append(f"{url}: {type(e).__name__}: {e}".splitlines()[0])
        finally:
            _to_drop.task_done()


def release_catalog_url(url: str) -> None:
    """The test is done with the catalog at ``url``: a PostgreSQL database is dropped in the background
    (``finish_releases`` waits for those drops)."""
    global _dropper
    if url.startswith("postgresql"):
        if _dropper is None:
            _dropper = threading.Thread(target=_drop_loop, name="drop-test-databases", daemon=True)
            _dropper.start()
        _to_drop.put(url)


def finish_releases() -> list[str]:
    """Wait until every released database is dropped, then drop this process's template catalogs; returns
    the drops that failed."""
    _to_drop.join()
    drop_templates()
    return list(_drop_errors)
