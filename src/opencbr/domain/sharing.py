"""The rules of sharing backups between projects (guide 4.2), in one place. No I/O: the services load
the facts and call these."""

from __future__ import annotations

from opencbr.domain.errors import InvalidParameter, QuotaExceeded, StateConflict
from opencbr.domain.resource import DISK, SERVER

PENDING, ACCEPTED, REJECTED = "pending", "accepted", "rejected"
MEMBER_STATUSES = (PENDING, ACCEPTED, REJECTED)

#: Guide 4.2: "A backup can be shared to a maximum of 10 projects."
MAX_MEMBERS = 10

#: list_backups ``own_type``: the project's own backups (default), those shared with it, or both.
OWN_TYPES = ("private", "shared", "all_granted")

#: Guide 4.2: server and disk backups are shared (shared backups create servers or disks); the vault that
#: accepts one protects the same kind of resource.
_VAULT_OBJECT_TYPE = {SERVER: "server", DISK: "disk"}


def check_shareable(resource_type: str, status: str, encrypted: bool, is_disk_of_server: bool) -> None:
    """Guide 4.2: only server and disk backups can be shared, and encrypted backups cannot be; a backup is
    shared once it is complete (available), and a server backup is shared whole, not disk by disk."""
    if is_disk_of_server:
        raise InvalidParameter("this is one disk of a server backup; share the server backup",
                               code="BackupService.6701")
    if resource_type not in _VAULT_OBJECT_TYPE:
        raise InvalidParameter("only server and disk backups can be shared (guide 4.2)", code="BackupService.6702")
    if encrypted:
        raise InvalidParameter("encrypted backups cannot be shared (guide 4.2): the backup is of an encrypted disk",
                               code="BackupService.6703")
    if status != "available":
        raise StateConflict(f"only available backups can be shared; this one is {status}",
                            code="BackupService.6704")


def check_recipient(sharer_project_id: str, sharer_region: str, dest_project_id: str, dest_region: str) -> None:
    """Guide 4.2: backups are shared with other projects, in the same region only."""
    if dest_project_id == sharer_project_id:
        raise InvalidParameter("a backup cannot be shared with its own project", code="BackupService.6705")
    if dest_region != sharer_region:
        raise InvalidParameter(f"backups are shared within one region only (guide 4.2); project {dest_project_id} "
                               f"is in {dest_region}, the backup in {sharer_region}", code="BackupService.6706")


def check_member_count(existing: int, added: int) -> None:
    """Guide 4.2: a backup can be shared to a maximum of 10 projects."""
    if existing + added > MAX_MEMBERS:
        raise QuotaExceeded(f"a backup can be shared with at most {MAX_MEMBERS} projects (guide 4.2); it is shared "
                            f"with {existing}, {added} more asked", code="BackupService.6707")


def check_member_status(status: object) -> str:
    """A recipient answers a share by accepting or rejecting it."""
    if status not in (ACCEPTED, REJECTED):
        raise InvalidParameter("status must be accepted or rejected", code="BackupService.6708")
    return status


def check_accepting_vault(backup_type: str, object_type: str, protect_type: str, vault_status: str,
                          free_bytes: int, backup_bytes: int) -> None:
    """Guide 4.2 (recipient): the accepted backup is stored in one of the recipient's backup vaults, whose
    remaining space must be greater than the backup's size; a vault holds the kind of backup it protects."""
    wanted = _VAULT_OBJECT_TYPE[backup_type]
    if protect_type != "backup" or object_type != wanted:
        raise InvalidParameter(f"a shared {wanted} backup is accepted into a {wanted} backup vault; this vault is a "
                               f"{object_type} {protect_type} vault", code="BackupService.6709")
    if vault_status != "available":
        raise StateConflict(f"the vault is {vault_status}; accept the backup into an available vault",
                            code="BackupService.6710")
    if free_bytes <= backup_bytes:
        raise QuotaExceeded(f"the vault's remaining space ({free_bytes / 1024**3:.2f} GB) must be greater than the "
                            f"size of the backup ({backup_bytes / 1024**3:.2f} GB) (guide 4.2); expand the vault or "
                            "choose another", code="BackupService.6711")


def check_own_type(own_type: object) -> str:
    if own_type in (None, ""):
        return "private"
    if own_type not in OWN_TYPES:
        raise InvalidParameter(f"own_type must be one of {', '.join(OWN_TYPES)}")
    return own_type
