"""The scheduler's rules, with the fake clock: an overrunning backup skips the next time (guide 5.2
notice), a restart neither fires a time twice nor forgets one, the start window, the first run of a
day-based cycle (5.2), full backups at most once a day (5.2), replication policies to an unlinked
region recorded as failed, failed executions as failed tasks with the cause, purges after 30 days (ch. 9)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update

from opencbr.catalog.models import Task, Vault
from opencbr.scheduler import Scheduler
from opencbr.services import resources
from opencbr.services.context import open_context
from tests.support.scheduler import (
    MONDAY,
    Driver,
    associate,
    disk,
    dissociate,
    executions,
    policy,
    task_rows,
    top_backups,
    update_policy,
    vault,
)


def hours(*hs: int) -> str:
    return f"FREQ=DAILY;INTERVAL=1;BYHOUR={','.join(map(str, hs))};BYMINUTE=00"


def test_overrunning_backup_skips_the_next_execution_time(ctx, tenant, clock, tmp_path):
    """Guide 5.2 notice: backups at 00:00, 01:00 and 02:00; the 00:00 one runs until 01:30: "only two
    backups are generated in total, one at 00:00, and the other at 02:00"."""
    d = disk(ctx, tenant, tmp_path, "d1")
    v = vault(ctx, tenant, "vbusy", [d.id])
    pol = policy(ctx, tenant, "hourly", patterns=[hours(0, 1, 2)], max_backups=10)
    associate(ctx, tenant, v.id, pol.id)
    drv = Driver(ctx, clock, run_worker=False)
    drv.run_until(MONDAY + timedelta(days=1))  # Tuesday 00:00: fired, still running
    assert [b.status for b in top_backups(ctx, v.id)] == ["protecting"]
    drv.run_until(MONDAY + timedelta(days=1, hours=1))  # 01:00: the previous one is still running
    clock.advance(minutes=30)
    drv.drain()  # 01:30: it completes
    drv.run_until(MONDAY + timedelta(days=1, hours=2))
    drv.drain()
    rows = top_backups(ctx, v.id)
    assert [(b.created_at.strftime("%H:%M"), b.status) for b in rows] == [("00:00", "available"), ("02:00", "available")]
    ex = executions(ctx, pol.id)
    assert [(e.scheduled_at.strftime("%H:%M"), e.decision) for e in ex] == [("00:00", "fire"), ("01:00", "skip"),
                                                                          ("02:00", "fire")]
    assert "still running" in ex[1].reason
    skipped = task_rows(ctx, vault_id=v.id, status="skipped")
    assert len(skipped) == 1 and skipped[0].operation_type == "backup" and "still running" in skipped[0].error_message
    assert skipped[0].policy_id == pol.id and skipped[0].extra_info["policy"]["execution_id"] == ex[1].execution_id


def test_restart_neither_fires_twice_nor_forgets_and_honours_the_start_window(ctx, tenant, clock, tmp_path):
    d = disk(ctx, tenant, tmp_path, "d1")
    v = vault(ctx, tenant, "vrestart", [d.id])
    pol = policy(ctx, tenant, "hourly", patterns=[hours(2, 3, 4, 5, 6)], max_backups=50)
    associate(ctx, tenant, v.id, pol.id)
    first = Driver(ctx, clock, scheduler_id="before-restart")
    first.run_until(MONDAY + timedelta(days=1, hours=2))  # Tuesday 02:00 fired
    assert len(top_backups(ctx, v.id)) == 1

    # the process restarts: a new catalog connection and a scheduler that remembers nothing
    ctx2 = open_context(ctx.settings, clock=clock)
    try:
        second = Driver(ctx2, clock, scheduler_id="after-restart")
        clock.advance(minutes=5)
        second.step()  # 02:05: 02:00 is not fired again
        assert second.reports[-1].outcomes == [] and len(top_backups(ctx, v.id)) == 1
        # down from 02:05 to 03:40: 03:00 is still within its start window (60 minutes): caught up, once
        clock.now = MONDAY + timedelta(days=1, hours=3, minutes=40)
        second.step()
        second.step()
        assert [o.execution_id[-7:] for o in second.reports[-2].fired] == ["030000Z"]
        assert second.reports[-1].outcomes == []
        # down from 03:40 to 06:30: 04:00 and 05:00 are past their window and skipped, 06:00 runs
        clock.now = MONDAY + timedelta(days=1, hours=6, minutes=30)
        second.step()
    finally:
        ctx2.close()
    ex = executions(ctx, pol.id)
    assert [(e.scheduled_at.strftime("%H:%M"), e.decision, e.scheduler_id) for e in ex] == [
        ("02:00", "fire", "before-restart"), ("03:00", "fire", "after-restart"), ("04:00", "skip", "after-restart"),
        ("05:00", "skip", "after-restart"), ("06:00", "fire", "after-restart")]
    assert "start window" in ex[2].reason
    assert [b.created_at.strftime("%H:%M") for b in top_backups(ctx, v.id)] == ["02:00", "03:40", "06:30"]
    # one task tells about the times missed during the outage, not one per hour
    (skipped,) = task_rows(ctx, vault_id=v.id, status="skipped")
    assert "2 execution times" in skipped.error_message and "start window" in skipped.error_message
    assert skipped.extra_info["policy"]["execution_id"] == ex[3].execution_id


