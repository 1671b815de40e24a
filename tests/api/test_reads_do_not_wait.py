"""The API answers lists, shows and authentication while another process holds the catalog's write
lock (a worker committing a backup, the scheduler): reads never queue behind writers. Before, every
unit of work began with ``BEGIN IMMEDIATE`` on SQLite, so each request waited for the lock (up to the
30 s busy timeout) — the seconds-long tail of the load benchmark (bench/README.md, "API under load")."""

from __future__ import annotations

import sqlite3
import time

import pytest

from tests.support.clients import api, new_tenant


def _sqlite_path(server) -> str:
    if server.backend != "sqlite":
        pytest.skip("PostgreSQL readers never wait for writers (MVCC)")
    return server.catalog_url.split("///", 1)[1]


def test_lists_answer_while_a_writer_holds_the_lock(server):
    client = api(server)
    fresh = api(server, new_tenant(server, f"nowait-{server.backend}"))  # a key never used yet
    client.get("/vaults")
    holder = sqlite3.connect(_sqlite_path(server), timeout=30, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # what a worker's transaction holds while it commits
    try:
        client.timeout = 10
        fresh.timeout = 10
        t0 = time.monotonic()
        for c in (client, fresh):  # a cached key, and one whose first use is recorded
            assert "vaults" in c.get("/vaults")
            assert "backups" in c.get("/backups", limit=5)
            assert "operation_logs" in c.get("/operation-logs", limit=5)
            assert c.get("/iam/whoami")["project_id"]
        assert time.monotonic() - t0 < 8  # the old code waited for the lock: 30 s, then an error
    finally:
        holder.execute("ROLLBACK")
        holder.close()
