"""The ``local`` provider: disks, servers and file systems on the machines that run OpenCBR workers.

A disk is a raw image file or a block device; a file system is a directory tree; a server is a named
set of disks with a power state kept in the catalog. This module only looks at the real objects
(sizes, existence, identity); what they are called and who owns them is the catalog's business.
Every backup, restore or measurement opens a resource's path with :func:`open_resource_path`: the
path is checked again each time, never through a symlink, and must still be the registered object.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import struct
import time
from dataclasses import dataclass

from opencbr.domain.errors import InvalidParameter
from opencbr.providers import beneath
from opencbr.providers.beneath import PathSwapped

_BLKGETSIZE64 = 0x80081272


def normal_path(path: object) -> str:
    """A path as the user gave it, made absolute-normal (``//a/./b/`` -> ``/a/b``) without touching the
    disk: what permissions are checked on before anything is looked up (no existence oracle)."""
    if not isinstance(path, str) or not path or "\x00" in path:
        raise InvalidParameter("path must be a non-empty string")
    if not os.path.isabs(path):
        raise InvalidParameter(f"path must be absolute: {path!r}")
    return "/" + os.path.normpath(path).lstrip("/")


def within(path: str, top: str) -> bool:
    """``path`` is ``top`` or lies below it, compared component-wise on normal paths (``/a/fsx`` is not
    below ``/a/fs``)."""
    return path == top or path.startswith(top.rstrip("/") + "/")


def overlaps(a: str, b: str) -> bool:
    """One of two normal paths contains the other (or they are equal)."""
    return within(a, b) or within(b, a)


def ancestors(path: str) -> list[str]:
    """Every directory above a normal path, ``/`` first."""
    out, cur = [], path
    while cur != "/":
        cur = os.path.dirname(cur)
        out.append(cur)
    return out[::-1]


def check_allowed(path: str, roots: tuple[str, ...]) -> None:
    """Operators may confine resources to some directories (setting ``resource_roots``)."""
    if roots and not any(within(path, r) for r in _root_forms(roots)):
        raise InvalidParameter(f"{path} is outside the directories this service may protect: {', '.join(roots)}")


def _root_forms(roots: tuple[str, ...]) -> list[str]:
    """A root as configured and as it resolves (an operator may name a root through a symlink)."""
    forms = []
    for r in roots:
        forms += [normal_path(r), os.path.realpath(r)]
    return forms


# ------------------------------------------------------------------------------------ safe opens
DISK, DIRECTORY = "disk", "directory"


@dataclass
class OpenedPath:
    """A resource path opened by :func:`open_resource_path`: ``fd`` is the object itself (checked),
    ``parent_fd`` the directory holding it (for snapshots beside a disk, or removing what was made)."""

    path: str
    kind: str
    fd: int
    parent_fd: int
    name: str
    created: bool = False

    def stat(self) -> os.stat_result:
        return os.fstat(self.fd)

    def fd_path(self) -> str:
        return beneath.fd_path(self.fd)

    def remove_created(self) -> None:
        """Take away what this open created (a new disk image, a new directory with what was put in it),
        by name in its directory, and only if the name still holds that object."""
        if not self.created:
            return
        mine = os.fstat(self.fd)
        try:
            there = os.lstat(self.name, dir_fd=self.parent_fd)
        except FileNotFoundError:
            return
        if (there.st_dev, there.st_ino) != (mine.st_dev, mine.st_ino):
            return
        if stat.S_ISDIR(there.st_mode):
            shutil.rmtree(self.name, dir_fd=self.parent_fd, ignore_errors=True)
        else:
            os.unlink(self.name, dir_fd=self.parent_fd)

    def close(self) -> None:
        for fd in (self.fd, self.parent_fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.parent_fd = -1

    def __enter__(self) -> OpenedPath:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _split_root(path: str, roots: tuple[str, ...]) -> tuple[str, str]:
    """The trusted directory a path is opened from (the deepest root holding it; ``/`` without
    roots) and the rest of the path, which must hold no symlink."""
    tops = [t for t in (_root_forms(roots) if roots else ["/"]) if within(path, t)]
    if not tops:
        raise PathSwapped(f"{path} is outside the directories this service may protect: {', '.join(roots)}")
    top = max(tops, key=len)
    return top, os.path.relpath(path, top)


def open_resource_path(path: str, kind: str, roots: tuple[str, ...], identity: dict | None = None, *,
                       write: bool = False, create: bool = False) -> OpenedPath:
    """Open a disk (image file or block device) or a directory at ``path`` for a backup, a restore or
    a measurement: re-checked against ``roots`` every time, no symlink followed from the root down
    (see :mod:`opencbr.providers.beneath`), of the right kind, and -- given the ``identity`` recorded
    at registration -- the same object. ``create`` makes a new image file (``O_EXCL``) or directory.
    Raises PathSwapped (refused), FileNotFoundError (missing), OSError (other failures)."""
    top, rel = _split_root(normal_path(path), roots)
    parent_rel, name = os.path.split(rel)
    parent_fd = beneath.open_below(top, parent_rel or ".", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fd, created = _open_final(parent_fd, name, kind, write, create, os.path.join(top, parent_rel))
        try:
            st = os.fstat(fd)
            _check_kind(path, kind, st)
            check_identity(path, identity, fd)
        except BaseException:
            os.close(fd)
            raise
    except BaseException:
        os.close(parent_fd)
        raise
    return OpenedPath(path, kind, fd, parent_fd, name, created)


def _open_final(parent_fd: int, name: str, kind: str, write: bool, create: bool, where: str) -> tuple[int, bool]:
    if kind == DIRECTORY:
        made = False
        if create:
            try:
                os.mkdir(name, 0o777, dir_fd=parent_fd)
                made = True
            except FileExistsError:
                pass
        return beneath.open_at(parent_fd, name, os.O_RDONLY | os.O_DIRECTORY, where=where), made
    flags = (os.O_RDWR if write or create else os.O_RDONLY) | os.O_NONBLOCK  # (a fifo put there must not block us)
    fd = beneath.open_at(parent_fd, name, flags | (os.O_CREAT | os.O_EXCL if create else 0), 0o600, where=where)
    os.set_blocking(fd, True)
    return fd, create


def _check_kind(path: str, kind: str, st: os.stat_result) -> None:
    if kind == DIRECTORY and not stat.S_ISDIR(st.st_mode):
        raise PathSwapped(f"{path} is not a directory")
    if kind == DISK and not (stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)):
        raise PathSwapped(f"{path} is neither a regular file (disk image) nor a block device")


# ------------------------------------------------------------------------------------ identity
_FINGERPRINT_SPAN = 4096


def identity_of(fd: int) -> dict:
    """What the object open on ``fd`` is: kind, and what tells it from another object at the same path
    (a file or directory: its file system and inode; a block device: its device number), plus a cheap
    fingerprint of a disk's content (size and a hash of its first and last 4 KiB)."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        ident = {"kind": "block-device", "rdev": st.st_rdev, "size": os.lseek(fd, 0, os.SEEK_END)}
    else:
        ident = {"kind": "directory" if stat.S_ISDIR(st.st_mode) else "file", "dev": st.st_dev, "ino": st.st_ino,
                 "fsid": format(os.fstatvfs(fd).f_fsid, "x")}
        if stat.S_ISREG(st.st_mode):
            ident["size"] = st.st_size
    if "size" in ident:
        size = ident["size"]
        head = os.pread(fd, _FINGERPRINT_SPAN, 0)
        tail = os.pread(fd, _FINGERPRINT_SPAN, max(0, size - _FINGERPRINT_SPAN))
        ident["fingerprint"] = hashlib.sha256(size.to_bytes(8, "little") + head + tail).hexdigest()[:32]
    return ident


def check_identity(path: str, recorded: dict | None, fd: int) -> None:
    """Refuse another object than the one recorded (``PathSwapped``). A disk's content changes as it is
    used, so its fingerprint is not compared; what must match is the kind and the object itself:
    file system id and inode (not the device number: it may change across reboots, and differs between
    machines sharing a network file system), or a block device's device number."""
    if not recorded:
        return  # registered before identities were recorded: the next backup records it
    now = identity_of(fd)
    if now["kind"] != recorded.get("kind"):
        raise PathSwapped(f"{path} is now a {now['kind']}; it was registered as a {recorded.get('kind')}")
    if now["kind"] == "block-device":
        same = now["rdev"] == recorded.get("rdev")
    elif recorded.get("fsid") not in (None, "0"):
        same = (now["fsid"], now["ino"]) == (recorded["fsid"], recorded.get("ino"))
    else:  # no file system id (NFS, some FUSE): the device number differs between the machines that
        same = now["ino"] == recorded.get("ino")  # share it, the inode (the server's file id) does not
    if not same:
        raise PathSwapped(f"{path} is another {now['kind']} than the one registered (it was replaced); "
                          "remove the resource and register it again if the new one is to be protected")


def size_of(fd: int) -> int:
    """The size of an opened disk: an image file's length, a block device's capacity."""
    st = os.fstat(fd)
    if stat.S_ISBLK(st.st_mode):
        buf = fcntl.ioctl(fd, _BLKGETSIZE64, b"\0" * 8)
        return struct.unpack("Q", buf)[0]
    return st.st_size


def tree_size(root: str, *, budget_seconds: float | None = None) -> tuple[int, bool]:
    """The bytes a directory tree's regular files hold (apparent sizes, each hard-linked file once),
    and whether the whole tree was counted within ``budget_seconds``. Symlinks are not followed."""
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        if deadline is not None and time.monotonic() > deadline:
            return total, False
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
    return total, True


def directory_is_empty(fd: int) -> bool:
    return not os.listdir(fd)


def disk_present(path: str) -> bool:
    """For a resource's live status: False when nothing usable is at ``path``. A symlink put in its
    place is not followed (what it leads to is none of the caller's business): the next open refuses
    it, turns the resource ``error`` and says why."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode) or stat.S_ISLNK(st.st_mode)


def directory_present(path: str) -> bool:
    """Like :func:`disk_present`, for a directory."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return False
    return stat.S_ISDIR(mode) or stat.S_ISLNK(mode)


# ------------------------------------------------------------------------------------ point in time
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
