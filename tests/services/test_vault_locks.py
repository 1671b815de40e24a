"""Vault locks (docs/vault-lock.md) through the services: who may set, extend, shorten and lift a lock
in each mode; what a lock forbids (a user's delete, retention, dissociation, vault deletion, an earlier
expiry, migration) on catalog rows, on both catalogs; and on real data (SQLite): GC keeps the chunks a
locked backup shares with deleted ones, the store itself refuses to delete it, and a catalog rebuild
restores the lock from the store."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import delete, select

from opencbr.catalog.models import Backup, Vault, VaultLockRow
from opencbr.domain import vault_lock as L
from opencbr.domain.errors import CBRError
from opencbr.engine import Conflict
from opencbr.services import backups, iam, migration, policies, recovery, retention, vault_locks, vaultops, vaults
from opencbr.services.repositories import repository
from opencbr.worker.runner import Worker
from tests.support import scheduler as S
from tests.support.disks import mutate, sha256
from tests.support.services import protected_disk

GOVERNANCE = {"mode": "governance", "retention_days": 30, "lock_days": 60}
COMPLIANCE = {"mode": "compliance", "retention_days": 30, "lock_days": 60}


def refused(code: str, fn, *args, status: int | None = None):
    with pytest.raises(CBRError) as e:
        fn(*args)
    assert e.value.code == code, e.value
    if status is not None:
        assert e.value.status == status
    return e.value


def in_tx(ctx, fn, *args):
    with ctx.tx() as s:
        return fn(s, ctx, *args)


def user(ctx, tenant, name: str, role: str):
    u = iam.create_user(ctx, tenant, name, role)
    return iam.principal_for_user(ctx, u.id, tenant.project_id)


@pytest.fixture()
def vault(ctx, tenant):
    return S.vault(ctx, tenant, "locked")


def test_governance_lock_only_governors_weaken_it(ctx, tenant, vault, clock):
    member, admin = user(ctx, tenant, "m", "member"), user(ctx, tenant, "a2", "admin")
    refused("APIGW.0303", in_tx, ctx, vault_locks.set_lock, member, vault.id, GOVERNANCE)
    view = in_tx(ctx, vault_locks.set_lock, admin, vault.id, GOVERNANCE)
    assert view.active and view.lock.mode == "governance" and view.lock.retention_days == 30
    # stronger is anybody's (who may set locks): longer, more retention, compliance
    in_tx(ctx, vault_locks.set_lock, admin, vault.id, {**GOVERNANCE, "lock_days": 90})
    shorter = {**GOVERNANCE, "lock_days": 10}
    refused(L.GOVERNOR_NEEDED, in_tx, ctx, vault_locks.set_lock, admin, vault.id, shorter, status=403)
    refused(L.GOVERNOR_NEEDED, in_tx, ctx, vault_locks.lift_lock, admin, vault.id)
    refused("APIGW.0303", in_tx, ctx, vault_locks.grant_governor, admin, admin.user_id, True)  # not the operator
    refused(L.GOVERNOR_NOT_ADMIN, in_tx, ctx, vault_locks.grant_governor, tenant, member.user_id, True)
    in_tx(ctx, vault_locks.grant_governor, tenant, admin.user_id, True)
    assert in_tx(ctx, vault_locks.set_lock, admin, vault.id, shorter).lock.until == clock.now + timedelta(days=10)
    in_tx(ctx, vault_locks.lift_lock, admin, vault.id)
    assert not in_tx(ctx, vault_locks.show_lock, admin, vault.id).active
    assert repository(ctx, vault).retention_lock() is None, "lifted in the store too"


def test_compliance_lock_binds_everybody_until_it_ends(ctx, tenant, vault, clock):
    in_tx(ctx, vault_locks.grant_governor, tenant, tenant.user_id, True)  # the operator, a governor even
    in_tx(ctx, vault_locks.set_lock, tenant, vault.id, COMPLIANCE)
    for weaker in ({**COMPLIANCE, "lock_days": 59}, {**COMPLIANCE, "retention_days": 29},
                   {**GOVERNANCE, "lock_days": 90}):
        refused(L.COMPLIANCE_FIXED, in_tx, ctx, vault_locks.set_lock, tenant, vault.id, weaker, status=403)
    refused(L.COMPLIANCE_FIXED, in_tx, ctx, vault_locks.lift_lock, tenant, vault.id)
    longer = in_tx(ctx, vault_locks.set_lock, tenant, vault.id, {**COMPLIANCE, "lock_days": 61})
    assert longer.lock.until == clock.now + timedelta(days=61)
    refused(L.BAD_LOCK, in_tx, ctx, vault_locks.set_lock, tenant, vault.id, {**COMPLIANCE, "mode": "soft"})
    clock.advance(days=62)
    in_tx(ctx, vault_locks.lift_lock, tenant, vault.id)  # ended: anybody who may set locks removes it
    refused(L.NO_LOCK, in_tx, ctx, vault_locks.lift_lock, tenant, vault.id, status=404)


def add_backups(ctx, p, vault, ages_days: list[int], resource_id: str = "disk-1") -> list[str]:
    ids = []
    with ctx.tx() as s:
        for i, age in enumerate(ages_days):
            when = ctx.now() - timedelta(days=age)
            b = Backup(project_id=p.project_id, vault_id=vault.id, name=f"b{i}", resource_id=resource_id,
                       resource_name="disk one", resource_type="OS::Cinder::Volume", status="available",
                       auto_trigger=True, retention_rule="count:1", created_at=when, updated_at=when)
            s.add(b)
            s.flush()
            ids.append(b.id)
    return ids


def status_of(ctx, ids) -> list[str]:
    with ctx.read() as s:
        return [s.get(Backup, i).status for i in ids]


def test_what_a_lock_forbids(ctx, tenant, tmp_path):
    """Backups made within the lock's 30 days cannot go by any path; older ones can."""
    disk, vault = protected_disk(ctx, tenant, tmp_path, seed=40, size=64 << 10)
    other = S.vault(ctx, tenant, "other")
    old, young, newer, newest = add_backups(ctx, tenant, vault, [45, 20, 10, 1], resource_id=disk.id)
    in_tx(ctx, backups.delete_backup, tenant, newest)  # asked before the lock: the delete task keeps it
    in_tx(ctx, vault_locks.set_lock, tenant, vault.id, COMPLIANCE)
    drain(ctx)
    assert status_of(ctx, [newest]) == ["available"]
    refused(L.BACKUP_PROTECTED, in_tx, ctx, backups.delete_backup, tenant, young, status=409)
    refused(L.VAULT_LOCKED, in_tx, ctx, vaults.delete_vault, tenant, vault.id, status=409)
    refused(L.EXPIRY_PROTECTED, in_tx, ctx, vaultops.update_expiration_time, tenant, vault.id,
            (ctx.now() + timedelta(days=2)).date().isoformat(), None)
    refused(L.DISSOCIATION_PROTECTED, in_tx, ctx, vaults.remove_resources, tenant, vault.id, [disk.id])
    refused(L.MIGRATION_PROTECTED, in_tx, ctx, migration.migrate_resources, tenant, vault.id, other.id, [disk.id])
    # retention (keep the newest 2) prunes the old backup, not the protected one it would prune too
    pol = S.policy(ctx, tenant, max_backups=2)
    with ctx.tx() as s:
        policies.associate(s, ctx, tenant, vault.id, pol.id)
    with ctx.tx() as s:
        r = retention.apply_retention(s, ctx, vault.id, disk.id)
    assert [bid for bid, _ in r.deleted] == [old]
    assert status_of(ctx, [old, young, newer, newest]) == ["deleting", "available", "available", "available"]
    # a later expiry is fine (it protects longer)
    in_tx(ctx, vaultops.update_expiration_time, tenant, vault.id, (ctx.now() + timedelta(days=90)).date().isoformat(),
          None)


