"""PostgreSQL hooks against a real cluster: a restored app-consistent copy starts from the backup's
checkpoint and holds exactly the rows committed before the backup's end; a plain live copy needs crash
recovery; a hung session or a killed agent never leaves the backup mode on."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import zlib

import pytest

from opencbr.agent.hooks import (
    APP_CONSISTENT,
    CRASH_CONSISTENT,
    Quiesce,
    check,
    discover,
    prepare_restored_postgres,
    prepare_restored_tree,
)

from .holder import Holder
from .servers import Postgres, Writer, copy_tree, log_text

pytestmark = pytest.mark.timeout(120)


def _plan(pg: Postgres, **extra):
    return discover({"discover": False, "postgresql": [pg.target(**extra)]})


def _rows(server: Postgres) -> tuple[int, int]:
    return server.sql("SELECT count(*), coalesce(max(id), 0) FROM numbered")[0]


def _next_id(pg: Postgres) -> int:
    return _rows(pg)[1] + 1


def test_app_consistent_copy_starts_from_the_backup_and_holds_the_committed_rows(pg):
    restored = os.path.join(pg.socket_dir, "restored")  # the agent restores the directory holding the cluster
    os.mkdir(restored)
    if pg.owner:  # the restored cluster's server writes its socket and log there
        os.chown(restored, pg.owner.pw_uid, pg.owner.pw_gid)
    with Writer(pg, _next_id(pg)) as writer:
        with Quiesce(_plan(pg), timeout=20) as q:
            assert q.achieved == APP_CONSISTENT, q.reason
            copy_tree(pg.data_dir, os.path.join(restored, "data"))
            before_stop = writer.committed
        after_stop = writer.committed
    assert q.achieved == APP_CONSISTENT, q.reason
    (outcome,) = q.outcomes
    assert outcome.ok and outcome.details["backup_label"].startswith("START WAL LOCATION")
    # the backup keeps the whole record (JSON); extend_info and the task message get it without the WAL
    kept = json.loads(json.dumps(q.record(restore_material=True)))
    assert kept["achieved"] == APP_CONSISTENT and kept["hooks"][0]["details"]["wal"]
    assert "wal" not in q.record()["hooks"][0]["details"]
    done = prepare_restored_tree(kept, pg.socket_dir, restored)
    assert any(line.endswith("wrote backup_label") for line in done), done
    copy = Postgres(os.path.join(restored, "data"), pg.owner, 5440)
    copy.start()
    try:
        count, top = _rows(copy)
        log = log_text(copy.log)
        amcheck = copy.amcheck()
    finally:
        copy.stop()
    # every row committed before the end of the backup is there, none committed after it
    assert before_stop <= top <= after_stop, (before_stop, top, after_stop)
    assert count == top
    assert amcheck.returncode == 0, amcheck.stdout + amcheck.stderr
    # recovery began at the backup's checkpoint and reached the end of the backup
    assert f"redo starts at {outcome.details['start_lsn']}" in log, log
    assert "starting backup recovery" in log and "completed backup recovery" in log, log
    assert "not properly shut down" not in log, log


def test_the_restore_command_writes_the_label_and_the_wal(pg):
    with Quiesce(_plan(pg), timeout=20) as q:
        copy = pg.copy_to("by-hand-copy", 5443)
    record = os.path.join(pg.socket_dir, "record.json")
    with open(record, "w") as f:
        json.dump(q.record(restore_material=True), f)
    done = subprocess.run([sys.executable, "-m", "opencbr.agent.hooks", "prepare-postgres", copy.data_dir, record],
                          capture_output=True, text=True, check=True).stdout.splitlines()
    details = q.outcomes[0].details
    assert done[:2] == ["removed postmaster.pid", "wrote backup_label"], done
    with open(os.path.join(copy.data_dir, "backup_label")) as f:
        assert f.read() == details["backup_label"]
    for piece in details["wal"]:
        with open(os.path.join(copy.data_dir, "pg_wal", piece["file"]), "rb") as f:
            f.seek(piece["offset"])
            assert f.read(piece["length"]) == zlib.decompress(base64.b64decode(piece["zlib_base64"]))
    assert os.stat(os.path.join(copy.data_dir, "backup_label")).st_uid == os.stat(copy.data_dir).st_uid


def test_a_plain_live_copy_needs_crash_recovery(pg):
    with Writer(pg, _next_id(pg)):
        copy = pg.copy_to("crash-copy", 5441)
    prepare_restored_postgres(copy.data_dir, {})
    copy.start()
    copy.stop()
    log = log_text(copy.log)
    assert "backup recovery" not in log, log
    assert "database system was not properly shut down; automatic recovery in progress" in log


def test_without_the_wal_of_the_backup_the_label_alone_does_not_start(pg):
    """Why the hook keeps the WAL until the backup's end: the snapshot cannot contain it."""
    with Writer(pg, _next_id(pg)):
        with Quiesce(_plan(pg), timeout=20) as q:
            copy = pg.copy_to("label-only-copy", 5442)
    details = dict(q.outcomes[0].details, wal=[])
    prepare_restored_postgres(copy.data_dir, details)
    with pytest.raises(AssertionError, match="WAL ends before end of online backup"):
        copy.start()
    copy.stop()


