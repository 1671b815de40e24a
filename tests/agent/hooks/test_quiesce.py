"""Quiesce across several applications: one failing pre-freeze releases all the others at once and
says why; post-thaw runs even when the snapshot fails; discovery finds the running servers."""

from __future__ import annotations

import os
import signal
import time

import pytest

from opencbr.agent.hooks import APP_CONSISTENT, CRASH_CONSISTENT, HookPlan, Quiesce, check, discover
from opencbr.agent.hooks.client import MariadbClient, mariadb_argv

from .holder import Holder

pytestmark = pytest.mark.timeout(60)


def _agent_sessions(pg) -> int:
    return pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'opencbr-agent'")[0][0]


def test_one_failing_hook_releases_the_others_at_once(pg, mariadb):
    blocker = MariadbClient(mariadb_argv("mariadb", socket=mariadb.socket, host=None, port=None, user="root",
                                         defaults_file=None))
    blocker.execute("LOCK TABLES app.numbered WRITE", 10)
    try:
        plan = discover({"discover": False, "postgresql": [pg.target()], "mysql": [mariadb.target()]})
        with Quiesce(plan, timeout=2) as q:
            assert q.achieved == CRASH_CONSISTENT
            assert _agent_sessions(pg) == 0  # PostgreSQL left backup mode before the snapshot
    finally:
        blocker.close()
    pg_outcome, my_outcome = q.outcomes
    assert q.reason.startswith(f"{my_outcome.name}: pre-freeze failed"), q.reason
    assert "every application was released, crash-consistent" in q.reason
    assert pg_outcome.ok and pg_outcome.phase == "post-thaw" and "backup_label" in pg_outcome.details
    assert not my_outcome.ok


def test_post_thaw_runs_when_the_snapshot_fails(pg):
    plan = discover({"discover": False, "postgresql": [pg.target()]})
    with pytest.raises(OSError, match="snapshot failed"):
        with Quiesce(plan, timeout=5) as q:
            assert _agent_sessions(pg) == 1
            raise OSError("snapshot failed")
    assert _agent_sessions(pg) == 0
    assert q.outcomes[0].phase == "post-thaw" and q.outcomes[0].ok


def test_nothing_to_quiesce_is_crash_consistent_and_says_so():
    with Quiesce(HookPlan(), timeout=5) as q:
        pass
    assert q.achieved == CRASH_CONSISTENT and "no application to quiesce" in q.reason
    assert "no running PostgreSQL or MariaDB/MySQL server was found" in q.reason
    assert q.outcomes == []


def test_with_discovery_off_the_fallback_and_check_say_so():
    plan = discover({"discover": False})
    with Quiesce(plan, timeout=5) as q:
        pass
    assert "discovery is off (hooks.discover is false)" in q.reason and "none is configured" in q.reason
    assert {"name": "discovery", "kind": "note", "ok": True,
            "message": "discovery is off (hooks.discover is false)"} in check(plan)


def test_discovery_finds_the_running_servers(pg, mariadb):
    plan = discover({"script_dir": "/nonexistent/hooks"})
    clusters = {t.data_dir: t for t in plan.postgresql}
    found = clusters[os.path.realpath(pg.data_dir)]
    assert (found.host, found.port, found.os_user, found.discovered) == (pg.socket_dir, pg.port, "postgres", True)
    servers = {t.socket: t for t in plan.mysql}
    assert servers[mariadb.socket].data_dir == os.path.realpath(mariadb.data_dir)
    assert plan.script_dir == "/nonexistent/hooks"
    # a configured server replaces the discovered one of the same data directory
    plan = discover({"postgresql": [pg.target(name="mine", data_dir=os.path.realpath(pg.data_dir))]})
    assert [t.name for t in plan.postgresql if t.data_dir == os.path.realpath(pg.data_dir)] == ["mine"]
    # and the discovered ones can be quiesced as found (peer authentication as the cluster's owner)
    mine = HookPlan(postgresql=[found], mysql=[servers[mariadb.socket]], script_dir="/nonexistent/hooks")
    results = {r["name"]: r for r in check(mine)}
    assert results[found.name]["ok"], results[found.name]
    assert results[servers[mariadb.socket].name]["ok"], results[servers[mariadb.socket].name]
    assert results["scripts:/nonexistent/hooks"]["message"] == "/nonexistent/hooks does not exist"
    # the agent's check operation may hand over its configuration as it is
    result, note = check({"discover": False, "postgresql": [pg.target(name="configured")]})
    assert result["name"] == "configured" and result["ok"]
    assert note["message"] == "discovery is off (hooks.discover is false)"


def test_a_discovered_cluster_quiesces_as_its_owner(pg):
    (found,) = [t for t in discover({}).postgresql if t.data_dir == os.path.realpath(pg.data_dir)]
    with Quiesce(HookPlan(postgresql=[found]), timeout=10) as q:
        pass
    assert q.achieved == APP_CONSISTENT, q.reason


def test_the_servers_end_the_sessions_of_a_stopped_holder(pg, mariadb):
    """An agent stopped (not killed) keeps its pipes open: the servers' own limits (idle_session_timeout,
    wait_timeout = hold + timeout) end the sessions."""
    config = {"discover": False, "postgresql": [pg.target()], "mysql": [mariadb.target()]}
    with Holder(config, timeout=1, hold=1) as holder:
        assert holder.state["achieved"] == APP_CONSISTENT, holder.state
        os.kill(holder.proc.pid, signal.SIGSTOP)  # its watchdog thread stops with it
        started = time.monotonic()
        out = mariadb.run("INSERT INTO app.journal SELECT COALESCE(MAX(id), 0) + 1, 'stopped' FROM app.journal",
                          timeout=15)
        assert out.returncode == 0, out.stderr
        assert time.monotonic() - started < 5
        while _agent_sessions(pg):
            assert time.monotonic() - started < 5
            time.sleep(0.05)
