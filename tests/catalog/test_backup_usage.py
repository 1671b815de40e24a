"""``backup_usage`` (migration 0016) is kept by the database itself: after any insert, update or delete of
backups -- including a cascade from a deleted vault -- it holds exactly the counts and sizes a GROUP BY over
the backups gives. Both catalogs (each has its own triggers)."""

from __future__ import annotations

from sqlalchemy import delete, func, select, update

from opencbr.catalog.models import Backup, BackupUsage, Vault
from opencbr.services import backups, vaults


def _truth(s) -> dict:
    rows = s.execute(select(Backup.vault_id, Backup.resource_id, Backup.status, func.count(),
                            func.sum(Backup.added_bytes)).where(Backup.parent_id.is_(None))
                     .group_by(Backup.vault_id, Backup.resource_id, Backup.status))
    return {(v, r, st): (n, int(size)) for v, r, st, n, size in rows}


def _kept(s) -> dict:
    rows = s.scalars(select(BackupUsage).where(BackupUsage.backup_count != 0))
    return {(u.vault_id, u.resource_id, u.status): (u.backup_count, u.backup_bytes) for u in rows}


def _vault(ctx, tenant, name: str) -> str:
    with ctx.tx() as s:
        return vaults.create_vault(s, ctx, tenant, {"name": name, "billing": {
            "object_type": "disk", "protect_type": "backup", "size": 10}}).vault.id


def _backup(tenant, vault_id: str, resource_id: str, added: int, **kw) -> Backup:
    return Backup(**{"project_id": tenant.project_id, "vault_id": vault_id, "name": "b", "resource_id": resource_id,
                     "resource_name": f"name-{resource_id}", "resource_type": "OS::Cinder::Volume",
                     "status": "available", "added_bytes": added, **kw})


def test_backup_usage_follows_every_change_of_the_backups(ctx, tenant):
    v1, v2 = _vault(ctx, tenant, "one"), _vault(ctx, tenant, "two")
    with ctx.tx() as s:
        rows = [_backup(tenant, v1, "r1", 10), _backup(tenant, v1, "r1", 20), _backup(tenant, v1, "r2", 5),
                _backup(tenant, v2, "r3", 7, status="protecting")]
        s.add_all(rows)
        s.flush()
        s.add(_backup(tenant, v1, "r1", 1000, parent_id=rows[0].id))  # a disk of a server backup: not counted
    ids = [b.id for b in rows]
    with ctx.tx() as s:
        assert _kept(s) == _truth(s) == {(v1, "r1", "available"): (2, 30), (v1, "r2", "available"): (1, 5),
                                         (v2, "r3", "protecting"): (1, 7)}
    steps = [
        update(Backup).where(Backup.id == ids[3]).values(status="available", added_bytes=70),  # published
        update(Backup).where(Backup.id == ids[1]).values(status="deleting"),
        update(Backup).where(Backup.id == ids[2]).values(vault_id=v2),  # moved (migrate_vault_resource)
        update(Backup).where(Backup.id == ids[0]).values(name="renamed"),  # not a tracked column
        delete(Backup).where(Backup.id == ids[1]),
    ]
    for step in steps:
        with ctx.tx() as s:
            s.execute(step)
        with ctx.tx() as s:
            assert _kept(s) == _truth(s), step
    with ctx.tx() as s:
        assert s.scalar(select(func.count()).select_from(BackupUsage)) == len(_truth(s))  # no rows left at zero
        s.execute(delete(Vault).where(Vault.id == v1))  # cascades to its backups
    with ctx.tx() as s:
        assert _kept(s) == _truth(s) == {(v2, "r2", "available"): (1, 5), (v2, "r3", "available"): (1, 70)}

    # What the lists read from it: totals by vault, resource and status, and the storage usage pages.
    v1 = _vault(ctx, tenant, "three")
    with ctx.tx() as s:
        s.execute(delete(Backup))
        s.add_all([_backup(tenant, v1, "r1", 10), _backup(tenant, v1, "r1", 20, status="error"),
                   _backup(tenant, v2, "r1", 1), _backup(tenant, v2, "r2", 5)])
    with ctx.read() as s:
        count = lambda **kw: backups.list_backups(s, tenant, backups.BackupFilter(**kw), limit=1)[1]  # noqa: E731
        assert (count(), count(vault_id=v1), count(resource_id="r1"), count(statuses=["error"]),
                count(vault_id=v2, statuses=["available", "error"]), count(name="b")) == (4, 2, 3, 1, 2, 4)
        page, total = backups.resource_usage(s, tenant, limit=1, offset=1)
        assert total == 2 and page == [{"resource_id": "r2", "resource_name": "name-r2",
                                        "resource_type": "OS::Cinder::Volume", "backup_count": 1, "backup_bytes": 5}]
        assert backups.resource_usage(s, tenant, resource_id="r1")[0][0]["backup_count"] == 3