def _agent_sessions(pg: Postgres) -> int:
    return pg.sql("SELECT count(*) FROM pg_stat_activity WHERE application_name = 'opencbr-agent'")[0][0]


def _wait_until(predicate, seconds: float) -> float:
    """Seconds until ``predicate()`` held; fails after ``seconds``."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < seconds, f"not within {seconds} s"
        time.sleep(0.05)
    return time.monotonic() - started


def test_a_hung_checkpoint_times_out_and_falls_back(pg):
    (checkpointer,) = pg.sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'checkpointer'")[0]
    os.kill(checkpointer, signal.SIGSTOP)  # CHECKPOINT and pg_backup_start wait for it forever
    try:
        started = time.monotonic()
        with Quiesce(_plan(pg), timeout=2) as q:
            assert q.achieved == CRASH_CONSISTENT
        took = time.monotonic() - started
    finally:
        os.kill(checkpointer, signal.SIGCONT)
    assert took < 30  # not forever (the checkpointer is stopped); slack for a loaded machine
    assert q.achieved == CRASH_CONSISTENT and "pre-freeze failed" in q.reason, q.reason
    assert "statement timeout" in q.reason or "no answer within" in q.reason, q.reason
    _wait_until(lambda: _agent_sessions(pg) == 0, 5)


def test_the_hold_timeout_ends_the_backup_mode(pg):
    with Quiesce(_plan(pg), timeout=5, hold_timeout=1) as q:
        assert _agent_sessions(pg) == 1
        _wait_until(lambda: _agent_sessions(pg) == 0, 5)
    assert q.achieved == CRASH_CONSISTENT and "hold timeout" in q.reason, q.reason
    assert "backup_label" not in q.outcomes[0].details


def test_a_killed_holder_ends_the_backup_mode(pg):
    with Holder({"discover": False, "postgresql": [pg.target()]}) as holder:
        assert holder.state["achieved"] == APP_CONSISTENT, holder.state
        assert _agent_sessions(pg) == 1
        holder.kill()
        # the pipe to psql closed with the holder: psql exits, the server aborts the backup
        assert _wait_until(lambda: _agent_sessions(pg) == 0, 5) < 5


def test_check_tests_the_privileges(pg):
    pg.sql("DROP ROLE IF EXISTS plain; CREATE ROLE plain LOGIN")
    pg.sql("DROP ROLE IF EXISTS operator; CREATE ROLE operator LOGIN IN ROLE pg_checkpoint")
    pg.sql("GRANT EXECUTE ON FUNCTION pg_backup_start(text, boolean), pg_backup_stop(boolean), "
           "pg_read_binary_file(text, bigint, bigint) TO operator")
    results = {r["name"]: r for r in check(discover({"discover": False, "postgresql": [
        pg.target(name="super"), pg.target(name="plain", user="plain"), pg.target(name="operator", user="operator"),
        pg.target(name="absent", port=1)]}))}
    assert results["super"]["ok"] and results["super"]["privileges"]["superuser"]
    assert not results["plain"]["ok"] and "missing EXECUTE on backup_start" in results["plain"]["message"]
    assert results["operator"]["ok"], results["operator"]
    assert results["operator"]["privileges"] == {"superuser": False, "backup_start": True, "backup_stop": True,
                                                 "checkpoint": True, "read_wal": True}
    assert not results["absent"]["ok"] and "No such file" in results["absent"]["message"]
    # and the granted role really quiesces (its CHECKPOINT and its WAL read included)
    with Quiesce(discover({"discover": False, "postgresql": [pg.target(user="operator")]}), timeout=10) as q:
        pass
    assert q.achieved == APP_CONSISTENT, q.reason


def _fake_record(source: str) -> dict:
    wal = b"\x01" * 100
    return {"achieved": APP_CONSISTENT, "hooks": [{"name": "pg", "kind": "postgresql", "details": {
        "data_dir": f"{source}/main", "backup_label": "START WAL LOCATION: 0/2000028\n", "wal_segment_size": 1 << 20,
        "wal": [{"file": "000000010000000000000002", "offset": 40, "length": len(wal),
                 "zlib_base64": base64.b64encode(zlib.compress(wal)).decode()}]}}]}


def test_readying_a_restored_cluster_writes_nothing_through_a_symlink(tmp_path):
    """What readying a restored data directory writes lands in the restored tree only: a backup_label
    planted as a link to a file of the host, a pg_wal that is a link (as `initdb --waldir` makes it: to
    the original server's live WAL), a data directory reached through a link -- nothing written through
    them, and the result says so."""
    victim, live_wal = tmp_path / "victim", tmp_path / "live-wal"
    victim.write_text("root's file")
    live_wal.mkdir()
    restored = tmp_path / "restored"
    (restored / "main").mkdir(parents=True)
    (restored / "main" / "backup_label").symlink_to(victim)
    (restored / "main" / "pg_wal").symlink_to(live_wal)
    done = prepare_restored_tree(_fake_record("/srv/pg"), "/srv/pg", str(restored))
    assert victim.read_text() == "root's file" and os.listdir(live_wal) == []
    assert not (restored / "main" / "backup_label").is_symlink()
    assert (restored / "main" / "backup_label").read_text().startswith("START WAL LOCATION")
    assert any("WAL not written: pg_wal is a symbolic link to " + str(live_wal) in line for line in done), done

    (restored / "main").rename(restored / "main.moved")
    (restored / "main").symlink_to(restored / "main.moved")  # the data directory itself, through a link
    done = prepare_restored_tree(_fake_record("/srv/pg"), "/srv/pg", str(restored))
    assert len(done) == 1 and "not prepared" in done[0] and "symbolic link" in done[0], done


@pytest.mark.timeout(30)
def test_readying_a_restored_cluster_opens_no_fifo_or_device_in_it(tmp_path):
    """A WAL file name that is a fifo (or a device node: the restored tree is its owner's data) in the
    restored pg_wal is never opened -- a fifo would hang the agent, a device's driver act on the open --
    and the result says it was not prepared."""
    restored = tmp_path / "restored"
    (restored / "main" / "pg_wal").mkdir(parents=True)
    os.mkfifo(restored / "main" / "pg_wal" / "000000010000000000000002")
    done = prepare_restored_tree(_fake_record("/srv/pg"), "/srv/pg", str(restored))
    assert any("not prepared" in line and "not a regular file" in line for line in done), done
    assert (restored / "main" / "backup_label").read_text().startswith("START WAL LOCATION")


def test_a_wal_piece_inflates_to_its_stated_length_and_no_further(tmp_path):
    """A WAL piece of the record was inflated without bound: 64 KB of zlib made 64 MB (and a few more KB
    gigabytes) in the root agent's memory. It inflates to its stated length now, within the backup's WAL
    limit, and a piece that says less than it holds, or is no zlib data, is not written (said, the data
    restored as it is)."""
    restored = tmp_path / "restored"
    (restored / "main" / "pg_wal").mkdir(parents=True)
    bomb = _fake_record("/srv/pg")
    piece = bomb["hooks"][0]["details"]["wal"][0]
    piece["zlib_base64"] = base64.b64encode(zlib.compress(b"\0" * (64 << 20), 9)).decode()  # 64 MiB, "100 bytes"
    done = prepare_restored_tree(bomb, "/srv/pg", str(restored))
    assert any("not prepared" in line and "does not inflate to its stated 100 bytes" in line for line in done), done
    assert not (restored / "main" / "pg_wal" / piece["file"]).exists()
    piece["length"] = 1 << 40  # beyond what a backup keeps
    done = prepare_restored_tree(bomb, "/srv/pg", str(restored))
    assert any("not prepared" in line and "a WAL piece of 1099511627776 bytes" in line for line in done), done
    piece.update(length=100, zlib_base64=base64.b64encode(b"not zlib").decode())
    done = prepare_restored_tree(bomb, "/srv/pg", str(restored))
    assert any("not prepared" in line and "not zlib data" in line for line in done), done
    done = prepare_restored_tree(_fake_record("/srv/pg"), "/srv/pg", str(restored))  # the honest record: written
    assert any("wrote 100 bytes of WAL" in line for line in done), done
