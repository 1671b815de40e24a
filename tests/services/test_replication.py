"""What copy_backup refuses before anything is queued (guide 3.6, 4.4), on a real catalog and worker."""

from __future__ import annotations

import pytest

from opencbr.catalog.models import Backup
from opencbr.domain.errors import InvalidParameter, StateConflict
from opencbr.services import regions, replication, resources, vaults
from tests.support.scheduler import Driver, backup_now, disk, vault

TARGET = {"destination_project_id": "p-remote", "destination_region": "region-b", "destination_vault_id": "v-remote"}
TOKEN = "ocbr-region1.cred.secret." + "ab" * 32


def _server_backup(ctx, tenant, clock, tmp_path, name: str):
    sys_d = disk(ctx, tenant, tmp_path, f"{name}-sys")
    data_d = disk(ctx, tenant, tmp_path, f"{name}-data")
    with ctx.tx() as s:
        srv = resources.register_server(s, ctx, tenant, name=name, system_disk=sys_d.id, data_disks=[data_d.id])
    with ctx.tx() as s:
        v = vaults.create_vault(s, ctx, tenant, {
            "name": f"v-{name}", "billing": {"object_type": "server", "protect_type": "backup", "size": 10},
            "resources": [{"id": srv.id, "type": "OS::Nova::Server", }]}).vault
    cp = backup_now(ctx, tenant, v.id)
    Driver(ctx, clock).drain()
    return cp.backups[0].id


def _copy(ctx, tenant, backup_id: str, **target):
    with ctx.tx() as s:
        return replication.copy_backup(s, ctx, tenant, backup_id, {**TARGET, **target})


def test_what_cannot_be_replicated(ctx, tenant, clock, tmp_path):
    with ctx.tx() as s:
        regions.add_region(s, ctx, "region-b", "127.0.0.1:1", TOKEN)
    whole = _server_backup(ctx, tenant, clock, tmp_path, "web")
    # an unlinked region
    with pytest.raises(InvalidParameter, match="not a linked region"):
        _copy(ctx, tenant, whole, destination_region="elsewhere")
    # a server backup without its system disk
    partial = _server_backup(ctx, tenant, clock, tmp_path, "db")
    with ctx.tx() as s:
        for row in s.query(Backup).filter(Backup.parent_id == partial, Backup.disk_role == "system"):
            s.delete(row)  # (as a backup made with the system disk excluded)
    with pytest.raises(InvalidParameter, match="system disk"):
        _copy(ctx, tenant, partial)
    # a disk backup inside a server backup
    with ctx.read() as s:
        child = s.query(Backup).filter(Backup.parent_id == whole).first().id
    with pytest.raises(InvalidParameter, match="not one of its disks"):
        _copy(ctx, tenant, child)
    # queued once; a second request while it replicates is refused
    out = _copy(ctx, tenant, whole)
    assert out["backup_id"] == whole and out["destination_region"] == "region-b"
    with pytest.raises(StateConflict, match="being replicated"):
        _copy(ctx, tenant, whole)
    # (the task then fails: nothing listens at 127.0.0.1:1) -- with the reason on the record
    Driver(ctx, clock).drain()
    with ctx.read() as s:
        (rec,) = replication.records_of(s, ctx, [whole])[whole]
    assert rec["status"] == "failed" and "cannot be reached" in rec["extra_info"]["fail_reason"]
    # a replication vault's contents cannot be replicated again
    rv = vault(ctx, tenant, "rv", object_type="server", protect_type="replication")
    with ctx.tx() as s:
        with pytest.raises(InvalidParameter, match="cannot be replicated again"):
            replication.copy_checkpoint(s, ctx, tenant, {**TARGET, "vault_id": rv.id})
