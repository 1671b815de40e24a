"""Guide 5.3: a replication policy's retention rule applies to the replicas it made in the destination
region. Each automatic replica carries the rule; the destination prunes by it (after each replica and
in its retention sweep); a pruned replica is not sent again (the once-ever rule). Under the scheduler's
fake clock with a second installation in this process."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from opencbr.catalog.models import ReplicationRecord, Task
from opencbr.services import replication, resources
from tests.support.regions import start_destination
from tests.support.scheduler import MONDAY, Driver, associate, backup_now, disk, policy, vault


@pytest.fixture()
def dest(tmp_path, clock):
    d, server = start_destination(tmp_path, clock)
    yield d
    server.stop()
    d.ctx.close()


def _source_vault(ctx, tenant, tmp_path):
    d = disk(ctx, tenant, tmp_path, "sys")
    with ctx.tx() as s:
        srv = resources.register_server(s, ctx, tenant, name="web", system_disk=d.id)
    return vault(ctx, tenant, "vsrv", [srv.id], object_type="server", rtype="OS::Nova::Server")


def test_the_policy_keeps_its_count_of_replicas_in_the_destination(ctx, tenant, clock, tmp_path, dest):
    dest.link_from(ctx)
    dest_vault = vault(dest.ctx, dest.principal(), "dr", object_type="server", protect_type="replication")
    v = _source_vault(ctx, tenant, tmp_path)
    rep = policy(ctx, tenant, "rep", op="replication", destination_region="region-b",
                 destination_project_id=dest.info.project_id, max_backups=2)
    associate(ctx, tenant, v.id, rep.id, destination_vault_id=dest_vault.id)
    src, there = Driver(ctx, clock), Driver(dest.ctx, clock)
    for day in range(3):  # a backup a day, replicated at 02:00 the next day
        backup_now(ctx, tenant, v.id)
        src.drain()
        src.run_until(MONDAY + timedelta(days=day + 1, hours=3))
        there.drain()  # the destination's workers run the deletions its retention queued
    replicas = dest.replicas()
    assert [r.retention_rule for r in replicas] == ["count:2", "count:2"]
    with ctx.read() as s:
        recs = list(s.scalars(select(ReplicationRecord).order_by(ReplicationRecord.created_at)))
    assert [r.status for r in recs] == ["available"] * 3
    assert {r.source_backup_id for r in replicas} == {r.source_backup_id for r in recs[1:]}
    with dest.ctx.read() as s:  # the destination says why it deleted the first one
        ret = s.scalars(select(Task).where(Task.operation_type == "retention")).one()
    assert ret.extra_info["retention"]["deleted"][0]["backup_id"] not in {r.id for r in replicas}
    assert "max_backups=2" in ret.extra_info["retention"]["deleted"][0]["reason"]
    # the once-ever rule: the next execution does not send the pruned one again
    src.run_until(MONDAY + timedelta(days=4, hours=3))
    there.drain()
    with ctx.read() as s:
        assert s.scalar(select(ReplicationRecord.id).where(ReplicationRecord.status == "replicating")) is None
        assert len(list(s.scalars(select(ReplicationRecord)))) == 3
    assert len(dest.replicas()) == 2



def test_the_long_term_levels_travel_with_the_replicas(ctx, tenant, clock, tmp_path, dest):
    """A replication policy's long-term levels (day/week/month/year_backups with its timezone) are part
    of its retention: the replicas carry them, and the destination keeps a replica a day beyond the count."""
    dest.link_from(ctx)
    dest_vault = vault(dest.ctx, dest.principal(), "dr", object_type="server", protect_type="replication")
    v = _source_vault(ctx, tenant, tmp_path)
    rep = policy(ctx, tenant, "rep", op="replication", destination_region="region-b",
                 destination_project_id=dest.info.project_id, max_backups=2, day_backups=3, timezone="UTC+08:00")
    associate(ctx, tenant, v.id, rep.id, destination_vault_id=dest_vault.id)
    src, there = Driver(ctx, clock), Driver(dest.ctx, clock)
    for day in range(4):
        backup_now(ctx, tenant, v.id)
        src.drain()
        src.run_until(MONDAY + timedelta(days=day + 1, hours=3))
        there.drain()
    replicas = dest.replicas()
    # count 2 keeps the two newest; the daily level keeps the newest of each of the last 3 days: 3 stay
    assert len(replicas) == 3, [(r.created_at, r.retention_rule) for r in replicas]
    assert {r.retention_rule for r in replicas} == {"count:2;gfs:3,0,0,0,+0800"}

def test_a_duration_rule_expires_replicas_and_manual_replicas_stay(ctx, tenant, clock, tmp_path, dest):
    dest.link_from(ctx)
    dest_vault = vault(dest.ctx, dest.principal(), "dr", object_type="server", protect_type="replication")
    v = _source_vault(ctx, tenant, tmp_path)
    rep = policy(ctx, tenant, "rep", op="replication", destination_region="region-b",
                 destination_project_id=dest.info.project_id, retention_duration_days=2)
    associate(ctx, tenant, v.id, rep.id, destination_vault_id=dest_vault.id)
    src, there = Driver(ctx, clock), Driver(dest.ctx, clock)
    first = backup_now(ctx, tenant, v.id)
    src.drain()
    src.run_until(MONDAY + timedelta(days=1, hours=3))  # the automatic replica (kept 2 days)
    there.drain()
    (auto,) = dest.replicas()
    assert auto.auto_trigger and auto.retention_rule == "days:2" and auto.expired_at is not None
    assert auto.source_backup_id == first.backups[0].id
    # a manual replica of a second backup: retention leaves it alone
    backup_now(ctx, tenant, v.id)
    src.drain()
    with ctx.read() as s:
        done = set(s.scalars(select(ReplicationRecord.source_backup_id)))
    second = next(b for b in _top_ids(ctx, v.id) if b not in done)
    with ctx.tx() as s:
        replication.copy_backup(s, ctx, tenant, second, {
            "destination_project_id": dest.info.project_id, "destination_region": "region-b",
            "destination_vault_id": dest_vault.id})
    src.drain()
    assert len(dest.replicas()) == 2
    there.run_until(MONDAY + timedelta(days=4, hours=3))  # the destination's scheduler sweeps
    (left,) = dest.replicas()
    assert not left.auto_trigger and left.source_backup_id == second


def _top_ids(ctx, vault_id):
    from tests.support.scheduler import top_backups

    return [b.id for b in top_backups(ctx, vault_id, statuses=("available",))]
