"""Queueing the deletion of a backup: it turns ``deleting`` and a ``delete`` task (``backups.run_delete``)
removes its data, then its rows. The user (guide 4.3), retention (guide 5.2), dissociating a resource
(guide 3.3) and deleting a vault all queue deletions here."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, Vault
from opencbr.domain import backup as B
from opencbr.domain import resource as R
from opencbr.domain.errors import StateConflict
from opencbr.services import tasks, vault_locks
from opencbr.services.context import ServiceContext
from opencbr.services.lookups import children


def queue_delete(s: Session, project_id: str, b: Backup, vault: Vault, now: datetime, *, request_id: str = "",
                 reason: str = "") -> str:
    for row in [b, *children(s, b.id)]:
        row.status, row.updated_at = B.DELETING, now
    task = tasks.new_task(s, project_id=project_id, operation_type="delete", now=now, vault_id=vault.id,
                          vault_name=vault.name, resource_id=b.resource_id, resource_name=b.resource_name,
                          resource_type=b.resource_type, provider_id=R.PROVIDER_ID.get(b.resource_type, ""),
                          request_id=request_id, params={"backup_id": b.id}, max_attempts=5,
                          extra_info={"delete": {"backup_id": b.id, "backup_name": b.name},
                                      **({"reason": reason} if reason else {})})
    return task.id


def queue_delete_for_system(s: Session, ctx: ServiceContext, b: Backup, reason: str) -> str | None:
    """Delete a backup on the system's behalf (retention, dissociation). Skips ones not deletable now,
    and ones the vault's lock protects (retention never prunes them; docs/vault-lock.md)."""
    vault = s.get(Vault, b.vault_id)
    try:
        B.check_deletable(b.status, vault.status, b.used_by_image)
    except StateConflict:
        return None
    if vault_locks.protects(s, ctx, b):
        return None
    return queue_delete(s, b.project_id, b, vault, ctx.now(), reason=reason)
