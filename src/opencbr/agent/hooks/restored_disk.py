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

import os
import shutil
import stat
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


def _mount_and_prepare(record: dict, source_mountpoint: str, target: str, point: str, data_dirs: list[str],
                       part: tuple[int, int] | None) -> list[str] | None:
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


def prepare_restored_disk(record: dict, source_mountpoint: str | None, target: str, work_dir: str) -> list[str]:
    """After ``target`` (a block device or raw image file) was restored from a disk backed up with the
    hooks' ``record``: ready its PostgreSQL clusters. Returns what was done, or why not and what to do."""
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
            return _mount_and_prepare(record, source_mountpoint, target, point, data_dirs, None)
        for part in parts:
            done = _mount_and_prepare(record, source_mountpoint, target, point, data_dirs, part)
            if done is not None:
                return done
        return _by_hand(data_dirs, f"no partition of {target} with a file system the agent can mount holds them")
    finally:
        try:
            os.rmdir(point)
        except OSError:
            pass
