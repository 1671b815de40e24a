"""Browse and restore single files from *disk* backups (beyond guide 13.2.15), without restoring the disk.

Public API::

    from opencbr.engine.diskfs import (DiskBackupView, list_disk_volumes, list_disk_tree, restore_disk_path,
                                       DiskBrowser, Volume, DiskFileRestoreResult)

    view = DiskBackupView(repo.chunks, backup_id)          # seekable read-only file over the backup
    list_disk_volumes(repo, backup_id) -> [Volume(name="p1", fs="ext", offset=..., size=...), ...]
    list_disk_tree(repo, backup_id, "/p1/etc") -> [ListEntry, ...]   # "/etc" on a bare file system
    restore_disk_path(repo, backup_id, "/p1/etc/hosts", "/tmp/out") -> DiskFileRestoreResult

Supported: MBR and GPT partition tables or none; ext2/3/4 and FAT12/16/32 file systems.
"""

from .browse import DiskBrowser, DiskFileRestoreResult, list_disk_tree, list_disk_volumes, restore_disk_path
from .view import DiskBackupView
from .volumes import Volume

__all__ = ["DiskBackupView", "DiskBrowser", "DiskFileRestoreResult", "Volume", "list_disk_tree", "list_disk_volumes",
           "restore_disk_path"]
