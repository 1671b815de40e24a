"""``cbr policy`` as a user runs it: separate processes against a real server, --json output, errors and
exit codes; local execution times converted to the API's UTC patterns."""

from __future__ import annotations

import pytest

from opencbr.cli.client import ClientError
from opencbr.cli.policies import local_patterns
from tests.support.clients import cli


def flat(text: str) -> str:
    """Rich wraps long messages to the terminal width."""
    return " ".join(text.split())


def ok(r):
    assert r.code == 0, f"exit {r.code}\nstdout: {r.out}\nstderr: {r.err}"
    return r


def test_local_times_become_utc_patterns():
    # 02:00 and 10:00 on Monday and Tuesday in UTC+08:00 = 18:00 on Sunday and Monday, 02:00 Monday and Tuesday
    assert local_patterns(["02:00", "10:00"], "MO,TU", None, "UTC+08:00") == [
        "FREQ=WEEKLY;BYDAY=MO,SU;BYHOUR=18;BYMINUTE=00", "FREQ=WEEKLY;BYDAY=MO,TU;BYHOUR=2;BYMINUTE=00"]
    assert local_patterns(["23:30"], None, 1, "UTC-05:00") == ["FREQ=DAILY;INTERVAL=1;BYHOUR=4;BYMINUTE=30"]
    assert local_patterns(["01:00", "13:00"], "SU", None, None) == ["FREQ=WEEKLY;BYDAY=SU;BYHOUR=1,13;BYMINUTE=00"]
    assert local_patterns(["00:30"], "MO", None, "UTC+05:30") == ["FREQ=WEEKLY;BYDAY=SU;BYHOUR=19;BYMINUTE=00"]
    for args in ((["2:00"], None, None, None), (["25:00"], "MO", None, None), (["02:00"], "XX", None, None),
                 (["02:00"], "MO", None, "CET")):
        with pytest.raises(ClientError):
            local_patterns(*args)


