"""Extended attributes of an entry, by path (a symlink's own, not its target's) or by an open descriptor.

A regular file's are read by the worker that reads the file, through the descriptor it already has open
(``flistxattr``): no second lookup of the path, and no system call on the walking thread, which every
entry of the tree passes through (on a tree of small files the walking thread is the serial part).
"""

from __future__ import annotations

import errno
import os

Xattrs = list[tuple[bytes, bytes]]


def read_xattrs(target: bytes | int) -> tuple[Xattrs, list[str]]:
    """(name, value) pairs sorted by name, and a message for each that could not be read."""
    by_path = {} if isinstance(target, int) else {"follow_symlinks": False}
    try:
        names = os.listxattr(target, **by_path)
    except OSError as e:
        if e.errno in (errno.EOPNOTSUPP, errno.ENODATA):
            return [], []
        return [], [f"cannot list xattrs: {e.strerror or e}"]
    out: Xattrs = []
    problems: list[str] = []
    for n in sorted(names):
        try:
            out.append((os.fsencode(n), os.getxattr(target, n, **by_path)))
        except OSError as e:
            if e.errno != errno.ENODATA:  # (removed meanwhile)
                problems.append(f"cannot read xattr {n}: {e.strerror or e}")
    return out, problems
