"""Full-server images (guide 6.2, 13.1.4, 13.7.3): which backups may become an image, what an image is
called, and how the disks of a server made from one are named and placed. No I/O.

An image is made from a server backup and copies nothing: its disks are that backup's disk backups. So
the backup stays while the image does (6.2: "A backup with an image created cannot be deleted
directly"; 13.7.3: to drop the backup, make a server from the image, back that server up, image that
backup, then delete the first image), and one image per backup is enough (6.2: "CBR allows you to use a
backup to create only one full-ECS image"); from it, any number of servers.
"""

from __future__ import annotations

import posixpath
import re

from opencbr.domain import resource as R
from opencbr.domain.errors import InvalidParameter, StateConflict

ACTIVE = "active"
MAX_NAME = 128
MAX_DESCRIPTION = 255
_NAME_RE = re.compile(r"^[A-Za-z0-9_.\- ]{1,128}$")
#: What a new server's disk files are called inside the directory a caller names: ``<server>-<n>.img``.
DISK_SUFFIX = ".img"
#: A new disk on an agent's host is an image file its inventory reports: one of these suffixes.
HOST_DISK_SUFFIXES = (".img", ".raw")


def check_image_name(name: object) -> str:
    """An image name: 1 to 128 letters, digits, spaces, ``_``, ``-`` or ``.``, not starting or ending with a
    space (the naming rule of the cloud's image service)."""
    if not isinstance(name, str) or not _NAME_RE.match(name) or name != name.strip():
        raise InvalidParameter("an image name has 1 to 128 letters, digits, spaces, '_', '-' or '.', and does not "
                               "start or end with a space", code="BackupService.6801")
    return name


def check_image_description(description: object) -> str:
    if description is None:
        return ""
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise InvalidParameter(f"an image description has at most {MAX_DESCRIPTION} characters",
                               code="BackupService.6802")
    return description


def check_image_source(*, resource_type: str, is_disk_of_server: bool, status: str, vault_status: str,
                       has_system_disk: bool, has_image: bool) -> None:
    """Guide 6.2 prerequisites and notes, 1.6 (cloud server backup constraints):

    - images are made from cloud server backups only (not disk or file-system backups, nor one disk of a
      server backup);
    - only backups in Available or Locked vaults can be used to create images (1.6);
    - the backup is Available (the "Creating, image can be created" state is not offered: a backup
      being made is not an image source here);
    - the backup contains the system disk;
    - one image per backup.
    Replicas may be used (6.2, 1.6: "Backup replicas ... can be used to create images")."""
    if is_disk_of_server:
        raise InvalidParameter("this is one disk of a server backup; create the image from the server backup",
                               code="BackupService.6803")
    if resource_type != R.SERVER:
        raise InvalidParameter("images are created from cloud server backups only, not from disk or file-system "
                               "backups", code="BackupService.6804")
    if vault_status not in ("available", "locked"):
        raise StateConflict(f"only backups in available or locked vaults can be used to create images; the vault "
                            f"is {vault_status}", code="BackupService.6805")
    if status != "available":
        raise StateConflict(f"only available backups can be used to create images; this one is {status}",
                            code="BackupService.6806")
    if not has_system_disk:
        raise InvalidParameter("the backup does not contain the system disk; an image needs it",
                               code="BackupService.6807")
    if has_image:
        raise StateConflict("an image was already created from this backup (one image per backup); create "
                            "servers from that image", code="BackupService.6808")


def check_image_usable(backup_status: str, vault_status: str) -> None:
    """Servers are made from an image while its backup's data can be read: the vault available or locked
    (1.6), the backup not being deleted."""
    if vault_status not in ("available", "locked"):
        raise StateConflict(f"the vault holding this image's backup is {vault_status}; no server can be made from "
                            "the image now", code="BackupService.6809")
    if backup_status not in ("available", "restoring"):
        raise StateConflict(f"this image's backup is {backup_status}; no server can be made from the image now",
                            code="BackupService.6810")


def new_disk_paths(disk_count: int, *, paths: list | None, directory: object, server_name: str) -> list[str]:
    """Where the disks of a new server go: ``paths`` (one per disk of the image, the system disk first),
    or ``directory``, where they are named ``<server>-1.img`` (system), ``<server>-2.img``, ..."""
    if (paths is None) == (directory is None):
        raise InvalidParameter("give either paths (one per disk of the image, the system disk first) or a "
                               "directory for the new disks", code="BackupService.6811")
    if directory is not None:
        if not isinstance(directory, str) or not directory.startswith("/"):
            raise InvalidParameter("directory must be an absolute path", code="BackupService.6811")
        base = server_name.replace(" ", "_")
        return [posixpath.join(directory, f"{base}-{i + 1}{DISK_SUFFIX}") for i in range(disk_count)]
    if not isinstance(paths, list) or not all(isinstance(x, str) and x.startswith("/") for x in paths):
        raise InvalidParameter("paths must be absolute paths", code="BackupService.6811")
    if len(paths) != disk_count:
        raise InvalidParameter(f"the image has {disk_count} disk(s): give {disk_count} path(s), the system disk's "
                               "first", code="BackupService.6812")
    if len({posixpath.normpath(x) for x in paths}) != len(paths):
        raise InvalidParameter("each new disk needs a path of its own", code="BackupService.6812")
    return list(paths)
