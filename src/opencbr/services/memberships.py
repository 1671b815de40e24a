"""The rows of backup sharing (guide 4.2) that other services touch: who may read a backup, what a vault
counts of the backups accepted into it, and what goes when a shared backup or a recipient's vault goes.

A shared backup's data never moves: it stays in the sharer's vault, and a recipient's restores read it
there. The sharer's vault keeps every chunk the backup needs for as long as the backup exists (its GC
removes only chunks no manifest names), and when the sharer deletes the backup its members go with it
(:func:`withdraw`), so no recipient is left naming data that is gone. Disks made from it were copied
out and stay. The use cases (share, accept, reject, cancel) are in ``services/sharing.py``.
"""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from opencbr.catalog.models import Backup, BackupMember, Image, Vault
from opencbr.domain import sharing as S
from opencbr.domain.errors import NotFound


def member_of(s: Session, backup_id: str, project_id: str, *, for_update: bool = False) -> BackupMember | None:
    """The membership of ``project_id`` in the sharing of ``backup_id`` (a top-level backup), if any."""
    q = select(BackupMember).where(BackupMember.backup_id == backup_id, BackupMember.dest_project_id == project_id)
    return s.scalar(q.with_for_update() if for_update else q)


def readable_backup(s: Session, project_id: str, backup_id: object) -> tuple[Backup, Vault]:
    """A backup the project may restore from: its own, or one shared with it and accepted (or a disk of
    such a server backup), with the vault it is in from the project's side (its own vault, or the vault
    it accepted the share into). Anything else is 404, as a backup of another project always is."""
    b = s.get(Backup, backup_id) if isinstance(backup_id, str) else None
    if b is not None and b.project_id == project_id:
        return b, s.get(Vault, b.vault_id)
    top = s.get(Backup, b.parent_id) if b is not None and b.parent_id else b
    m = member_of(s, top.id, project_id) if top is not None else None
    if m is None or m.status != S.ACCEPTED or m.vault_id is None:
        raise NotFound(f"backup {backup_id} not found", code="BackupService.6110")
    return b, s.get(Vault, m.vault_id)


def may_read(s: Session, project_id: str, backup_id: str) -> bool:
    """Whether ``project_id`` may read the data of ``backup_id`` (its own, or shared with it and accepted):
    what creating an image or a disk from a backup asks first."""
    try:
        readable_backup(s, project_id, backup_id)
    except NotFound:
        return False
    return True


def recount(s: Session, vault_ids: set[str | None]) -> None:
    """Each vault's ``shared_bytes`` again: the sizes of the shared backups accepted into it (guide 4.2:
    an accepted backup counts against the recipient's vault)."""
    for vault_id in {v for v in vault_ids if v}:
        vault = s.get(Vault, vault_id)
        if vault is not None:
            s.flush()
            vault.shared_bytes = int(s.scalar(select(func.coalesce(func.sum(BackupMember.size_bytes), 0)).where(
                BackupMember.vault_id == vault_id, BackupMember.status == S.ACCEPTED)) or 0)


def withdraw(s: Session, backup_id: str) -> None:
    """Guide 4.2: when the sharer deletes a shared backup it is deleted from the recipients' accounts too
    (their vaults no longer count it). Called before the backup's row goes."""
    members = list(s.scalars(select(BackupMember).where(BackupMember.backup_id == backup_id)))
    for m in members:
        images_follow(s, m, None)
        s.delete(m)
    recount(s, {m.vault_id for m in members})


def images_follow(s: Session, m: BackupMember, vault_id: str | None) -> None:
    """The recipient's image of a shared backup (guide 4.2: an accepted backup can make servers, through an
    image, 6.2) lives as long as the share stands accepted: it moves with the backup to the vault it is
    accepted into (``vault_id``), and goes when the share is rejected, cancelled or withdrawn (``None``).
    Servers already made from it are the recipient's and stay."""
    for image in s.scalars(select(Image).where(Image.backup_id == m.backup_id, Image.project_id == m.dest_project_id)):
        if vault_id is None:
            s.delete(image)
            m.image_id = ""
        else:
            image.vault_id = vault_id


def release_vault(s: Session, vault_id: str) -> None:
    """A recipient deleted the vault holding accepted shares: they are no longer accepted anywhere, and
    wait again (pending) for the recipient to accept them into another vault or reject them."""
    for m in s.scalars(select(BackupMember).where(BackupMember.vault_id == vault_id)):
        images_follow(s, m, None)
        m.status, m.vault_id = S.PENDING, None


def counted_bytes(vault: Vault) -> int:
    """What counts against a vault's capacity: its own backups' stored bytes and the shared backups it
    accepted."""
    return int(vault.used_bytes or 0) + int(vault.shared_bytes or 0)
