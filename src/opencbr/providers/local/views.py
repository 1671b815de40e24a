"""All disks of one backup at one point in time, on this machine.

Nothing here can ask what runs on a server to flush its writes (there is no guest agent to freeze a
file system or a database): the local provider's views are crash-consistent at best, and each says
how it was obtained.
"""

from __future__ import annotations

import fcntl
import os
from dataclasses import dataclass

from opencbr.providers.base import PathSwapped
from opencbr.providers.local.opened import OpenedPath
from opencbr.system import beneath

FICLONE = 0x40049409


def reflink(disk: OpenedPath) -> int | None:
    """Clone an opened disk image into a new file beside it sharing its extents (XFS, btrfs, bcachefs):
    an instant, consistent copy. The clone is unlinked at once (only its descriptor, returned, keeps
    it: nothing is left behind whatever happens). None when the file system cannot."""
    name = f".opencbr-snap-{os.getpid()}-{os.urandom(6).hex()}"
    try:
        dfd = beneath.open_at(disk.parent_fd, name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
    except (OSError, PathSwapped):
        return None
    try:
        os.unlink(name, dir_fd=disk.parent_fd)
        fcntl.ioctl(dfd, FICLONE, disk.fd)
        return dfd
    except OSError:
        os.close(dfd)
        return None


@dataclass
class PointInTimeViews:
    """What a backup reads for each disk (open descriptors), and how the point in time was obtained
    (recorded in the backup's details, so a user knows what kind of consistency they have)."""

    sources: list[int]
    method: str
    snapshots: list[int]
    note: str

    def describe(self) -> dict:
        return {"method": self.method, "note": self.note}

    def close(self) -> None:
        """Snapshots are kept only for the backup (guide 1.1: CBR keeps no more than it needs)."""
        for fd in self.snapshots:
            os.close(fd)
        self.snapshots = []


def point_in_time_views(disks: list[OpenedPath], *, server_running: bool) -> PointInTimeViews:
    """All disks of one backup at one point in time (a server's disks together, guide 13.1.5):

    - ``stopped``: the server is stopped, nothing writes its disks, they are read in place;
    - ``reflink-snapshot``: every disk image is cloned (FICLONE) next to itself first, all within
      milliseconds, and the clones are read: crash-consistent across the disks;
    - ``live``: the server runs and its disks cannot be cloned (ext4 images, block devices): they are
      read as they are, so blocks written during the backup may come from different moments (guide
      13.2.1 advises backing up at quiet times or stopping the server for strict consistency).
    """
    fds = [d.fd for d in disks]
    if not server_running:
        return PointInTimeViews(fds, "stopped", [], "the disks were not in use by a running server")
    snaps: list[int] = []
    for disk in disks:
        snap = reflink(disk)
        if snap is None:
            for made in snaps:
                os.close(made)
            return PointInTimeViews(fds, "live",
                                    [], "the server was running and its disks cannot be cloned on this file system; "
                                        "they were read live (crash-consistent per block only)")
        snaps.append(snap)
    return PointInTimeViews(list(snaps), "reflink-snapshot", snaps,
                            "all disks were cloned (reflink) at one moment and the clones were backed up")
