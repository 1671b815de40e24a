"""The rows every service looks up: a vault or a backup of the project (or 404), a backup's disks.

They sit below the service modules that share them (vaults, policies, backups, restores, files), so
those modules import this one and not each other."""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, Vault
from opencbr.domain import resource as R
from opencbr.domain.errors import NotFound

T = TypeVar("T")


def project_row(s: Session, model: type[T], project_id: str, row_id: object, *, what: str, code: str,
                for_update: bool = False) -> T:
    """A row of the project, or 404: another project's row is indistinguishable from none."""
    row = s.get(model, row_id, with_for_update=for_update) if isinstance(row_id, str) else None
    if row is None or row.project_id != project_id:
        raise NotFound(f"{what} {row_id} not found", code=code)
    return row


def get_vault(s: Session, project_id: str, vault_id: str, *, for_update: bool = False) -> Vault:
    return project_row(s, Vault, project_id, vault_id, what="vault", code="BackupService.6101",
                       for_update=for_update)


def get_backup(s: Session, project_id: str, backup_id: str, *, for_update: bool = False) -> Backup:
    return project_row(s, Backup, project_id, backup_id, what="backup", code="BackupService.6110",
                       for_update=for_update)


def children(s: Session, backup_id: str) -> list[Backup]:
    rows = s.scalars(select(Backup).where(Backup.parent_id == backup_id))
    return sorted(rows, key=lambda c: (c.disk_role != "system", c.device_index or 0))


def data_backups(s: Session, b: Backup) -> list[Backup]:
    """The backups whose data the engine holds: a server backup's disk children, else itself."""
    return children(s, b.id) if b.resource_type == R.SERVER else [b]

