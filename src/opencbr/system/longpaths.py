"""Paths of any length.

A system call given a path of ``PATH_MAX`` (4096) bytes or more fails with ``ENAMETOOLONG``, but nothing in
Linux limits how deep a tree goes: a backup must still reach what lies below. Such a path is reached a
piece at a time, each piece under ``PATH_MAX`` and cut at a ``/``, relative to a descriptor (``O_PATH``) of
the directory the piece before it named. Symlinks on the way are followed exactly as they would be in the
whole path, so callers keep the checks they make for a short path (a listing checks it opened the
directory the walk saw). A short path costs nothing more: the ordinary call is made first. (Opening below
a root with no symlink followed -- ``beneath.open_at`` -- takes long paths too.)
"""

from __future__ import annotations

import errno
import os

PATH_MAX = 4096
_DIR = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC


def open_long(path: bytes, flags: int, mode: int = 0o777) -> int:
    """``os.open(path, flags, mode)``, for a path of any length."""
    try:
        return os.open(path, flags, mode)
    except OSError as e:
        if e.errno != errno.ENAMETOOLONG or len(path) < PATH_MAX:
            raise
    dfd, name = directory_of(path)
    try:
        return os.open(name, flags, mode, dir_fd=dfd)
    finally:
        os.close(dfd)


def directory_of(path: bytes) -> tuple[int, bytes]:
    """An ``O_PATH`` descriptor of the directory holding ``path``'s last component, and that component."""
    head, _, name = path.rpartition(b"/")
    fd: int | None = None
    try:
        while len(head) >= PATH_MAX:
            cut = head.rfind(b"/", 1, PATH_MAX - 1)
            if cut <= 0:  # (no component is that long: a file system refuses names over 255 bytes)
                raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), path)
            above, fd = fd, None
            fd = _enter(above, head[:cut])
            head = head[cut + 1:]
        above, fd = fd, None
        fd = _enter(above, head or (b"/" if above is None and path.startswith(b"/") else b"."))
        return fd, name
    except BaseException:
        if fd is not None:
            os.close(fd)
        raise


def _enter(fd: int | None, piece: bytes) -> int:
    """The directory ``piece`` names (relative to ``fd``, which is closed in any case)."""
    try:
        return os.open(piece, _DIR, dir_fd=fd)
    finally:
        if fd is not None:
            os.close(fd)
