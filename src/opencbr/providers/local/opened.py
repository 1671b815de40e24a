"""Disks and directory trees of this machine, opened for a task.

This module only looks at the real objects (sizes, existence, identity); what they are called and who
owns them is the catalog's business. Every backup, restore or measurement opens a resource's path with
:func:`open_resource_path`: the path is checked again each time, never through a symlink, and must
still be the registered object.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import stat
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass

from opencbr.providers.base import PathSwapped
from opencbr.providers.local.paths import normal_path, split_root
from opencbr.system import beneath
from opencbr.system.loops import loop_devices_backed_by

_BLKGETSIZE64 = 0x80081272


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

    def fd_path(self) -> str:
        return beneath.fd_path(self.fd)

    def identity(self) -> dict:
        return identity_of(self.fd)

    def size(self) -> int | None:
        """A disk's capacity; None for a directory (counting a tree is :meth:`measure`)."""
        return size_of(self.fd) if self.kind == DISK else None

    def measure(self, *, budget_seconds: float | None = None,
                stop: Callable[[], bool] | None = None) -> tuple[int, bool]:
        """The tree below the opened directory, through its descriptor (not the path, which may have
        been swapped since): see :func:`tree_size`."""
        return tree_size(self.fd_path(), budget_seconds=budget_seconds, stop=stop)

    def is_empty(self) -> bool:
        return not os.listdir(self.fd)

    def set_size(self, size: int) -> None:
        os.ftruncate(self.fd, size)

    def copy_permissions(self, source_path: str | None) -> None:
        """The permission bits of the image at ``source_path`` (a new image is created 0600 until it is
        complete; 0600 it stays when there is no source any more)."""
        try:
            os.fchmod(self.fd, stat.S_IMODE(os.stat(source_path).st_mode) if source_path else 0o600)
        except FileNotFoundError:
            pass

    def attached_loops(self) -> list[str]:
        return loop_devices_backed_by(self.fd)

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


def open_resource_path(path: str, kind: str, roots: tuple[str, ...], identity: dict | None = None, *,
                       write: bool = False, create: bool = False) -> OpenedPath:
    """Open a disk (image file or block device) or a directory at ``path`` for a backup, a restore or
    a measurement: re-checked against ``roots`` every time, no symlink followed from the root down
    (see :mod:`opencbr.system.beneath`), of the right kind, and -- given the ``identity`` recorded
    at registration -- the same object. ``create`` makes a new image file (``O_EXCL``) or directory.
    Raises PathSwapped (refused), FileNotFoundError (missing), OSError (other failures)."""
    top, rel = split_root(normal_path(path), roots)
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


#: How often :func:`tree_size` asks its ``stop`` whether to go on.
STOP_CHECK_SECONDS = 0.25


def tree_size(root: str, *, budget_seconds: float | None = None,
              stop: Callable[[], bool] | None = None) -> tuple[int, bool]:
    """The bytes a directory tree's regular files hold (apparent sizes, each hard-linked file once),
    and whether the whole tree was counted within ``budget_seconds`` and before ``stop()`` (asked
    every ``STOP_CHECK_SECONDS``) said to give up. Symlinks are not followed."""
    deadline = None if budget_seconds is None else time.monotonic() + budget_seconds
    next_check = time.monotonic() + STOP_CHECK_SECONDS
    total = 0
    seen: set[tuple[int, int]] = set()
    stack = [root]
    while stack:
        now = time.monotonic()
        if deadline is not None and now > deadline:
            return total, False
        if stop is not None and now >= next_check:
            if stop():
                return total, False
            next_check = now + STOP_CHECK_SECONDS
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