def test_day_based_first_run_follows_the_day_of_creation(ctx, tenant, clock, tmp_path):
    """Guide 5.2: "If you select day-based backup, the first backup is supposed to be executed on the day
    when the backup policy is created. If the execution time on the day you create the backup policy has
    passed, the first backup will be executed in the next backup cycle." Created Monday 10:00, every 3
    days: at 14:00 it first runs on Monday; at 02:00 on Thursday."""
    d1, d2 = disk(ctx, tenant, tmp_path, "d1"), disk(ctx, tenant, tmp_path, "d2")
    v14, v02 = vault(ctx, tenant, "v14", [d1.id]), vault(ctx, tenant, "v02", [d2.id])
    p14 = policy(ctx, tenant, "at14", patterns=["FREQ=DAILY;INTERVAL=3;BYHOUR=14;BYMINUTE=00"], max_backups=9)
    p02 = policy(ctx, tenant, "at02", patterns=["FREQ=DAILY;INTERVAL=3;BYHOUR=2;BYMINUTE=00"], max_backups=9)
    associate(ctx, tenant, v14.id, p14.id)
    associate(ctx, tenant, v02.id, p02.id)
    Driver(ctx, clock).run_until(MONDAY + timedelta(days=7, hours=10))
    assert [b.created_at.strftime("%a %H:%M") for b in top_backups(ctx, v14.id)] == ["Mon 14:00", "Thu 14:00",
                                                                                    "Sun 14:00"]
    assert [b.created_at.strftime("%a %H:%M") for b in top_backups(ctx, v02.id)] == ["Thu 02:00", "Sun 02:00"]


def test_full_backups_are_at_least_one_day_apart(ctx, tenant, clock, tmp_path):
    """Guide 5.2: the first backup of a resource is full, later ones incremental; "The minimum interval
    between two full backups is 1 day" even when full_backup_interval asks for a full one every time."""
    d1, d2 = disk(ctx, tenant, tmp_path, "d1"), disk(ctx, tenant, tmp_path, "d2")
    always, default = vault(ctx, tenant, "vfull", [d1.id]), vault(ctx, tenant, "vincr", [d2.id])
    p_full = policy(ctx, tenant, "full", patterns=[hours(1, 2, 3)], max_backups=20, full_backup_interval=0)
    p_incr = policy(ctx, tenant, "incr", patterns=[hours(1, 2, 3)], max_backups=20)
    associate(ctx, tenant, always.id, p_full.id)
    associate(ctx, tenant, default.id, p_incr.id)
    Driver(ctx, clock).run_until(MONDAY + timedelta(days=2, hours=4))
    mode = lambda b: "full" if not b.incremental else "incr"  # noqa: E731
    assert [(b.created_at.strftime("%a %H:%M"), mode(b)) for b in top_backups(ctx, always.id)] == [
        ("Tue 01:00", "full"), ("Tue 02:00", "incr"), ("Tue 03:00", "incr"),
        ("Wed 01:00", "full"), ("Wed 02:00", "incr"), ("Wed 03:00", "incr")]
    assert [b.full_requested for b in top_backups(ctx, always.id)] == [True, False, False, True, False, False]
    assert [mode(b) for b in top_backups(ctx, default.id)] == ["full"] + ["incr"] * 5