def test_policy_commands(server):
    sfx = server.backend
    vault = ok(cli(server, "vault", "create", "--name", f"polv-{sfx}", "--type", "disk", "--size", "10",
                   "--json")).json()
    pol = ok(cli(server, "policy", "create", "--name", f"daily-{sfx}", "--pattern",
                 "FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=0", "--keep", "7", "--json")).json()
    assert pol["operation_definition"] == {"max_backups": 7}
    assert pol["trigger"]["properties"]["pattern"] == ["FREQ=DAILY;INTERVAL=1;BYHOUR=2;BYMINUTE=00"]
    assert pol["enabled"] is True and pol["operation_type"] == "backup"

    r = cli(server, "policy", "create", "--name", f"local-{sfx}", "--at", "02:00", "--weekdays", "MO",
            "--timezone", "UTC+08:00", "--months", "3", "--daily", "7", "--json")
    assert r.code == 1 and "long-term" in flat(r.err)  # GFS goes with --keep
    local = ok(cli(server, "policy", "create", "--name", f"local-{sfx}", "--at", "02:00", "--weekdays", "MO,TU",
                   "--timezone", "UTC+08:00", "--keep", "5", "--daily", "7", "--json")).json()
    assert local["trigger"]["properties"]["pattern"] == ["FREQ=WEEKLY;BYDAY=MO,SU;BYHOUR=18;BYMINUTE=00"]
    assert local["operation_definition"]["timezone"] == "UTC+08:00"
    assert local["operation_definition"]["day_backups"] == 7

    listed = ok(cli(server, "policy", "list", "--type", "backup", "--json")).json()
    assert {pol["id"], local["id"]} <= {p["id"] for p in listed}
    human = ok(cli(server, "policy", "list"))
    assert f"daily-{sfx}" in human.out and "keep 7" in human.out
    assert ok(cli(server, "policy", "show", f"daily-{sfx}", "--json")).json()["id"] == pol["id"]
    assert "Execution times" in ok(cli(server, "policy", "show", pol["id"])).out

    upd = ok(cli(server, "policy", "update", f"daily-{sfx}", "--days", "30", "--disable", "--json")).json()
    assert upd["enabled"] is False and upd["operation_definition"] == {"retention_duration_days": 30}
    upd = ok(cli(server, "policy", "update", pol["id"], "--enable", "--months", "1", "--json")).json()
    assert upd["enabled"] is True and upd["operation_definition"]["retention_duration_months"] == 1
    r = cli(server, "policy", "update", pol["id"], "--keep", "1")
    assert r.code == 1 and "--keep" in flat(r.err) and "max_backups" not in r.err

    applied = ok(cli(server, "policy", "apply", f"daily-{sfx}", f"polv-{sfx}", "--json")).json()
    assert applied == {"vault_id": vault["id"], "policy_id": pol["id"], "destination_vault_id": None}
    assert [p["id"] for p in ok(cli(server, "policy", "list", "--vault", vault["id"], "--json")).json()] == [pol["id"]]
    r = cli(server, "policy", "apply", local["id"], vault["id"])
    assert r.code == 1 and "only one backup policy" in flat(r.err)

    preview = ok(cli(server, "policy", "preview", pol["id"], "--next", "10", "--json")).json()
    times = [x["scheduled_at"] for x in preview["executions"]]
    assert len(times) == 10 and times == sorted(times) and all(t.endswith("T02:00:00Z") for t in times)
    assert "executions" in ok(cli(server, "policy", "preview", pol["id"], "--next", "3")).out

    dry = ok(cli(server, "policy", "prune", pol["id"], "--vault", vault["id"], "--dry-run", "--json")).json()
    assert dry["prune_count"] == 0 and dry["resources"] == []
    assert "would delete 0 backup(s)" in ok(cli(server, "policy", "prune", pol["id"], "--dry-run")).out
    assert ok(cli(server, "policy", "prune", pol["id"], "--vault", vault["id"], "--json")).json()["deleted_count"] == 0
    assert ok(cli(server, "policy", "executions", pol["id"], "--json")).json() == []
    assert ok(cli(server, "task", "list", "--type", "retention", "--vault", vault["id"], "--json")).json() == []

    removed = ok(cli(server, "policy", "remove", pol["id"], f"polv-{sfx}", "--json")).json()
    assert removed["policy_id"] == pol["id"]
    r = cli(server, "policy", "remove", pol["id"], vault["id"])
    assert r.code == 1 and "not applied" in flat(r.err)
    assert ok(cli(server, "policy", "delete", f"daily-{sfx}", "--yes", "--json")).json() == {"policy_id": pol["id"],
                                                                                   "deleted": True}
    r = cli(server, "policy", "show", pol["id"])
    assert r.code == 1 and "not found" in flat(r.err)


def test_policy_errors_are_messages_and_exit_1(server):
    r = cli(server, "policy", "create", "--name", "has space", "--pattern", "FREQ=DAILY;BYHOUR=2", "--keep", "3")
    assert r.code == 1 and "policy name" in flat(r.err) and "Traceback" not in r.err
    r = cli(server, "policy", "create", "--name", "nop")
    assert r.code == 1 and "execution times" in flat(r.err)
    r = cli(server, "policy", "create", "--name", "both", "--pattern", "FREQ=DAILY;BYHOUR=2", "--keep", "3",
            "--days", "3")
    assert r.code == 1 and "one retention rule" in flat(r.err)
    r = cli(server, "policy", "create", "--name", "rep", "--type", "replication", "--pattern", "FREQ=DAILY;BYHOUR=2")
    assert r.code == 1 and "--destination-region" in flat(r.err)
    rep = ok(cli(server, "policy", "create", "--name", f"rep-{server.backend}", "--type", "replication",
                 "--pattern", "FREQ=DAILY;BYHOUR=3", "--destination-region", "remote-1",
                 "--destination-project", "p-remote", "--json")).json()
    assert rep["operation_definition"]["destination_region"] == "remote-1"
    srv_vault = ok(cli(server, "vault", "create", "--type", "server", "--size", "10", "--json")).json()
    r = cli(server, "policy", "apply", rep["id"], srv_vault["id"])
    assert r.code == 1 and "--destination-vault" in flat(r.err)
    out = ok(cli(server, "policy", "apply", rep["id"], srv_vault["id"], "--destination-vault", "remote-v",
                 "--json")).json()
    assert out["destination_vault_id"] == "remote-v"
