"""The ``local`` provider: disks, servers and file systems on the machines that run OpenCBR workers.

A disk is a raw image file or a block device; a file system is a directory tree; a server is a named
set of disks with a power state kept in the catalog. This module only looks at the real objects
(sizes, existence); what they are called and who owns them is the catalog's business.
"""

from __future__ import annotations

import fcntl
import os
import stat
import struct
from dataclasses import dataclass

from opencbr.domain.errors import InvalidParameter

_BLKGETSIZE64 = 0x80081272


@dataclass(frozen=True)
class DiskProbe:
    path: str
    size_bytes: int
    is_block_device: bool


def _real(path: str) -> str:
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidParameter("path must be a non-empty string")
    if not os.path.isabs(path):
        raise InvalidParameter(f"path must be absolute: {path!r}")
    return os.path.realpath(path)


def check_allowed(path: str, roots: tuple[str, ...]) -> None:
    """Operators may confine resources to some directories (setting ``resource_roots``)."""
    if roots and not any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots):
        raise InvalidParameter(f"{path} is outside the directories this service may protect: {', '.join(roots)}")


def block_device_size(path: str) -> int:
    with open(path, "rb") as f:
        buf = fcntl.ioctl(f.fileno(), _BLKGETSIZE64, b"\0" * 8)
    return struct.unpack("Q", buf)[0]


def probe_disk(path: str) -> DiskProbe:
    """The real size of a disk image file or block device; 400 when it is neither."""
    real = _real(path)
    try:
        st = os.stat(real)
    except OSError as e:
        raise InvalidParameter(f"cannot open disk {path}: {e.strerror}") from None
    if stat.S_ISREG(st.st_mode):
        if not os.access(real, os.R_OK):
            raise InvalidParameter(f"disk {path} is not readable by the service")
        return DiskProbe(real, st.st_size, False)
    if stat.S_ISBLK(st.st_mode):
        try:
            return DiskProbe(real, block_device_size(real), True)
        except OSError as e:
            raise InvalidParameter(f"cannot read the size of block device {path}: {e.strerror}") from None
    raise InvalidParameter(f"{path} is neither a regular file (disk image) nor a block device")


def probe_directory(path: str) -> tuple[str, int]:
    """A file system root: must be a readable directory. Returns its real path and the bytes its
    regular files hold (apparent sizes, each hard-linked file once)."""
    real = _real(path)
    if not os.path.isdir(real):
        raise InvalidParameter(f"{path} is not a directory")
    if not os.access(real, os.R_OK | os.X_OK):
        raise InvalidParameter(f"directory {path} is not readable by the service")
    return real, tree_size(real)


def tree_size(root: str) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(e.path)
                    elif stat.S_ISREG(st.st_mode):
                        if st.st_nlink > 1:
                            key = (st.st_dev, st.st_ino)
                            if key in seen:
                                continue
                            seen.add(key)
                        total += st.st_size
        except OSError:
            continue
    return total


def directory_is_empty(path: str) -> bool:
    try:
        with os.scandir(path) as it:
            return next(it, None) is None
    except OSError:
        return False


def disk_present(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)


def directory_present(path: str) -> bool:
    return os.path.isdir(path)


def current_size(path: str) -> int:
    """The size of a disk as it is now (image files grow, devices get replaced)."""
    try:
        return probe_disk(path).size_bytes
    except InvalidParameter:
        return 0


# ------------------------------------------------------------------------------------ point in time
FICLONE = 0x40049409


def reflink(src: str, dst: str) -> bool:
    """Clone ``src`` into a new file ``dst`` sharing its extents (XFS, btrfs, bcachefs): an instant,
    consistent copy. False (and nothing left behind) when the file system cannot."""
    try:
        sfd = os.open(src, os.O_RDONLY)
    except OSError:
        return False
    try:
        dfd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError:
        os.close(sfd)
        return False
    try:
        fcntl.ioctl(dfd, FICLONE, sfd)
        return True
    except OSError:
        os.close(dfd)
        dfd = -1
        os.unlink(dst)
        return False
    finally:
        os.close(sfd)
        if dfd >= 0:
            os.close(dfd)


@dataclass
class PointInTimeViews:
    """What a backup reads for each disk, and how the point in time was obtained (recorded in the
    backup's details, so a user knows what kind of consistency they have)."""

    sources: list[str]
    method: str
    snapshots: list[str]
    note: str

    def describe(self) -> dict:
        return {"method": self.method, "note": self.note}

    def close(self) -> None:
        """Snapshots are kept only for the backup (guide 1.1: CBR keeps no more than it needs)."""
        for snap in self.snapshots:
            try:
                os.unlink(snap)
            except FileNotFoundError:
                pass


def point_in_time_views(paths: list[str], *, server_running: bool) -> PointInTimeViews:
    """All disks of one backup at one point in time (a server's disks together, guide 13.1.5):

    - ``stopped``: the server is stopped, nothing writes its disks, they are read in place;
    - ``reflink-snapshot``: every disk image is cloned (FICLONE) next to itself first, all within
      milliseconds, and the clones are read: crash-consistent across the disks;
    - ``live``: the server runs and its disks cannot be cloned (ext4 images, block devices): they are
      read as they are, so blocks written during the backup may come from different moments (guide
      13.2.1 advises backing up at quiet times or stopping the server for strict consistency).
    """
    if not server_running:
        return PointInTimeViews(list(paths), "stopped", [], "the disks were not in use by a running server")
    snaps: list[str] = []
    for path in paths:
        snap = os.path.join(os.path.dirname(path), f".opencbr-snap-{os.getpid()}-{os.urandom(6).hex()}")
        if not reflink(path, snap):
            for made in snaps:
                os.unlink(made)
            return PointInTimeViews(list(paths), "live",
                                    [], "the server was running and its disks cannot be cloned on this file system; "
                                        "they were read live (crash-consistent per block only)")
        snaps.append(snap)
    return PointInTimeViews(snaps, "reflink-snapshot", snaps,
                            "all disks were cloned (reflink) at one moment and the clones were backed up")
