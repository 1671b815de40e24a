"""The tests' server harness (tests/support/server.py) leaves no process behind: a server whose start
failed is killed with its workers, and one a test forgot is killed when its module ends; a new SQLite
catalog is a copy of the migrated template, not migrated again for every server."""

from __future__ import annotations

import logging
import time

import pytest

from tests.support.databases import make_catalog_url, sqlite_url
from tests.support.server import ServerProcess, stop_leftover_servers


def test_a_server_that_does_not_answer_in_time_is_killed(tmp_path):
    srv = ServerProcess(str(tmp_path), sqlite_url(str(tmp_path)))
    with pytest.raises(RuntimeError, match="did not start"):
        srv.start(timeout=0.01)
    assert srv.proc.poll() is not None, "the server that failed to start still runs"


def _state(pid: int) -> str:
    """The process's state letter, or "" once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def test_a_server_left_running_is_stopped_by_the_sweep(tmp_path):
    srv = ServerProcess(str(tmp_path), sqlite_url(str(tmp_path))).start()
    workers = srv.worker_pids()
    assert workers
    assert stop_leftover_servers() == 1
    assert srv.proc.poll() is not None
    # a killed process still runs while the kernel tears it down (one busy at its start takes a moment)
    deadline = time.monotonic() + 10
    while any(_state(pid) not in ("Z", "") for pid in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_state(pid) in ("Z", "") for pid in workers), "a worker still runs"
    assert stop_leftover_servers() == 0


def test_a_server_on_a_new_sqlite_catalog_runs_no_migration(tmp_path, caplog):
    make_catalog_url("sqlite", str(tmp_path / "warm-up"))  # this process's template exists
    caplog.set_level(logging.INFO, logger="alembic.runtime.migration")
    srv = ServerProcess(str(tmp_path / "srv"), sqlite_url(str(tmp_path / "srv")))
    assert srv.admin.ak  # bootstrapped on the copied catalog
    assert not [r for r in caplog.records if "Running upgrade" in r.getMessage()], caplog.text
