"""Vault locks (WORM; docs/vault-lock.md; the rules are ``domain.vault_lock``): setting, extending and
lifting a vault's lock, the operator's grant of the governor permission, and the checks the deleting
paths call (a user's delete, retention, dissociation, vault deletion, expiry changes, migration).

The lock lives in two places: the catalog row (``VaultLockRow``), which the checks read, and the vault's
repository (``Repository.set_retention_lock``), which refuses to delete protected manifests by itself
and from which a catalog rebuild restores the row. The store is written first: a crash between the two
leaves the store stricter than the catalog, never the other way round.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, User, Vault, VaultLockGovernor, VaultLockRow
from opencbr.domain import vault_lock as L
from opencbr.domain.errors import InvalidParameter, NotFound, StateConflict
from opencbr.engine import Repository
from opencbr.services import engine_errors
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import get_vault
from opencbr.services.principal import Principal
from opencbr.services.repositories import repository


@dataclass
class LockView:
    vault_id: str
    lock: L.VaultLock | None
    active: bool
    set_by: str = ""
    updated_at: datetime | None = None


def lock_of(s: Session, vault_id: str) -> L.VaultLock | None:
    row = s.get(VaultLockRow, vault_id)
    return L.VaultLock(row.mode, row.retention_days, row.until) if row is not None else None


def show_lock(s: Session, ctx: ServiceContext, p: Principal, vault_id: str) -> LockView:
    vault = get_vault(s, p.project_id, vault_id)
    row = s.get(VaultLockRow, vault.id)
    lock = lock_of(s, vault.id)
    return LockView(vault.id, lock, bool(lock and lock.active(ctx.now())), row.set_by if row else "",
                    row.updated_at if row else None)


def is_governor(s: Session, p: Principal) -> bool:
    """The vault lock governor permission: an administrator the operator granted it to."""
    return p.role == "admin" and s.get(VaultLockGovernor, p.user_id) is not None


def set_lock(s: Session, ctx: ServiceContext, p: Principal, vault_id: str, spec: object) -> LockView:
    """Lock the vault, or change its lock: a stronger one by any administrator, a weaker one as
    ``domain.vault_lock.check_change`` allows (governance: governors only; compliance: nobody)."""
    p.require_admin()
    now = ctx.now()
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    if vault.status not in ("available", "locked"):
        raise InvalidParameter(f"vault {vault.name} is {vault.status}", code=L.BAD_LOCK)
    new = L.parse_lock(spec, now)
    L.check_change(lock_of(s, vault.id), new, now, governor=is_governor(s, p))
    _record(ctx, vault, new)
    row = s.get(VaultLockRow, vault.id)
    if row is None:
        row = VaultLockRow(vault_id=vault.id, project_id=vault.project_id, created_at=now)
        s.add(row)
    row.mode, row.retention_days, row.until = new.mode, new.retention_days, new.until
    row.set_by, row.updated_at = p.user_name, now
    s.flush()
    return show_lock(s, ctx, p, vault.id)


def lift_lock(s: Session, ctx: ServiceContext, p: Principal, vault_id: str) -> None:
    """Remove the vault's lock: an ended one by any administrator, a governance one by a governor, a
    compliance one by nobody before it ends."""
    p.require_admin()
    vault = get_vault(s, p.project_id, vault_id, for_update=True)
    L.check_change(lock_of(s, vault.id), None, ctx.now(), governor=is_governor(s, p))
    _record(ctx, vault, None)
    row = s.get(VaultLockRow, vault.id)
    if row is not None:
        s.delete(row)


def _record(ctx: ServiceContext, vault: Vault, lock: L.VaultLock | None) -> None:
    with engine_errors.translated():
        repository(ctx, vault).set_retention_lock(lock)


def grant_governor(s: Session, ctx: ServiceContext, p: Principal, user_id: object, granted: object) -> bool:
    """The operator grants (or withdraws) the governor permission to an administrator of any account."""
    p.require_operator()
    if not isinstance(granted, bool):
        raise InvalidParameter("granted must be true or false", code=L.BAD_LOCK)
    user = s.get(User, user_id) if isinstance(user_id, str) else None
    if user is None:
        raise NotFound(f"user {user_id} not found", code="BackupService.6002")
    if user.role != "admin":
        raise InvalidParameter(f"user {user.name} is not an administrator; only administrators can be "
                               "vault lock governors", code=L.GOVERNOR_NOT_ADMIN)
    row = s.get(VaultLockGovernor, user.id)
    if granted and row is None:
        s.add(VaultLockGovernor(user_id=user.id, granted_by=p.user_name, granted_at=ctx.now()))
    elif not granted and row is not None:
        s.delete(row)
    return granted


# ---------------------------------------------------------------------------- what the lock forbids
def check_backup_deletable(s: Session, ctx: ServiceContext, b: Backup) -> None:
    L.check_backup_deletable(lock_of(s, b.vault_id), b.created_at, ctx.now(), f"backup {b.name}")


def protects(s: Session, ctx: ServiceContext, b: Backup) -> bool:
    lock = lock_of(s, b.vault_id)
    return lock is not None and lock.protects(b.created_at, ctx.now())


def check_vault_deletable(s: Session, ctx: ServiceContext, vault_id: str) -> None:
    L.check_vault_deletable(lock_of(s, vault_id), ctx.now())


def check_expiry(s: Session, ctx: ServiceContext, vault_id: str, backups: list[Backup], expiry: datetime) -> None:
    lock = lock_of(s, vault_id)
    for b in backups:
        L.check_expiry(lock, b.created_at, expiry, ctx.now())


def _first_protected(s: Session, ctx: ServiceContext, vault_id: str, resource_ids: list[str]):
    """(the lock, the first backup of these resources it protects now), or None."""
    lock = lock_of(s, vault_id)
    if lock is None or not lock.active(ctx.now()):
        return None
    for b in s.scalars(select(Backup).where(Backup.vault_id == vault_id, Backup.resource_id.in_(resource_ids),
                                            Backup.parent_id.is_(None))):
        if lock.protects(b.created_at, ctx.now()):
            return lock, b
    return None


def check_dissociation(s: Session, ctx: ServiceContext, vault_id: str, resource_ids: list[str]) -> None:
    """Dissociating a resource deletes its backups (guide 3.3): refused while any of them is protected
    (the binding stays; dissociate once the protection has ended)."""
    found = _first_protected(s, ctx, vault_id, resource_ids)
    if found:
        lock, b = found
        raise StateConflict(f"backup {b.name} of {b.resource_name} is protected by the vault's {lock.mode} "
                            f"lock until {lock.protected_until(b.created_at).isoformat()}Z; dissociating "
                            "the resource would delete it", code=L.DISSOCIATION_PROTECTED)


def check_migration(s: Session, ctx: ServiceContext, vault_id: str, resource_ids: list[str]) -> None:
    """Moving backups to another vault deletes them from this one: refused while any is protected."""
    found = _first_protected(s, ctx, vault_id, resource_ids)
    if found:
        lock, b = found
        raise StateConflict(f"backup {b.name} is protected by the vault's {lock.mode} lock; it cannot leave "
                            "the vault before the protection ends", code=L.MIGRATION_PROTECTED)


# ---------------------------------------------------------------------------- rebuild
def restore_from_store(s: Session, repo: Repository, vault: Vault, now: datetime) -> bool:
    """A catalog rebuild (services/recovery.py) takes the vault's lock back from its repository. Returns
    whether there was one."""
    lock = repo.retention_lock()
    if lock is None:
        return False
    row = s.get(VaultLockRow, vault.id)
    if row is None:
        row = VaultLockRow(vault_id=vault.id, project_id=vault.project_id, created_at=now)
        s.add(row)
    row.mode, row.retention_days, row.until = lock.mode, lock.retention_days, lock.until
    row.set_by, row.updated_at = "rebuilt from the object store", now
    return True