def drain(ctx) -> None:
    worker = Worker(ctx, "w")
    while worker.run_once():
        pass


@pytest.mark.parametrize("catalog_url", ["sqlite"], indirect=True)
def test_gc_keeps_what_a_locked_backup_shares_and_a_rebuild_keeps_the_lock(ctx, tenant, tmp_path, clock):
    """Two backups of one disk share most chunks. The first is outside the lock's retention and is
    deleted, then GC runs: the second, locked, restores bit-exact; neither the service nor the store
    deletes it; and after its catalog rows are lost, a rebuild brings the lock back."""
    disk, vault = protected_disk(ctx, tenant, tmp_path, seed=41)
    img = tmp_path / "d.img"
    S.backup_now(ctx, tenant, vault.id)
    drain(ctx)
    clock.advance(days=10)
    mutate(img, seed=42)  # a few blocks change: the rest is shared
    expected = sha256(img)
    S.backup_now(ctx, tenant, vault.id)
    drain(ctx)
    first, second = S.top_backups(ctx, vault.id)
    in_tx(ctx, vault_locks.set_lock, tenant, vault.id, {"mode": "compliance", "retention_days": 5, "lock_days": 30})

    in_tx(ctx, backups.delete_backup, tenant, first.id)  # 10 days old: outside the lock's 5
    drain(ctx)  # the delete, then the GC it queues
    repo = repository(ctx, vault)
    assert repo.list_manifests() == [second.id]
    refused(L.BACKUP_PROTECTED, in_tx, ctx, backups.delete_backup, tenant, second.id)
    with pytest.raises(Conflict):
        repo.delete_backup(second.id)  # whatever a catalog says
    with pytest.raises(Conflict):
        repo.destroy()
    repo.export_disk(second.id, str(tmp_path / "out.raw"))
    assert sha256(tmp_path / "out.raw") == expected
    report = repo.verify(second.id)
    assert not report.damaged and not report.missing

    with ctx.tx() as s:  # the catalog loses the vault: its lock and backups go with it
        s.execute(delete(VaultLockRow).where(VaultLockRow.vault_id == vault.id))
        s.execute(delete(Backup).where(Backup.vault_id == vault.id))
        s.execute(delete(Vault).where(Vault.id == vault.id))
    recovery.rebuild_vault(ctx, tenant, vault.id)
    with ctx.read() as s:
        row = s.get(VaultLockRow, vault.id)
        assert (row.mode, row.retention_days) == ("compliance", 5)
        assert [b.id for b in s.scalars(select(Backup).where(Backup.vault_id == vault.id))] == [second.id]
    refused(L.BACKUP_PROTECTED, in_tx, ctx, backups.delete_backup, tenant, second.id)
    refused(L.VAULT_LOCKED, in_tx, ctx, vaults.delete_vault, tenant, vault.id)
    (tmp_path / "out.raw").unlink()


def test_backup_only_role_makes_backups_and_nothing_else(ctx, tenant, tmp_path):
    """The service-level half of docs/roles.md (the API test goes route by route)."""
    disk, vault = protected_disk(ctx, tenant, tmp_path, seed=43, size=64 << 10)
    bot = user(ctx, tenant, "bot", "backup")
    (bid,) = add_backups(ctx, tenant, vault, [40], resource_id=disk.id)
    refused("APIGW.0303", in_tx, ctx, backups.delete_backup, bot, bid, status=403)
    refused("APIGW.0303", in_tx, ctx, backups.create_checkpoint, bot, vault.id, {"retention_duration_days": 1})
    refused("APIGW.0303", in_tx, ctx, vaults.delete_vault, bot, vault.id)
    refused("APIGW.0303", in_tx, ctx, vault_locks.set_lock, bot, vault.id, GOVERNANCE)
    with ctx.tx() as s:
        assert backups.create_checkpoint(s, ctx, bot, vault.id).checkpoint.id
