"""The guide's replication rules that only the destination can check (3.6, 4.4) are answered on the
POST, before anything is queued: the destination vault (a replication vault of the right kind, with
room, in a project of the tenant's account) and one replica per backup per region. (A destination that
cannot be reached is no answer: the replication is queued and its task fails with the reason, as
tests/services/test_replication.py shows.)"""

from __future__ import annotations

import pytest
from sqlalchemy import select

from opencbr.catalog.models import Backup, ReplicationRecord, Vault
from opencbr.domain.errors import CBRError
from opencbr.services import iam, replication, resources
from tests.support.regions import start_destination
from tests.support.scheduler import Driver, backup_now, vault


@pytest.fixture()
def dest(ctx, tmp_path, clock):
    d, server = start_destination(tmp_path, clock)
    d.link_from(ctx)
    yield d
    server.stop()
    d.ctx.close()


def _disk_backup(ctx, tenant, clock, tmp_path) -> str:
    img = tmp_path / "d.img"
    img.write_bytes(b"x" * 4096 + bytes(65536))
    with ctx.tx() as s:
        d = resources.register_disk(s, ctx, tenant, name="d", path=str(img))
    v = vault(ctx, tenant, "src", [d.id])
    backup_now(ctx, tenant, v.id)
    Driver(ctx, clock).drain()
    with ctx.read() as s:
        return s.scalar(select(Backup.id).where(Backup.vault_id == v.id)), v.id


def _copy(ctx, tenant, backup_id, dest, vault_id, project_id=None):
    with ctx.tx() as s:
        return replication.copy_backup(s, ctx, tenant, backup_id, {
            "destination_project_id": project_id or dest.info.project_id, "destination_region": "region-b",
            "destination_vault_id": vault_id})


def _refused(fn) -> CBRError:
    with pytest.raises(CBRError) as e:
        fn()
    return e.value


def _records(ctx) -> list[ReplicationRecord]:
    with ctx.read() as s:
        return list(s.scalars(select(ReplicationRecord).order_by(ReplicationRecord.created_at)))


def test_the_destination_refuses_up_front(ctx, tenant, clock, tmp_path, dest):
    bid, src_vault = _disk_backup(ctx, tenant, clock, tmp_path)
    dp = dest.principal()
    server_kind = vault(dest.ctx, dp, "dr-srv", object_type="server", protect_type="replication")
    plain = vault(dest.ctx, dp, "backup-kind", protect_type="backup")
    dv = vault(dest.ctx, dp, "dr", protect_type="replication")
    e = _refused(lambda: _copy(ctx, tenant, bid, dest, server_kind.id))
    assert e.status == 400 and "holds server backups" in e.message and "region-b" in e.message
    e = _refused(lambda: _copy(ctx, tenant, bid, dest, plain.id))
    assert e.status == 400 and "not a replication vault" in e.message
    _acct, other, _u, _k = iam.create_account(dest.ctx, "someone-else")
    e = _refused(lambda: _copy(ctx, tenant, bid, dest, dv.id, project_id=other.id))
    assert e.status == 403 and "not a project of the source tenant's account" in e.message
    with dest.ctx.tx() as s:  # the destination vault without room (its usage above its capacity)
        full = s.get(Vault, dv.id)
        full.used_bytes = full.size_gb * 1024**3 + 1
    e = _refused(lambda: _copy(ctx, tenant, bid, dest, dv.id))
    assert e.status == 400 and e.code == "BackupService.6409"
    assert _records(ctx) == []  # nothing was queued
    with dest.ctx.tx() as s:
        s.get(Vault, dv.id).used_bytes = 0
    _copy(ctx, tenant, bid, dest, dv.id)
    Driver(ctx, clock).drain()
    assert [r.status for r in _records(ctx)] == ["available"]
    # one replica per backup per region: refused on the POST, and skipped by a vault replication
    e = _refused(lambda: _copy(ctx, tenant, bid, dest, dv.id))
    assert e.status == 409 and "has a replica in region region-b already" in e.message
    with ctx.tx() as s:
        s.get(ReplicationRecord, _records(ctx)[0].id).status = "failed"  # (as if the source lost track)
    with ctx.tx() as s:
        out = replication.copy_checkpoint(s, ctx, tenant, {
            "vault_id": src_vault, "destination_project_id": dest.info.project_id,
            "destination_region": "region-b", "destination_vault_id": dv.id})
    assert out["backups"] == []
    # once the replica is deleted there, the backup is replicated again
    with dest.ctx.tx() as s:
        s.delete(s.scalars(select(Backup).where(Backup.vault_id == dv.id)).one())
    _copy(ctx, tenant, bid, dest, dv.id)
    Driver(ctx, clock).drain()
    assert [r.status for r in _records(ctx)] == ["failed", "available"]

