"""Path safety of a restore: catalog paths are checked before use, and everything is opened relative to
directory descriptors with ``O_NOFOLLOW`` (see the package docstring)."""

from __future__ import annotations

import os
import stat

from ...errors import Damaged, InvalidArgument
from ..common import show

DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def check_entry_name(name: bytes, path: bytes, *, leading_slash: bool = False) -> None:
    """Refuse an entry whose name (last component of catalog path ``path``) is empty, ``.`` or ``..``
    or holds a NUL, or whose path starts with ``/`` (``leading_slash``): it could escape the target.
    A restore checks each entry's name only, its parent being the directory restored (and checked)
    just before it on the way down."""
    if leading_slash or name in (b"", b".", b"..") or b"\0" in name:
        raise Damaged(f"refusing catalog path {path!r}: it could escape the target")


def open_target(target: str, *, target_fd: int | None, allow_nonempty: bool) -> int:
    """The target directory, open (a duplicate of ``target_fd`` when the caller opened it already);
    created if missing. InvalidArgument if it is not a directory, or not empty unless allowed."""
    if target_fd is not None:
        fd = os.dup(target_fd)
    else:
        try:
            os.makedirs(target, exist_ok=True)
        except FileExistsError:
            raise InvalidArgument(f"restore target {target} exists and is not a directory") from None
        fd = os.open(target, DIR_FLAGS)
    if not allow_nonempty and os.listdir(fd):
        os.close(fd)
        raise InvalidArgument(f"restore target {target} is not empty")
    return fd


def make_room(name: bytes, dfd: int, rel: bytes) -> None:
    """In a non-empty target, remove an existing non-directory at ``name`` (a directory in the way of a
    file is the caller's to move: InvalidArgument)."""
    try:
        st = os.lstat(name, dir_fd=dfd)
    except FileNotFoundError:
        return
    if stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"cannot restore {show(rel)}: a directory is in the way")
    os.unlink(name, dir_fd=dfd)
