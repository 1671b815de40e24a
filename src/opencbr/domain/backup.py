"""Backup rules of the guide (chapters 2.4, 4.1, 4.3, 6, 13.2, 13.3.4), in one place."""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Sequence

from opencbr.domain.errors import InvalidParameter, QuotaExceeded, StateConflict

#: Backup statuses as the API names them (guide 4.1 table 4-1: Creating = protecting).
PROTECTING, AVAILABLE, RESTORING, DELETING, ERROR = "protecting", "available", "restoring", "deleting", "error"
STATUSES = (PROTECTING, AVAILABLE, RESTORING, DELETING, ERROR, "waiting_protect", "waiting_delete",
            "waiting_restore")
#: The error code of a backup a verify found damaged (services/verification.py): ``error`` until a verify
#: finds it whole again; retention leaves it alone meanwhile (services/retention.py).
DAMAGED_BY_VERIFY = "BackupService.6630"

MANUAL_PREFIX = "manualbk_"
AUTO_PREFIX = "autobk_"
MAX_NAME = 64
MAX_DESCRIPTION = 255
_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits


def check_backup_name(name: object) -> str:
    """Guide 2.4.1 table 2-2: a backup name has 1 to 64 characters: digits, letters, underscores or
    hyphens."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise InvalidParameter("backup name must be 1 to 64 characters of letters, digits, underscores (_) or "
                               "hyphens (-)", code="BackupService.6401")
    return name


def check_backup_description(description: object) -> str:
    """Guide 2.4.1 table 2-2: a backup description cannot exceed 255 characters."""
    if description is None:
        return ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidParameter("backup description must be at most 255 characters", code="BackupService.6402")
    return description


def default_backup_name(automatic: bool, rng: random.Random | None = None) -> str:
    """Guide 1.1 table 1-2, 1.8.1 and 13.2.3: manual backups are ``manualbk_xxxx`` by default, automatic
    ones ``autobk_xxxx``."""
    r = rng or random.SystemRandom()
    return (AUTO_PREFIX if automatic else MANUAL_PREFIX) + "".join(r.choice(_SUFFIX_ALPHABET) for _ in range(4))


def backup_names(base: str, count: int) -> list[str]:
    """Guide 2.4.1 table 2-2: when several resources are backed up at once, the system adds suffixes to
    their backup names: ``backup-0001``, ``backup-0002``, ..."""
    if count == 1:
        return [base]
    return [f"{base}-{i:04d}" for i in range(1, count + 1)]


def check_deletable(status: str, vault_status: str, used_by_image: bool = False) -> None:
    """Guide 4.3: only Available or Error backups can be deleted; guide 1.6: backups in a Deleting vault
    cannot be deleted; guide 6.2: a backup with an image must lose its image first."""
    if vault_status == "deleting":
        raise StateConflict("backups in a vault that is being deleted cannot be deleted", code="BackupService.6403")
    if status not in (AVAILABLE, ERROR):
        raise StateConflict(f"only available or error backups can be deleted; this one is {status}",
                            code="BackupService.6404")
    if used_by_image:
        raise StateConflict("an image was created from this backup; delete the image first", code="BackupService.6405")


def check_restorable(status: str, vault_status: str, image_type: str = "backup") -> None:
    """Guide 1.6: only backups in Available or Locked vaults can be used to restore data; 4.1: a backup in
    Error cannot be used for restoration; 6.1: a replica cannot be used for restoration."""
    if vault_status not in ("available", "locked"):
        raise StateConflict(f"backups in a vault that is {vault_status} cannot be used to restore data",
                            code="BackupService.6406")
    if status != AVAILABLE:
        raise StateConflict(f"only available backups can be used to restore data; this one is {status}",
                            code="BackupService.6407")
    if image_type == "replication":
        raise StateConflict("a backup replica cannot be used for restoration", code="BackupService.6408")


def check_capacity_allows_backup(used_bytes: int, capacity_gb: int) -> None:
    """Guide 13.3.4: a backup that starts while the vault is just full or too small for it completes,
    but none starts once the usage exceeds the capacity (13.3.2: new backups never overwrite old ones)."""
    if used_bytes > capacity_gb * 1024**3:
        raise QuotaExceeded(
            f"the vault's backups use {used_bytes / 1024**3:.1f} GB, more than its capacity of {capacity_gb} GB; "
            "expand the vault or delete backups before backing up again", code="BackupService.6409")


def check_disk_restore_target(target_status: str, target_size: int, source_size: int, same_disk: bool) -> None:
    """Guide 6.3: a disk backup is restored only to its original disk, which must be Available (stop the
    server and detach the disk first); 13.4.5: the disk may since have grown."""
    if not same_disk:
        raise InvalidParameter("a disk backup can only be restored to its original disk; create a new disk from "
                               "the backup to restore it elsewhere", code="BackupService.6410")
    if target_status != "available":
        raise StateConflict(f"the disk is {target_status}; it must be available (stop the server and detach the "
                            "disk before restoring)", code="BackupService.6411")
    if target_size < source_size:
        raise InvalidParameter("the disk is smaller than the backup's source disk", code="BackupService.6412")


def check_server_restore(server_status: str) -> None:
    """Guide 6.1: data cannot be restored to servers in the Faulty state."""
    if server_status == "faulty":
        raise StateConflict("data cannot be restored to a faulty server", code="BackupService.6413")


def check_server_mapping(source_role: str, source_size: int, target_role: str | None, target_size: int,
                         target_on_server: bool) -> None:
    """Guide 6.1: a server backup is restored to the server's disks; a disk backup goes to a disk of at
    least the original's size, and a data-disk backup never to the system disk."""
    if not target_on_server:
        raise InvalidParameter("the target disk is not attached to the server being restored",
                               code="BackupService.6414")
    if source_role == "data" and target_role == "system":
        raise InvalidParameter("a data disk backup cannot be restored to the system disk", code="BackupService.6415")
    if target_size < source_size:
        raise InvalidParameter("the target disk is smaller than the backed-up disk", code="BackupService.6416")


