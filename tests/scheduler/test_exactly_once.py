"""Two schedulers on one catalog (the point of the test is PostgreSQL; SQLite runs it too) fire every due
execution exactly once: each has its own ServiceContext (engine, connection pool) and thread. Over five days
they tick at the same instants, racing for every execution of several vaults (even hours), or one after
the other, the second while the first one's backups have already completed and the execution is still in
its start window (odd hours): a scheduler that trusted its own memory, or a claim that did not commit
with the backups, would fire twice."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

from sqlalchemy import func, select

from opencbr.catalog.models import Backup, Checkpoint, PolicyExecution
from opencbr.scheduler import Scheduler
from opencbr.services.context import open_context
from opencbr.worker.runner import Worker
from tests.support.scheduler import MONDAY, associate, disk, policy, vault

VAULTS = 5
TIMES = "FREQ=DAILY;INTERVAL=1;BYHOUR=1,8,13,18;BYMINUTE=00"


def test_two_schedulers_fire_each_execution_exactly_once(ctx, tenant, clock, tmp_path):
    vids = []
    pol = policy(ctx, tenant, "thrice_daily", patterns=[TIMES], max_backups=100)
    for i in range(VAULTS):
        d = disk(ctx, tenant, tmp_path, f"d{i}", size=1 << 16)
        v = vault(ctx, tenant, f"v{i}", [d.id])
        associate(ctx, tenant, v.id, pol.id)
        vids.append(v.id)
    other = open_context(ctx.settings, clock=clock)  # a second "process": its own engine and pool
    scheds = [Scheduler(ctx, "scheduler-A"), Scheduler(other, "scheduler-B")]
    worker = Worker(ctx, "worker")
    reports: dict[str, list] = {s.scheduler_id: [] for s in scheds}
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def tick(s: Scheduler, together: bool = True) -> None:
        try:
            if together:
                start.wait(10)
            r = s.tick()
            assert r.errors == 0
            reports[s.scheduler_id].append(r)
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    def drain() -> None:
        while worker.run_once():
            pass

    # PostgreSQL is the point (real concurrency); SQLite serialises writers, a shorter run suffices there
    days = 5 if ctx.settings.catalog_url.startswith("postgresql") else 2
    end = MONDAY + timedelta(days=days, hours=10)
    try:
        while clock.now < end:
            clock.advance(hours=1)
            if clock.now.hour % 2 == 0:  # a race
                threads = [threading.Thread(target=tick, args=(s,)) for s in scheds]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join(60)
                drain()
            else:  # one after the other, the first one's backups done in between
                tick(scheds[0], together=False)
                drain()
                clock.advance(minutes=20)
                tick(scheds[1], together=False)
                drain()
                clock.advance(minutes=-20)
            assert not errors, errors
    finally:
        other.close()

    per_day = 4
    expected = days * per_day
    with ctx.tx() as s:
        rows = list(s.scalars(select(PolicyExecution).where(PolicyExecution.policy_id == pol.id)))
        cps = Counter(v for (v,) in s.execute(select(Checkpoint.vault_id).where(Checkpoint.policy_id == pol.id)))
        made = Counter(v for (v,) in s.execute(select(Backup.vault_id).where(Backup.policy_id == pol.id,
                                                                          Backup.parent_id.is_(None))))
        per_time = list(s.execute(select(Backup.vault_id, Backup.created_at, func.count()).where(
            Backup.policy_id == pol.id).group_by(Backup.vault_id, Backup.created_at)))
    # every execution of every vault decided once, and fired
    assert Counter(r.vault_id for r in rows) == {v: expected for v in vids}
    assert all(r.decision == "fire" for r in rows)
    # one checkpoint and one backup per execution, never two
    assert cps == {v: expected for v in vids}
    assert made == {v: expected for v in vids}
    assert all(n == 1 for _, _, n in per_time)
    # what the two schedulers say they fired adds up to exactly that, with no fire reported twice
    fired = [(o.vault_id, o.execution_id) for rs in reports.values() for r in rs for o in r.fired]
    assert len(fired) == len(set(fired)) == VAULTS * expected
    # both took part (each tick is a race; over a week each wins some) — informative, not the point
    by = Counter(r.scheduler_id for r in rows)
    assert sum(by.values()) == VAULTS * expected


def test_the_claim_and_the_backups_commit_together(ctx, tenant, clock, tmp_path, monkeypatch):
    """A scheduler that dies after queueing the backups but before committing leaves neither the
    execution record nor the backups; the next tick (any scheduler) fires the execution, once."""
    from opencbr.services import backups

    d = disk(ctx, tenant, tmp_path, "d1", size=1 << 16)
    v = vault(ctx, tenant, "vcrash", [d.id])
    pol = policy(ctx, tenant, "daily", max_backups=5)
    associate(ctx, tenant, v.id, pol.id)
    real = backups.create_checkpoint

    def crash_after(*a, **kw):
        real(*a, **kw)
        raise RuntimeError("the scheduler process died here")

    monkeypatch.setattr(backups, "create_checkpoint", crash_after)
    clock.now = MONDAY + timedelta(days=1, hours=2)
    report = Scheduler(ctx, "doomed").tick()
    assert report.errors == 1 and report.outcomes == []
    with ctx.tx() as s:
        assert s.scalar(select(func.count()).select_from(PolicyExecution)) == 0
        assert s.scalar(select(func.count()).select_from(Checkpoint)) == 0
        assert s.scalar(select(func.count()).select_from(Backup)) == 0
    monkeypatch.setattr(backups, "create_checkpoint", real)
    clock.advance(minutes=15)
    again = Scheduler(ctx, "survivor")
    assert [o.decision for o in again.tick().outcomes] == ["fire"]
    assert again.tick().outcomes == []
    with ctx.tx() as s:
        assert s.scalar(select(func.count()).select_from(Checkpoint)) == 1