def test_replication_policy_executions_to_an_unlinked_region_are_failed_tasks_saying_so(ctx, tenant, clock, tmp_path):
    d = disk(ctx, tenant, tmp_path, "sys")
    with ctx.tx() as s:
        srv = resources.register_server(s, ctx, tenant, name="web", system_disk=d.id)
    v = vault(ctx, tenant, "vsrv", [srv.id], object_type="server", rtype="OS::Nova::Server")
    rep = policy(ctx, tenant, "rep", op="replication", max_backups=3, destination_region="other-1",
                 destination_project_id="proj-remote")
    off = policy(ctx, tenant, "rep_off", op="replication", enabled=False, destination_region="other-1",
                 destination_project_id="proj-remote")
    associate(ctx, tenant, v.id, rep.id, destination_vault_id="remote-vault")
    Driver(ctx, clock).run_until(MONDAY + timedelta(days=2, hours=3))
    reps = task_rows(ctx, operation_type="replication", vault_id=v.id)
    assert [(t.status, t.policy_id) for t in reps] == [("failed", rep.id)] * 2
    assert "not a linked region" in reps[0].error_message  # (docs/replication.md links regions)
    assert reps[0].extra_info["replication"]["destination_vault_id"] == "remote-vault"
    assert [e.decision for e in executions(ctx, rep.id)] == ["fail", "fail"]
    assert top_backups(ctx, v.id) == []  # a replication policy makes no backups
    # a disabled replication policy records nothing a user must see
    dissociate(ctx, tenant, v.id, rep.id)
    associate(ctx, tenant, v.id, off.id, destination_vault_id="remote-vault")
    Driver(ctx, clock).run_until(MONDAY + timedelta(days=3, hours=3))
    assert len(task_rows(ctx, operation_type="replication", vault_id=v.id)) == 2


def test_failed_execution_is_a_failed_task_with_the_cause(ctx, tenant, clock, tmp_path):
    """Guide 13.5.6: when the vault is full, "auto backup will fail"; the task says why (ch. 9). A vault
    without resources has nothing to back up: recorded, but not a task."""
    d = disk(ctx, tenant, tmp_path, "d1")
    full, empty = vault(ctx, tenant, "vfull", [d.id]), vault(ctx, tenant, "vempty")
    pol = policy(ctx, tenant, "daily", max_backups=3)
    associate(ctx, tenant, full.id, pol.id)
    associate(ctx, tenant, empty.id, pol.id)
    with ctx.tx() as s:
        s.execute(update(Vault).where(Vault.id == full.id).values(used_bytes=11 * 1024**3))
    Driver(ctx, clock).run_until(MONDAY + timedelta(days=1, hours=3))
    failed = task_rows(ctx, vault_id=full.id, status="failed")
    assert len(failed) == 1 and failed[0].operation_type == "backup" and failed[0].error_code
    assert "capacity" in failed[0].error_message.lower() or "full" in failed[0].error_message.lower()
    assert top_backups(ctx, full.id) == []
    ex = {e.vault_id: e for e in executions(ctx, pol.id)}
    assert ex[full.id].decision == "fail"
    assert ex[empty.id].decision == "skip" and "no resources" in ex[empty.id].reason
    assert task_rows(ctx, vault_id=empty.id) == []


def test_sweep_purges_tasks_and_execution_records_after_30_days(ctx, tenant, clock, tmp_path):
    """Guide ch. 9: the task list shows the past 30 days. Old execution records go too, except the newest
    of each policy and vault, which bounds the next window."""
    d = disk(ctx, tenant, tmp_path, "d1")
    v = vault(ctx, tenant, "vpurge", [d.id])
    pol = policy(ctx, tenant, "daily", max_backups=2)
    associate(ctx, tenant, v.id, pol.id)
    drv = Driver(ctx, clock)
    drv.run_until(MONDAY + timedelta(days=3, hours=3))
    first_tasks = {t.id for t in task_rows(ctx, vault_id=v.id)}
    assert first_tasks and len(executions(ctx, pol.id)) == 3
    update_policy(ctx, tenant, pol.id, {"enabled": False})
    clock.now = MONDAY + timedelta(days=40)
    sched = Scheduler(ctx, "janitor")
    sched.tick()  # the disabled policy's times of the last week are recorded as skipped
    report = sched.sweep()
    assert report.tasks_purged >= len(first_tasks)
    assert not first_tasks & {t.id for t in task_rows(ctx)}
    ex = executions(ctx, pol.id)
    assert ex and min(e.scheduled_at for e in ex) >= clock.now - timedelta(days=30)
    with ctx.tx() as s:
        assert s.query(Task).filter(Task.id.in_(first_tasks)).count() == 0
    # once the policy is no longer applied to the vault, its last record goes too
    dissociate(ctx, tenant, v.id, pol.id)
    clock.now += timedelta(days=31)
    sched.sweep()
    assert executions(ctx, pol.id) == []