def check_new_disk_size(requested: int | None, source_size: int) -> int:
    """Guide 6.4 and 1.6: a new disk must be at least as large as the backup's source disk."""
    if requested is None:
        return source_size
    if requested < source_size:
        raise InvalidParameter(f"the new disk must be at least as large as the backup's source disk "
                               f"({source_size} bytes)", code="BackupService.6417")
    return requested


def check_mapping_targets(targets: Sequence[str]) -> None:
    """Guide 13.2.6: one target disk corresponds to one source disk."""
    if len(set(targets)) != len(targets):
        raise InvalidParameter("two backed-up disks cannot be restored to one target disk", code="BackupService.6418")


def check_file_system_restore_target(source_id: str, target_id: object) -> None:
    """Guide 1.6: an SFS Turbo backup cannot be used to restore data to the original file system; it
    restores into a new (empty) one (6.5)."""
    if not target_id or not isinstance(target_id, str):
        raise InvalidParameter("give resource_id: a new, empty file system to restore the backup into (guide 6.5)",
                               code="BackupService.6429")
    if target_id == source_id:
        raise InvalidParameter("a file-system backup cannot be restored to the original file system; create a new "
                               "file system from it (guide 1.6)", code="BackupService.6429")


def check_new_file_system(status: str, empty: bool) -> None:
    """Guide 6.5: the backup's data goes into a new file system: an available, empty one."""
    if status != "available":
        raise StateConflict(f"the target file system is {status}; it must be available", code="BackupService.6438")
    if not empty:
        raise StateConflict("the target file system is not empty; restore into a new, empty one",
                            code="BackupService.6439")


def damaged_chunk_where(chunk: dict) -> str:
    """Where a damaged chunk of a verify or export report is used: its disk offset(s), or the file(s)
    of a file-system backup (a chunk no file uses belongs to the backup's own catalog)."""
    if chunk.get("offsets"):
        more = chunk.get("offsets_count", len(chunk["offsets"])) - 1
        return f"at disk offset {chunk['offsets'][0]}" + (f" (and {more} more)" if more > 0 else "")
    if chunk.get("paths"):
        more = len(chunk["paths"]) - 1
        return f"in file {chunk['paths'][0]}" + (f" (and {more} more)" if more > 0 else "")
    return "in the backup's own catalog"


#: How an export stream says it met a damaged chunk after its first byte: it ends early (shorter than its
#: Content-Length, so every HTTP client sees a cut body) with this tag, the response's ``X-Export-Token``
#: (random per response, so no disk content can forge it) and a JSON object naming the chunk and offset.
EXPORT_DAMAGE_TAG = b"\n#OPENCBR-EXPORT-DAMAGED "


def export_damage_marker(token: str, chunk: dict) -> bytes:
    detail = {"digest": chunk["digest"], "offset": chunk["offsets"][0], "reason": chunk["reason"][:300]}
    return EXPORT_DAMAGE_TAG + token.encode() + b" " + json.dumps(detail).encode() + b"\n"


def find_export_damage(tail: bytes, token: str) -> dict | None:
    """The damage an export stream reported at its end (``tail``: its last bytes), or None. A marker cut
    short (the damaged block was the last, shorter than the marker) gives an empty dict."""
    tag = EXPORT_DAMAGE_TAG + token.encode() + b" "
    at = tail.rfind(tag) if token else -1
    if at < 0:
        return None
    try:
        detail = json.loads(tail[at + len(tag):])
    except ValueError:
        return {}
    return detail if isinstance(detail, dict) else {}


def stored_resource_size(header: dict) -> int:
    """The resource's size as a backup's manifest says it: a disk's size, else the size recorded when the
    backup was asked, else (a tree measured by the backup itself) the bytes it read."""
    meta = header.get("meta") or {}
    return int(header.get("disk_size") or meta.get("resource_size_bytes")
               or (header.get("stats") or {}).get("total_bytes") or 0)
