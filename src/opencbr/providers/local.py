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


def disk_present(path: str) -> bool:
    try:
        st = os.stat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) or stat.S_ISBLK(st.st_mode)


def directory_present(path: str) -> bool:
    return os.path.isdir(path)
