"""The PostgreSQL doorbell outlives a broken connection: when the database restarts or the network
between a worker machine and the database fails, an idle worker polls for a few seconds and then listens
again, instead of polling for the rest of its life (services/doorbell.py, worker/wakeup.py)."""

from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from opencbr.services import doorbell
from opencbr.worker import wakeup
from tests.support.databases import PG_URL, pg_unavailable_reason


@pytest.fixture()
def pg_catalog():
    """The test server's own database: the listener needs no schema, and notifications stay within a
    database (the catalogs of other tests are databases of their own)."""
    reason = pg_unavailable_reason()
    if reason:
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable ({reason}); PG doorbell test NOT RUN")
    return PG_URL


def ring(url: str) -> None:
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(sa.text(f"NOTIFY {doorbell.CHANNEL}"))
    engine.dispose()


def test_the_listener_listens_again_after_its_connection_broke(pg_catalog, monkeypatch):
    monkeypatch.setattr(wakeup, "PG_RELISTEN_SECONDS", 0.2)
    listener = wakeup.DoorbellListener(pg_catalog)
    try:
        ring(pg_catalog)
        assert listener.wait(5), "the doorbell does not ring at all"
        engine = sa.create_engine(pg_catalog, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:  # the database drops the worker's connection (a restart, a failover)
            c.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": listener._pg.info.backend_pid})
        engine.dispose()
        assert not listener.wait(0.5)  # the break is noticed: the worker polls meanwhile
        time.sleep(0.3)
        assert not listener.wait(0.3)  # ... and listens again
        ring(pg_catalog)
        assert listener.wait(5), "the doorbell stayed off after the connection broke once"
    finally:
        listener.close()
