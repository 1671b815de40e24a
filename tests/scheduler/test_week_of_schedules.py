"""A week (or two) of schedules in seconds: the fake clock moves hour by hour, the scheduler fires the
policy, a real worker makes real backups of tiny disk images, retention runs, and the backups that exist
afterwards are the ones the guide says (5.2 example, 13.5.2, 5.7, 13.2.16)."""

from __future__ import annotations

import re
from datetime import timedelta

from opencbr.services import policies, tasks
from tests.support.scheduler import (
    MONDAY,
    Driver,
    associate,
    backup_now,
    disk,
    dissociate,
    executions,
    policy,
    task_rows,
    top_backups,
    update_policy,
    vault,
)


def days(rows) -> list[str]:
    return [b.created_at.strftime("%a %d %H:%M") for b in rows]


def auto(rows):
    return [b for b in rows if b.auto_trigger]


def test_guide_5_2_example_daily_0200_keep_3(ctx, tenant, clock, tmp_path):
    """Guide 5.2 Example: "At 10:00 a.m. on Monday, a user sets a backup policy ... at 02:00 a.m. every day
    and retain a maximum of three backups. As of 11:00 a.m. on Saturday, three backups will be retained,
    which are generated on Thursday, Friday, and Saturday. The backups generated at 02:00 a.m. on Tuesday
    and Wednesday have been automatically deleted." Manual backups are never deleted (13.2.16)."""
    d = disk(ctx, tenant, tmp_path, "d1")
    v = vault(ctx, tenant, "v52", [d.id])
    pol = policy(ctx, tenant, "daily_0200", max_backups=3)
    assert clock.now == MONDAY.replace(hour=10)
    associate(ctx, tenant, v.id, pol.id)
    drv = Driver(ctx, clock)
    drv.run_until(MONDAY + timedelta(days=1, hours=12))  # Tuesday 12:00: a manual backup
    manual = backup_now(ctx, tenant, v.id, {"name": "mine"}).backups[0]
    drv.drain()
    drv.run_until(MONDAY + timedelta(days=5, hours=11))  # Saturday 11:00

    rows = top_backups(ctx, v.id)
    assert days(auto(rows)) == ["Thu 08 02:00", "Fri 09 02:00", "Sat 10 02:00"]
    assert all(b.status == "available" for b in rows)
    assert [b.id for b in rows if not b.auto_trigger] == [manual.id]
    for b in auto(rows):
        assert re.fullmatch(r"autobk_[a-z0-9]{4}", b.name), b.name  # guide 13.2.16
        assert b.policy_id == pol.id and b.retention_rule == "count:3"
    # every execution time was decided exactly once: five fired (Tue..Sat), none skipped
    ex = executions(ctx, pol.id)
    assert [(e.scheduled_at.strftime("%a %H:%M"), e.decision) for e in ex] == [
        (day, "fire") for day in ("Tue 02:00", "Wed 02:00", "Thu 02:00", "Fri 02:00", "Sat 02:00")]
    # the deletions are tasks that say why; the sweeps that pruned are retention tasks (guide ch. 9)
    deletes = task_rows(ctx, operation_type="delete", vault_id=v.id)
    assert len(deletes) == 2 and all(t.status == "success" for t in deletes)
    assert all("max_backups=3" in t.extra_info["reason"] for t in deletes)
    ret = task_rows(ctx, operation_type="retention", vault_id=v.id)
    assert [t.status for t in ret] == ["success", "success"]
    assert [len(t.extra_info["retention"]["deleted"]) for t in ret] == [1, 1]
    assert ret[0].resource_id == d.id and ret[0].policy_id == pol.id
    # and they are found with the guide's filters (type, status, vault, time)
    with ctx.read() as s:
        found, n = tasks.list_tasks(s, tenant, tasks.TaskFilter(operation_type="retention", status="success",
                                                                vault_id=v.id, start_time=MONDAY + timedelta(days=4),
                                                                end_time=MONDAY + timedelta(days=5, hours=3)))
    assert n == 2 and {t.id for t in found} == {t.id for t in ret}
    with ctx.read() as s:
        found, n = tasks.list_tasks(s, tenant, tasks.TaskFilter(operation_type="backup", vault_id=v.id,
                                                                start_time=MONDAY + timedelta(days=3),
                                                                end_time=MONDAY + timedelta(days=3, hours=12)))
    assert n == 1 and found[0].policy_id == pol.id and found[0].status == "success"


