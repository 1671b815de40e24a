"""Replication policies under the scheduler's fake clock (guide 5.3), with a second installation in this
process (its own catalog and object store, its replication receiver on loopback): each execution
replicates the backups not replicated yet, and a backup is replicated automatically at most once, even
after its replica was deleted in the destination."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Backup, ReplicationRecord
from opencbr.services import iam, regions, resources
from tests.support.regions import start_destination
from tests.support.scheduler import MONDAY, Driver, associate, backup_now, disk, policy, vault


@pytest.fixture()
def destination(tmp_path, clock):
    dest, server = start_destination(tmp_path, clock)
    yield dest.ctx, dest.info, dest.listen
    server.stop()
    dest.ctx.close()


def _replicas(dctx) -> list[Backup]:
    with dctx.read() as s:
        return list(s.scalars(select(Backup).where(Backup.image_type == "replication", Backup.parent_id.is_(None))
                              .order_by(Backup.created_at)))


def test_a_replication_policy_replicates_each_backup_once(ctx, tenant, clock, tmp_path, destination):
    dctx, info, listen = destination
    with dctx.tx() as s:
        token = regions.issue_credential(s, dctx, "local-1").token
    with ctx.tx() as s:
        regions.add_region(s, ctx, "region-b", listen, token)
    dp = iam.principal_for_user(dctx, _admin_user(dctx, info.account_id), info.project_id)
    dest_vault = vault(dctx, dp, "dr", object_type="server", protect_type="replication")

    d = disk(ctx, tenant, tmp_path, "sys")
    with ctx.tx() as s:
        srv = resources.register_server(s, ctx, tenant, name="web", system_disk=d.id)
    v = vault(ctx, tenant, "vsrv", [srv.id], object_type="server", rtype="OS::Nova::Server")
    rep = policy(ctx, tenant, "rep", op="replication", destination_region="region-b",
                 destination_project_id=info.project_id, max_backups=5)
    associate(ctx, tenant, v.id, rep.id, destination_vault_id=dest_vault.id)
    driver = Driver(ctx, clock)
    backup_now(ctx, tenant, v.id)
    driver.drain()
    driver.run_until(MONDAY + timedelta(days=1, hours=3))  # Tuesday 02:00: the first execution
    (first,) = _replicas(dctx)
    assert first.status == "available" and first.auto_trigger
    with dctx.tx() as s:  # the replica is deleted in the destination
        row = s.get(Backup, first.id)
        for c in list(s.scalars(select(Backup).where(Backup.parent_id == row.id))):
            s.delete(c)
        s.flush()
        s.delete(row)
    backup_now(ctx, tenant, v.id)
    driver.drain()
    driver.run_until(MONDAY + timedelta(days=2, hours=3))  # Wednesday 02:00
    # only the new backup: the first one was replicated automatically once already (the once-ever rule)
    (second,) = _replicas(dctx)
    assert second.status == "available" and second.source_backup_id != first.source_backup_id
    with ctx.read() as s:
        recs = list(s.scalars(select(ReplicationRecord).order_by(ReplicationRecord.created_at)))
    assert [(r.status, r.auto_trigger) for r in recs] == [("available", True)] * 2


def _admin_user(dctx, account_id: str) -> str:
    from opencbr.catalog.models import User

    with dctx.read() as s:
        return s.scalar(select(User.id).where(User.account_id == account_id))
