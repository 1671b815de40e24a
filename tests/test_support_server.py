"""The tests' server harness (tests/support/server.py) leaves no process behind: a server whose start
failed is killed with its workers, and one a test forgot is killed when its module ends."""

from __future__ import annotations

import pytest

from tests.support.databases import sqlite_url
from tests.support.server import ServerProcess, stop_leftover_servers


def test_a_server_that_does_not_answer_in_time_is_killed(tmp_path):
    srv = ServerProcess(str(tmp_path), sqlite_url(str(tmp_path)))
    with pytest.raises(RuntimeError, match="did not start"):
        srv.start(timeout=0.01)
    assert srv.proc.poll() is not None, "the server that failed to start still runs"


def test_a_server_left_running_is_stopped_by_the_sweep(tmp_path):
    srv = ServerProcess(str(tmp_path), sqlite_url(str(tmp_path))).start()
    workers = srv.worker_pids()
    assert stop_leftover_servers() == 1
    assert srv.proc.poll() is not None
    for pid in workers:
        try:
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().rsplit(")", 1)[1].split()[0] == "Z", f"worker {pid} still runs"
        except FileNotFoundError:
            pass
    assert stop_leftover_servers() == 0
