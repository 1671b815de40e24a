"""The host's mounted file systems (/proc/self/mountinfo), and freezing one (FIFREEZE/FITHAW)."""

from __future__ import annotations

import fcntl
import os
import re
from dataclasses import dataclass

FIFREEZE = 0xC0045877  # _IOWR('X', 119, int)
FITHAW = 0xC0045878    # _IOWR('X', 120, int)


@dataclass(frozen=True)
class Mount:
    device: tuple[int, int]   # major, minor
    mountpoint: str
    fstype: str
    source: str


def _unescape(field: str) -> str:
    return re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), field)


def mounts(path: str = "/proc/self/mountinfo") -> list[Mount]:
    found = []
    try:
        with open(path, encoding="utf-8", errors="surrogateescape") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        left, sep, right = line.partition(" - ")
        parts, tail = left.split(), right.split()
        if not sep or len(parts) < 5 or len(tail) < 2:
            continue
        major, _, minor = parts[2].partition(":")
        found.append(Mount((int(major), int(minor)), _unescape(parts[4]), tail[0], _unescape(tail[1])))
    return found


def mounts_of(rdev: int, table: list[Mount] | None = None) -> list[Mount]:
    """Where the block device ``rdev`` (``st_rdev``) is mounted (bind mounts included)."""
    want = (os.major(rdev), os.minor(rdev))
    return [m for m in (mounts() if table is None else table) if m.device == want]


def holding(path: str, table: list[Mount] | None = None) -> Mount | None:
    """The mount a path lies on (the longest mount point that is a prefix of it)."""
    best = None
    for m in mounts() if table is None else table:
        mp = m.mountpoint.rstrip("/") + "/"
        if (path.rstrip("/") + "/").startswith(mp) and (best is None or len(m.mountpoint) > len(best.mountpoint)):
            best = m
    return best


def freeze(mountpoint: str) -> None:
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FIFREEZE, 0)
    finally:
        os.close(fd)


def thaw(mountpoint: str) -> bool:
    """Thaw; False if it was not frozen (EINVAL)."""
    fd = os.open(mountpoint, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, FITHAW, 0)
        return True
    except OSError as e:
        if e.errno == 22:
            return False
        raise
    finally:
        os.close(fd)
