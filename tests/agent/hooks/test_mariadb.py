"""MariaDB hooks against a real server: under FLUSH TABLES WITH READ LOCK a live copy restores with
exactly the rows committed before the lock, clean tables and the recorded binlog position; a copy
without it leaves a torn MyISAM table; a blocked lock request, the hold timeout and a killed holder
never leave the lock held."""

from __future__ import annotations

import os
import subprocess
import threading
import time

import pytest

from opencbr.agent.hooks import APP_CONSISTENT, CRASH_CONSISTENT, Quiesce, check, discover
from opencbr.agent.hooks.client import MariadbClient, mariadb_argv

from .holder import Holder
from .servers import Mariadb, log_text

pytestmark = pytest.mark.timeout(120)


def _client(db: Mariadb) -> MariadbClient:
    return MariadbClient(mariadb_argv("mariadb", socket=db.socket, host=None, port=None, user="root",
                                      defaults_file=None), name="test")


class Writer:
    """Commits numbered rows one by one into ``table``; ``committed`` is the last id committed."""

    def __init__(self, db: Mariadb, table: str):
        self.table = table
        self.client = _client(db)
        (row,) = self.client.execute(f"SELECT 'ROW', COALESCE(MAX(id), 0) FROM {table}", 10)
        self.committed = int(row[0])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.client.execute(f"INSERT INTO {self.table} VALUES ({self.committed + 1}, REPEAT('x', 300))", 60)
            self.committed += 1

    def __enter__(self):
        self._thread.start()
        start, deadline = self.committed, time.monotonic() + 10
        while self.committed < start + 50 and time.monotonic() < deadline:
            time.sleep(0.01)
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(20)
        self.client.close()


def _plan(db: Mariadb, **extra):
    return discover({"discover": False, "mysql": [db.target(**extra)]})


def _top(db: Mariadb, table: str) -> tuple[int, int]:
    count, top = db.sql(f"SELECT COUNT(*), COALESCE(MAX(id), 0) FROM {table}")[0]
    return int(count), int(top)


def _check_table(db: Mariadb, table: str) -> list[list[str]]:
    return db.sql(f"CHECK TABLE {table}")


def test_app_consistent_copy_holds_exactly_the_rows_before_the_lock(mariadb):
    with Writer(mariadb, "app.numbered") as innodb, Writer(mariadb, "app.journal") as myisam:
        with Quiesce(_plan(mariadb), timeout=20) as q:
            assert q.achieved == APP_CONSISTENT, q.reason
            at_lock = {t: _top(mariadb, t)[1] for t in ("app.numbered", "app.journal")}
            copy = mariadb.copy_to("app-copy")
            assert {t: _top(mariadb, t)[1] for t in at_lock} == at_lock  # nothing got through the lock
        time.sleep(0.2)
        assert innodb.committed > at_lock["app.numbered"] and myisam.committed > at_lock["app.journal"]
    assert q.achieved == APP_CONSISTENT, q.reason
    details = q.outcomes[0].details
    # the binlog position is the copy's binlog end: nothing was logged under the lock
    assert os.path.getsize(os.path.join(copy.data_dir, details["binlog_file"])) == details["binlog_position"]
    copy.start()
    try:
        for table, top in at_lock.items():
            assert _top(copy, table) == (top, top)
            status = _check_table(copy, table)
            assert [r[2:] for r in status] == [["status", "OK"]], status
    finally:
        copy.stop()
    assert "crashed" not in log_text(copy.log)


def test_a_copy_without_the_lock_leaves_a_torn_myisam_table(mariadb):
    with Writer(mariadb, "app.journal"), Writer(mariadb, "app.numbered"):
        copy = mariadb.copy_to("crash-copy")
    copy.start()
    try:
        status = _check_table(copy, "app.journal")
    finally:
        copy.stop()
    # the MyISAM table was copied open and half-written (InnoDB recovers from its redo log either way)
    assert [r[2:] for r in status] != [["status", "OK"]], status
    assert any("closed the table properly" in r[-1] or "crashed" in r[-1] for r in status), status


def _write_within(db: Mariadb, seconds: float) -> float:
    """Seconds a write into the MyISAM table took (fails if the lock held it longer)."""
    started = time.monotonic()
    out = db.run("INSERT INTO app.journal SELECT COALESCE(MAX(id), 0) + 1, 'probe' FROM app.journal",
                 timeout=seconds)
    assert out.returncode == 0, out.stderr
    return time.monotonic() - started


def test_a_blocked_lock_request_times_out_and_falls_back(mariadb):
    blocker = _client(mariadb)
    blocker.execute("LOCK TABLES app.numbered WRITE", 10)  # FTWRL waits for this table forever
    try:
        started = time.monotonic()
        with Quiesce(_plan(mariadb), timeout=2) as q:
            assert q.achieved == CRASH_CONSISTENT
        took = time.monotonic() - started
    finally:
        blocker.close()
    assert took < 30  # not forever (the table stays locked); slack for a loaded machine
    assert "pre-freeze failed" in q.reason and any(why in q.reason for why in (
        "Lock wait timeout", "no answer", "max_statement_time"))  # whichever of the server's limits fires first, q.reason
    assert _write_within(mariadb, 5) < 2


def test_the_hold_timeout_releases_the_lock(mariadb):
    with Quiesce(_plan(mariadb), timeout=5, hold_timeout=1) as q:
        assert q.achieved == APP_CONSISTENT
        assert _write_within(mariadb, 10) > 0.5  # waited for the watchdog
    assert q.achieved == CRASH_CONSISTENT and "hold timeout" in q.reason, q.reason


def test_a_killed_holder_releases_the_lock(mariadb):
    with Holder({"discover": False, "mysql": [mariadb.target()]}) as holder:
        assert holder.state["achieved"] == APP_CONSISTENT, holder.state
        write = subprocess.Popen(["mariadb", "--no-defaults", f"--socket={mariadb.socket}", "--user=root", "-e",
                                  "INSERT INTO app.journal SELECT COALESCE(MAX(id), 0) + 1, 'after' FROM app.journal"])
        time.sleep(0.5)
        assert write.poll() is None  # held by the lock
        died = holder.kill()
        assert write.wait(10) == 0
        assert time.monotonic() - died < 5


def test_check_tests_the_privileges(mariadb):
    mariadb.sql("DROP USER IF EXISTS plain@localhost; CREATE USER plain@localhost; "
                "DROP USER IF EXISTS reloader@localhost; CREATE USER reloader@localhost; "
                "GRANT RELOAD ON *.* TO reloader@localhost")
    results = {r["name"]: r for r in check(discover({"discover": False, "mysql": [
        mariadb.target(name="root"), mariadb.target(name="plain", user="plain"),
        mariadb.target(name="reloader", user="reloader"), mariadb.target(name="absent", socket="/nonexistent")]}))}
    assert results["root"]["ok"] and results["root"]["privileges"] == {"reload": True, "binlog_monitor": True}
    assert not results["plain"]["ok"] and "lacks RELOAD" in results["plain"]["message"]
    assert results["reloader"]["ok"] and "binary log position will not be recorded" in results["reloader"]["message"]
    assert not results["absent"]["ok"] and "Can't connect" in results["absent"]["message"]
    with Quiesce(discover({"discover": False, "mysql": [mariadb.target(user="reloader")]}), timeout=10) as q:
        pass
    assert q.achieved == APP_CONSISTENT, q.reason
    assert "binary log position unknown" in q.outcomes[0].message
