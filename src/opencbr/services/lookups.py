"""The rows every service looks up: a vault or a backup of the project (or 404), a backup's disks.

They sit below the service modules that share them (vaults, policies, backups, restores, files), so
those modules import this one and not each other."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, Vault
from opencbr.domain import resource as R
from opencbr.domain.errors import NotFound


def get_vault(s: Session, project_id: str, vault_id: str, *, for_update: bool = False) -> Vault:
    """A vault of the project, or 404: another project's vault is indistinguishable from none."""
    vault = s.get(Vault, vault_id, with_for_update=for_update) if isinstance(vault_id, str) else None
    if vault is None or vault.project_id != project_id:
        raise NotFound(f"vault {vault_id} not found", code="BackupService.6101")
    return vault


def get_backup(s: Session, project_id: str, backup_id: str, *, for_update: bool = False) -> Backup:
    b = s.get(Backup, backup_id, with_for_update=for_update) if isinstance(backup_id, str) else None
    if b is None or b.project_id != project_id:
        raise NotFound(f"backup {backup_id} not found", code="BackupService.6110")
    return b


def children(s: Session, backup_id: str) -> list[Backup]:
    rows = s.scalars(select(Backup).where(Backup.parent_id == backup_id))
    return sorted(rows, key=lambda c: (c.disk_role != "system", c.device_index or 0))


def data_backups(s: Session, b: Backup) -> list[Backup]:
    """The backups whose data the engine holds: a server backup's disk children, else itself."""
    return children(s, b.id) if b.resource_type == R.SERVER else [b]
