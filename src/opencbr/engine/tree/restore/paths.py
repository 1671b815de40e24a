"""Path safety of a restore: catalog paths are checked before use, and everything is opened relative to
directory descriptors with ``O_NOFOLLOW`` (see the package docstring)."""

from __future__ import annotations

import errno
import os
import stat

from ....system.beneath import PathSwapped, fd_path, open_at
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


def open_restored(root_fd: int, rel: bytes, flags: int) -> int:
    """``rel`` (a path the restore made, several components deep) below the target, no symlink followed on
    the way (``open_at``): what a restore reopens by path after making it -- a directory to finish, the
    first name of a hard link -- may have been swapped meanwhile by whoever can write in the target, and a
    directory on the way turned into a symlink must not lead the restore (often root) out of the target.
    OSError (ELOOP) when something on the way is a symlink now."""
    try:
        return open_at(root_fd, os.fsdecode(rel), flags)
    except PathSwapped as e:
        raise OSError(errno.ELOOP, f"{e}; left alone") from None


def link_restored(root_fd: int, src: bytes, restored: tuple[int, int] | None, name: bytes, dfd: int) -> None:
    """Make ``name`` in ``dfd`` another name of the regular file this restore made at ``src``
    (``restored``: its (st_dev, st_ino), None if it could not be made). The link is made from a
    descriptor of that very file (``/proc/self/fd``), so a path swapped between the check and the link
    links nothing else: not a file out of the target, not a symlink whose mode would then be set."""
    if restored is None:
        raise OSError(errno.ENOENT, "the first name of its hard-link group could not be restored")
    fd = open_restored(root_fd, src, os.O_PATH | os.O_NOFOLLOW)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != restored:
            raise OSError(errno.ESTALE, f"{show(src)}, its first name, was replaced during the restore")
        os.link(fd_path(fd), name, dst_dir_fd=dfd, follow_symlinks=True)
    finally:
        os.close(fd)
