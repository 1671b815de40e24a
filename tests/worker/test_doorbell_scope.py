"""The doorbell across machines and namespaces (services/doorbell.py, worker/wakeup.py): on PostgreSQL
it outlives a broken connection (when the database restarts or the network between a worker machine and
the database fails, an idle worker polls for a few seconds and then listens again, instead of polling for
the rest of its life); on SQLite a ring leaves alone the listeners of other network namespaces."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest
import sqlalchemy as sa

from opencbr.services import doorbell
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
    monkeypatch.setattr(doorbell, "PG_RELISTEN_SECONDS", 0.2)
    listener = doorbell.DoorbellListener(pg_catalog)
    try:
        ring(pg_catalog)
        assert listener.wait(5), "the doorbell does not ring at all"
        engine = sa.create_engine(pg_catalog, isolation_level="AUTOCOMMIT")
        with engine.connect() as c:  # the database drops the worker's connection (a restart, a failover)
            c.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": listener._pg.info.backend_pid})
        engine.dispose()
        # The break is noticed (the worker polls meanwhile) and the listener listens again 0.2 s later; a
        # ring while it was deaf reached nobody, so that wait says "look now".
        assert listener.wait(5)
        assert listener._pg is not None
        assert not listener.wait(0.3)  # listening again: no ring, no wake-up
        ring(pg_catalog)
        assert listener.wait(5), "the doorbell stayed off after the connection broke once"
    finally:
        listener.close()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None, reason="a network namespace needs root")
def test_a_worker_in_another_network_namespace_is_not_forgotten(tmp_path):
    """Containers sharing a SQLite catalog file: a ring cannot reach a listener in another network
    namespace (abstract socket names are per namespace), and must not take it for dead either."""
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    directory = doorbell.doorbell_dir(url)
    elsewhere = subprocess.Popen(
        ["unshare", "--net", sys.executable, "-c",
         "import sys; from opencbr.services.doorbell import DoorbellListener; b = DoorbellListener(sys.argv[1]); "
         "print('listening', flush=True); sys.stdin.read(); b.close()", url],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert elsewhere.stdout.readline().strip() == "listening"
        [theirs] = os.listdir(directory)
        here = doorbell.DoorbellListener(url)
        try:
            doorbell.ring(directory)
            assert here.wait(5), "the listener of this namespace was not rung"
            assert theirs in os.listdir(directory), "a live worker of another namespace was forgotten"
        finally:
            here.close()
    finally:
        elsewhere.communicate("", timeout=30)
    assert os.listdir(directory) == []
