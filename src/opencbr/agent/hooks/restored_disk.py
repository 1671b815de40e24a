"""Ready the databases of a restored disk (docs/app-consistent.md, "Restore").

A disk backed up application-consistent holds PostgreSQL data directories that start as base backups
only with their backup label and the backup's WAL written back (:func:`prepare_restored_postgres`). After
restoring such a disk the agent mounts the restored file system (a block device, or an image file
through a loop device) in a private directory, readies every cluster whose data directory lay on the
source disk (``source_mountpoint``: where that disk was mounted when backed up), and unmounts it.

A partitioned disk (MBR or GPT, as the engine's disk browsing reads them) has each partition with a
file system mounted in turn through a loop device at the partition's offset, until one holds the data
directories (their paths below ``source_mountpoint``).

It does nothing, and says what the user does instead, when the target or one of its partitions is in
use (mounted: the agent never writes below a live file system's users), or holds no file system
``mount`` recognises (LVM, an encrypted volume): then the steps are those of
``python -m opencbr.agent.hooks prepare-postgres``.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import stat
import struct
import subprocess
import tempfile
import time

from opencbr.agent import mounts
from opencbr.agent.hooks.postgres import prepare_restored_tree

MOUNT_TIMEOUT = 120.0


def clusters_on(record: dict, source_mountpoint: str) -> list[str]:
    """The PostgreSQL data directories of the record (with restore material) below ``source_mountpoint``."""
    source = os.path.realpath(source_mountpoint).rstrip("/") + "/"
    found = []
    for hook in (record or {}).get("hooks") or []:
        details = hook.get("details") or {}
        data_dir = details.get("data_dir")
        if hook.get("kind") == "postgresql" and details.get("backup_label") and data_dir:
            if (os.path.realpath(data_dir).rstrip("/") + "/").startswith(source):
                found.append(data_dir)
    return found


def _by_hand(data_dirs: list[str], why: str) -> list[str]:
    return [f"not prepared: {why}; mount the restored file system and run, for each data directory, "
            f"'python -m opencbr.agent.hooks prepare-postgres <mount point>/<data directory below it> record.json' "
            f"(data directories: {', '.join(data_dirs)})"]


def _in_use(target: str) -> str | None:
    st = os.stat(target)
    if not stat.S_ISBLK(st.st_mode):
        return None
    if mounts.mounts_of(st.st_rdev):
        return f"{target} is mounted"
    name = os.path.basename(os.path.realpath(target))
    sys_dir = f"/sys/class/block/{name}"
    for part in sorted(os.listdir(sys_dir)) if os.path.isdir(sys_dir) else []:
        try:
            with open(os.path.join(sys_dir, part, "dev")) as f:
                major, minor = (int(x) for x in f.read().split(":"))
        except (OSError, ValueError):
            continue  # not a partition
        if mounts.mounts_of(os.makedev(major, minor)):
            return f"{target}'s partition {part} is mounted"
    return None


def _partitions(target: str) -> list[tuple[int, int]] | None:
    """``(offset, size)`` of each partition of ``target`` with a file system; None when ``target`` holds
    a file system itself (or nothing the engine reads: ``mount`` then says)."""
    from opencbr.engine.diskfs.volumes import find_volumes

    with open(target, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(0)
        volumes = find_volumes(f, size)
    if not volumes or volumes[0].name == "":
        return None
    return [(v.offset, v.size) for v in volumes if v.fs is not None]


#: ``LOOP_GET_STATUS64`` and the head of ``struct loop_info64``: lo_device, lo_inode (the backing file's).
_LOOP_GET_STATUS64 = 0x4C05
_LOOP_INFO64 = struct.Struct("=QQ")
_LOOP_INFO64_SIZE = 232
_LOOP_MAJOR = 7


def _kernel_dev(encoded: int) -> tuple[int, int]:
    """(major, minor) of a ``dev_t`` as the kernel encodes it for userspace (``new_encode_dev``)."""
    return (encoded & 0xFFF00) >> 8, (encoded & 0xFF) | ((encoded >> 12) & 0xFFF00)


def mounted_from(point: str, restored: os.stat_result) -> str | None:
    """Why the file system mounted at ``point`` is not the one on ``restored`` (the object the restore
    wrote, as ``fstat`` saw it), or None when it is: the device itself (a block device mounted as it
    is), or a loop device whose backing file is that very inode (an image, or a partition at an offset).
    ``mount`` is handed a path, and whoever can write in the image's directory can swap it for a link
    to another file or device between the restore and the mount."""
    dev = os.stat(point).st_dev
    if stat.S_ISBLK(restored.st_mode) and dev == restored.st_rdev:
        return None
    if os.major(dev) != _LOOP_MAJOR:
        return f"the file system mounted is on device {os.major(dev)}:{os.minor(dev)}, not the restored disk"
    fd = _open_block(dev)
    try:
        info = fcntl.ioctl(fd, _LOOP_GET_STATUS64, bytes(_LOOP_INFO64_SIZE))
    finally:
        os.close(fd)
    lo_device, lo_inode = _LOOP_INFO64.unpack_from(info)
    if lo_inode != restored.st_ino or _kernel_dev(lo_device) != (os.major(restored.st_dev), os.minor(restored.st_dev)):
        return "the loop device mounted is backed by another file than the restored disk"
    return None


def _open_block(dev: int) -> int:
    """The block device ``dev`` (by its kernel name, /sys/dev/block/M:m/uevent's DEVNAME), checked to be it."""
    name = ""
    with open(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}/uevent", encoding="utf-8") as f:
        for line in f:
            if line.startswith("DEVNAME="):
                name = line.strip().split("=", 1)[1]
    if not name or "/" in name or name.startswith("."):
        raise OSError(f"no device name for {os.major(dev)}:{os.minor(dev)}")
    fd = os.open(f"/dev/{name}", os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    if os.fstat(fd).st_rdev != dev:
        os.close(fd)
        raise OSError(f"/dev/{name} is not device {os.major(dev)}:{os.minor(dev)}")
    return fd


def _mount_and_prepare(record: dict, source_mountpoint: str, target: str, point: str, data_dirs: list[str],
                       part: tuple[int, int] | None, restored: os.stat_result | None = None) -> list[str] | None:
    """Mount ``target`` (or its partition ``part``) on ``point`` and ready the clusters found there; None
    when a partition does not hold them."""
    # (the file system is the tenant's data: its device nodes, setuid files and programs mean nothing here)
    options = ["nodev", "nosuid", "noexec"]
    if stat.S_ISREG(os.stat(target).st_mode) or part is not None:
        options.append("loop")
    if part is not None:  # (no sizelimit: the file system knows its size; the table's may be a sector short)
        options.append(f"offset={part[0]}")
    done = subprocess.run(["mount", "-o", ",".join(options), target, point],
                          capture_output=True, text=True, timeout=MOUNT_TIMEOUT)
    if done.returncode != 0:
        if part is not None:
            return None
        return _by_hand(data_dirs, f"{target} holds no file system the agent can mount "
                                   f"({done.stderr.strip() or done.returncode}); a disk read live while its "
                                   "file system was written may need fsck before it mounts")
    try:
        swapped = mounted_from(point, restored) if restored is not None else None
        if swapped:  # (nothing written: unmounted at once)
            return _by_hand(data_dirs, f"{target} was replaced after the restore ({swapped})")
        below = [os.path.relpath(d, source_mountpoint) for d in data_dirs]
        if part is not None and not any(os.path.isdir(os.path.join(point, b)) for b in below):
            return None
        return prepare_restored_tree(record, source_mountpoint, point)
    finally:
        unmount(point)


UNMOUNT_TRIES, UNMOUNT_PAUSE = 10, 0.3


def unmount(point: str) -> None:
    """Unmount the agent's own mount of a restored file system. Another thread of the agent may be in it
    for a moment (the inventory walking the roots, say): "target is busy" is asked again, and after
    ~3 s the mount is detached lazily (``umount -l``: gone from the host's tree at once, released when
    the last user lets go) -- a tenant's file system never stays mounted on the host because of it."""
    for _ in range(UNMOUNT_TRIES):
        done = subprocess.run(["umount", point], capture_output=True, text=True, timeout=MOUNT_TIMEOUT)
        if done.returncode == 0 or not os.path.ismount(point):
            return
        time.sleep(UNMOUNT_PAUSE)
    subprocess.run(["umount", "-l", point], capture_output=True, timeout=MOUNT_TIMEOUT)


def prepare_restored_disk(record: dict, source_mountpoint: str | None, target: str, work_dir: str, *,
                          restored: os.stat_result | None = None) -> list[str]:
    """After ``target`` (a block device or raw image file) was restored from a disk backed up with the
    hooks' ``record``: ready its PostgreSQL clusters. Returns what was done, or why not and what to do.
    ``restored``: ``fstat`` of what the restore wrote; what gets mounted by ``target``'s path must be it
    (:func:`mounted_from`), else nothing is written."""
    if not source_mountpoint:
        return []
    data_dirs = clusters_on(record, source_mountpoint)
    if not data_dirs:
        return []
    busy = _in_use(target)
    if busy:
        return _by_hand(data_dirs, busy)
    if shutil.which("mount") is None:
        return _by_hand(data_dirs, "mount is not installed on the agent's host")
    os.makedirs(work_dir, mode=0o700, exist_ok=True)
    point = tempfile.mkdtemp(prefix="restored-", dir=work_dir)
    try:
        parts = _partitions(target)
        if parts is None:
            return _mount_and_prepare(record, source_mountpoint, target, point, data_dirs, None, restored)
        for part in parts:
            done = _mount_and_prepare(record, source_mountpoint, target, point, data_dirs, part, restored)
            if done is not None:
                return done
        return _by_hand(data_dirs, f"no partition of {target} with a file system the agent can mount holds them")
    finally:
        try:
            os.rmdir(point)
        except OSError:
            pass
