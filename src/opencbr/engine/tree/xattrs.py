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
        return listing_failed(e.errno)
    got: list[tuple[str, bytes | int]] = []
    for n in names:
        try:
            got.append((n, os.getxattr(target, n, **by_path)))
        except OSError as e:
            got.append((n, e.errno))
    return sorted_xattrs(got)


def listing_failed(err: int) -> tuple[Xattrs, list[str]]:
    """What :func:`read_xattrs` gives when listing the names failed with ``err`` (none where the file
    system has no xattrs)."""
    if err in (errno.EOPNOTSUPP, errno.ENODATA):
        return [], []
    return [], [f"cannot list xattrs: {os.strerror(err)}"]


def sorted_xattrs(got: list[tuple[str, bytes | int]]) -> tuple[Xattrs, list[str]]:
    """:func:`read_xattrs`'s answer from the names as listed (``str``, as ``os.listxattr`` gives them) and
    each one's value, or the errno reading it failed with (also the C reader's, sources.py)."""
    out: Xattrs = []
    problems: list[str] = []
    for n, v in sorted(got, key=_by_name):
        if v.__class__ is not int:
            out.append((os.fsencode(n), v))
        elif v != errno.ENODATA:  # (removed meanwhile)
            problems.append(f"cannot read xattr {n}: {os.strerror(v)}")
    return out, problems


def _by_name(pair: tuple) -> str:
    return pair[0]
