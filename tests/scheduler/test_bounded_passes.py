"""The scheduler's passes stay bounded on a large catalog (issue 18): a tick reads nothing of the policy
bindings whose next execution time has not come, and the retention sweep works in passes of at most N
(vault, resource) pairs that continue where the previous one stopped."""

from __future__ import annotations

from contextlib import contextmanager
from datetime import timedelta

from sqlalchemy import event, select

from opencbr.catalog.models import Backup, SweepCursor, Task
from opencbr.scheduler import Scheduler
from opencbr.services import retention
from tests.support.scheduler import MONDAY, associate, disk, executions, policy, update_policy, vault

WEEKLY_MONDAY_0300 = "FREQ=WEEKLY;BYDAY=MO;BYHOUR=03;BYMINUTE=00"


@contextmanager
def statements(ctx):
    """Every SQL statement the context's engine runs inside the block, with its parameters."""
    seen: list[tuple[str, str]] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        seen.append((statement, repr(parameters)))

    event.listen(ctx.engine, "before_cursor_execute", note)
    try:
        yield seen
    finally:
        event.remove(ctx.engine, "before_cursor_execute", note)


def test_a_tick_reads_nothing_of_bindings_not_due_and_fires_the_due_one_once(ctx, tenant, clock, tmp_path):
    weekly = policy(ctx, tenant, "weekly", patterns=(WEEKLY_MONDAY_0300,))
    idle = [vault(ctx, tenant, f"idle-{i}") for i in range(12)]
    for v in idle:
        associate(ctx, tenant, v.id, weekly.id)
    d = disk(ctx, tenant, tmp_path, "d1")
    due = vault(ctx, tenant, "due", [d.id])
    daily = policy(ctx, tenant, "daily")  # 02:00 every day
    associate(ctx, tenant, due.id, daily.id)
    sched = Scheduler(ctx, "s1")
    assert sched.tick().outcomes == []  # Monday 10:00: nothing due; each binding's next time is learnt

    clock.now = MONDAY + timedelta(hours=20)  # Monday 20:00: still nothing due anywhere
    with statements(ctx) as quiet:
        assert sched.tick().outcomes == []
    assert len(quiet) < len(idle)  # a fixed number of statements, not one or more per binding
    assert not [st for st, _ in quiet if "policy_executions" in st or "FROM backups" in st]

    clock.now = MONDAY + timedelta(days=1, hours=2, minutes=5)  # Tuesday 02:05: the daily one is due
    with statements(ctx) as busy:
        report = sched.tick()
    assert [(o.vault_id, o.decision) for o in report.outcomes] == [(due.id, "fire")]
    assert not [p for _, p in busy if any(v.id in p for v in idle)]  # the 12 others were not looked at
    clock.now += timedelta(minutes=1)
    assert sched.tick().outcomes == [] and Scheduler(ctx, "s2").tick().outcomes == []
    assert [e.decision for e in executions(ctx, daily.id)] == ["fire"]  # exactly once


def test_new_execution_times_are_seen_by_the_next_tick(ctx, tenant, clock, tmp_path):
    d = disk(ctx, tenant, tmp_path, "d1")
    v = vault(ctx, tenant, "v", [d.id])
    pol = policy(ctx, tenant, "weekly", patterns=(WEEKLY_MONDAY_0300,))
    associate(ctx, tenant, v.id, pol.id)
    sched = Scheduler(ctx, "s1")
    sched.tick()  # the next time is next Monday 03:00
    clock.now += timedelta(hours=1)
    update_policy(ctx, tenant, pol.id, {"trigger": {"properties": {"pattern": ["FREQ=DAILY;BYHOUR=02;BYMINUTE=00"]}}})
    clock.now = MONDAY + timedelta(days=1, hours=2, minutes=1)
    assert [o.decision for o in sched.tick().outcomes] == ["fire"]


def _pairs_with_too_many_backups(ctx, tenant, n_pairs: int) -> tuple[str, list[str]]:
    """A vault keeping 2 backups per disk, and ``n_pairs`` disks with 4 automatic backups each."""
    pol = policy(ctx, tenant, "keep2", max_backups=2)
    v = vault(ctx, tenant, "v")
    associate(ctx, tenant, v.id, pol.id)
    rids = [f"disk-{i}" for i in range(n_pairs)]
    with ctx.tx() as s:
        for rid in rids:
            for day in range(4):
                at = MONDAY - timedelta(days=4 - day)
                s.add(Backup(project_id=tenant.project_id, vault_id=v.id, name=f"{rid}-{day}", resource_id=rid,
                             resource_name=rid, resource_type="OS::Cinder::Volume", status="available",
                             auto_trigger=True, retention_rule="count:2", created_at=at, updated_at=at))
    return v.id, rids