def test_time_period_changed_to_quantity_union_13_5_2(ctx, tenant, clock, tmp_path):
    """Guide 13.5.2, "Rule Type Changed from Time Period to Backup Quantity ... New policy applied to old
    backups": applied on day 0 (Aug 5 in the guide) keeping one month; on day 3 at 10:00 changed to keep
    the 7 most recent. On day 10 at 10:00 the backups of days 4..10 are kept, those of days 1, 2, 3 are
    gone."""
    d = disk(ctx, tenant, tmp_path, "d1")
    v = vault(ctx, tenant, "v1352", [d.id])
    pol = policy(ctx, tenant, "monthly", retention_duration_months=1)
    associate(ctx, tenant, v.id, pol.id)
    drv = Driver(ctx, clock)
    drv.run_until(MONDAY + timedelta(days=3, hours=10))
    assert days(auto(top_backups(ctx, v.id))) == ["Tue 06 02:00", "Wed 07 02:00", "Thu 08 02:00"]
    assert [b.retention_rule for b in top_backups(ctx, v.id)] == ["months:1"] * 3
    update_policy(ctx, tenant, pol.id, {"operation_definition": {"max_backups": 7}})
    drv.run_until(MONDAY + timedelta(days=10, hours=10))
    assert days(auto(top_backups(ctx, v.id))) == [f"{d} {n:02d} 02:00" for d, n in (
        ("Fri", 9), ("Sat", 10), ("Sun", 11), ("Mon", 12), ("Tue", 13), ("Wed", 14), ("Thu", 15))]


def test_removing_or_deleting_the_policy_deletes_no_backup_5_5_5_7(ctx, tenant, clock, tmp_path):
    """Guide 5.7: after a policy is removed, backups kept by quantity are kept (no rule deletes them any
    more) while backups kept by a time period still expire by their rule; 5.5: deleting a policy deletes
    none of its backups."""
    d1, d2 = disk(ctx, tenant, tmp_path, "d1"), disk(ctx, tenant, tmp_path, "d2")
    by_count, by_days = vault(ctx, tenant, "vcount", [d1.id]), vault(ctx, tenant, "vdays", [d2.id])
    p_count = policy(ctx, tenant, "count", max_backups=2)
    p_days = policy(ctx, tenant, "days", retention_duration_days=3)
    associate(ctx, tenant, by_count.id, p_count.id)
    associate(ctx, tenant, by_days.id, p_days.id)
    drv = Driver(ctx, clock)
    drv.run_until(MONDAY + timedelta(days=2, hours=10))  # Wednesday: two backups in each vault
    assert len(top_backups(ctx, by_count.id)) == 2 and len(top_backups(ctx, by_days.id)) == 2
    dissociate(ctx, tenant, by_count.id, p_count.id)
    with ctx.tx() as s:
        policies.delete_policy(s, tenant, p_days.id)
    kept_count = [b.id for b in top_backups(ctx, by_count.id)]
    drv.run_until(MONDAY + timedelta(days=4, hours=10))  # Friday
    # nothing more was made, nothing kept by quantity was deleted; the 3-day backups of Tue 02:00 expired
    assert [b.id for b in top_backups(ctx, by_count.id)] == kept_count
    assert days(top_backups(ctx, by_days.id)) == ["Wed 07 02:00"]
    drv.run_until(MONDAY + timedelta(days=5, hours=10))
    assert top_backups(ctx, by_days.id) == []
    assert [b.id for b in top_backups(ctx, by_count.id)] == kept_count


def test_disabled_policy_fires_nothing_and_enabling_it_does_not_catch_up(ctx, tenant, clock, tmp_path):
    """Guide 5.2: "A backup policy must be enabled before it can be used for periodic backups"; 13.5.5."""
    d = disk(ctx, tenant, tmp_path, "d1")
    v = vault(ctx, tenant, "voff", [d.id])
    pol = policy(ctx, tenant, "off", enabled=False, max_backups=5)
    associate(ctx, tenant, v.id, pol.id)
    drv = Driver(ctx, clock)
    drv.run_until(MONDAY + timedelta(days=3))
    assert top_backups(ctx, v.id) == []
    assert [e.decision for e in executions(ctx, pol.id)] == ["skip", "skip"]
    assert "disabled" in executions(ctx, pol.id)[0].reason
    assert task_rows(ctx, vault_id=v.id) == []  # a disabled policy's times are not tasks
    update_policy(ctx, tenant, pol.id, {"enabled": True})
    drv.run_until(MONDAY + timedelta(days=4))
    assert days(top_backups(ctx, v.id)) == ["Thu 08 02:00"]