def _live_count(ctx, vault_id: str, rid: str) -> int:
    with ctx.tx() as s:
        return len(list(s.scalars(select(Backup.id).where(Backup.vault_id == vault_id, Backup.resource_id == rid,
                                                          Backup.status == "available"))))


def test_a_sweep_pass_handles_at_most_n_pairs_and_the_next_continues(ctx, tenant, clock):
    vid, rids = _pairs_with_too_many_backups(ctx, tenant, 5)
    passes = [retention.sweep_pass(ctx, limit=2) for _ in range(3)]
    assert [p.pairs for p in passes] == [2, 2, 1]
    assert [p.round_done for p in passes] == [False, False, True]
    assert [r.resource_id for p in passes for r in p.pruned] == rids  # each pair once, in order
    assert all(_live_count(ctx, vid, rid) == 2 for rid in rids)
    again = retention.sweep_pass(ctx, limit=2)  # a new round starts from the first pair
    assert again.pairs == 2 and again.pruned == [] and not again.round_done


def test_a_sweep_pass_past_its_time_stops_after_the_pair_it_is_on(ctx, tenant, clock):
    vid, rids = _pairs_with_too_many_backups(ctx, tenant, 3)
    passes = [retention.sweep_pass(ctx, limit=10, seconds=0) for _ in range(3)]
    assert [p.pairs for p in passes] == [1, 1, 1]
    assert [p.round_done for p in passes] == [False, False, True]
    assert [r.resource_id for p in passes for r in p.pruned] == rids


def test_the_scheduler_runs_passes_tick_after_tick_until_the_round_is_done(ctx, tenant, clock):
    vid, rids = _pairs_with_too_many_backups(ctx, tenant, 5)
    sched = Scheduler(ctx, "s1", sweep_pairs=2)
    sched.run_once()
    assert [_live_count(ctx, vid, rid) for rid in rids] == [2, 2, 4, 4, 4]
    restarted = Scheduler(ctx, "s2", sweep_pairs=2)  # the cursor is in the catalog
    restarted.run_once()
    restarted.run_once()
    assert [_live_count(ctx, vid, rid) for rid in rids] == [2] * 5
    with ctx.tx() as s:
        assert len(list(s.scalars(select(Task.id).where(Task.operation_type == "retention")))) == 5


def test_a_pass_over_pairs_with_nothing_to_delete_reads_few_columns_and_writes_only_its_cursor(ctx, tenant, clock):
    vid, rids = _pairs_with_too_many_backups(ctx, tenant, 4)
    retention.retention_sweep(ctx)  # a whole round: now every pair keeps its two backups
    with statements(ctx) as seen:
        p = retention.sweep_pass(ctx, limit=10)
    assert p.pairs == 4 and p.pruned == [] and p.round_done
    writes = [st for st, _ in seen if st.split()[0].upper() in ("INSERT", "UPDATE", "DELETE")]
    assert writes and all("sweep_cursors" in st for st in writes)
    reads_of_backups = [st for st, _ in seen if "FROM backups" in st]
    assert len(reads_of_backups) == 4 and not [st for st in reads_of_backups if "details" in st]


def test_the_sweep_cursor_exists_from_the_migration_so_schedulers_only_update_it(ctx, tenant, clock):
    """Two schedulers' first passes at one moment must not both insert the cursor (on PostgreSQL one
    insert would fail): the migration made it, and passes update that one row."""
    with ctx.read() as s:
        assert s.scalars(select(SweepCursor)).all()[0].name == retention.CURSOR
    inserts = []

    def note(conn, cursor, statement, params, context, executemany):
        if statement.lstrip().upper().startswith("INSERT INTO SWEEP_CURSORS"):
            inserts.append(statement)

    event.listen(ctx.engine, "before_cursor_execute", note)
    try:
        retention.sweep_pass(ctx, now=clock.now, limit=2)
    finally:
        event.remove(ctx.engine, "before_cursor_execute", note)
    assert inserts == []
    with ctx.read() as s:
        assert len(s.scalars(select(SweepCursor)).all()) == 1
