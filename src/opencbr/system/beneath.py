"""Open a path below a directory without following any symbolic link on the way.

A tenant controls what lies below its own directories and can swap a registered disk image, its
directory, or a directory above it for a symlink at any moment. The service (often root) must then
never be led out: every open walks from a trusted directory (a ``resource_roots`` entry, or ``/``)
with ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` where the kernel has it (Linux 5.6+), else
one ``openat(O_NOFOLLOW)`` per component. A symlink anywhere below the trusted directory is refused
with :class:`PathSwapped`; a missing component raises ``FileNotFoundError`` as usual.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
from collections.abc import Iterator

from opencbr.system.libc import function as libc_function


class PathSwapped(Exception):
    """What is at a path is not what may be opened there: a symlink on the way, a path that escapes
    its root, another kind of object, or another object than the one registered."""


_SYS_OPENAT2 = 437  # the same number on every Linux architecture (the generic syscall table)
RESOLVE_NO_MAGICLINKS, RESOLVE_NO_SYMLINKS, RESOLVE_BENEATH = 0x02, 0x04, 0x08
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


_syscall = libc_function("syscall", restype=ctypes.c_long)
_openat2_missing = _syscall is None


def _openat2(dir_fd: int, rel: str, flags: int, mode: int) -> int:
    how = _OpenHow(flags | os.O_CLOEXEC, mode if flags & os.O_CREAT else 0,
                   RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)
    fd = _syscall(ctypes.c_long(_SYS_OPENAT2), ctypes.c_int(dir_fd), ctypes.c_char_p(os.fsencode(rel)),
                  ctypes.byref(how), ctypes.c_size_t(ctypes.sizeof(how)))
    if fd < 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), rel)
    return fd


def _walk(dir_fd: int, rel: str, flags: int, mode: int) -> int:
    """The fallback: each directory with ``O_NOFOLLOW | O_DIRECTORY``, the last component with
    ``O_NOFOLLOW``."""
    *dirs, last = rel.split("/")
    cur = dir_fd
    try:
        for name in dirs:
            nxt = os.open(name, _DIR, dir_fd=cur)
            if cur != dir_fd:
                os.close(cur)
            cur = nxt
        return os.open(last, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode, dir_fd=cur)
    finally:
        if cur != dir_fd:
            os.close(cur)


def open_at(dir_fd: int, rel: str, flags: int, mode: int = 0o600, *, where: str = "") -> int:
    """``rel`` (relative, normal: no ``..``) below the directory ``dir_fd``, no symlink followed.
    ``where``: how to name that directory in a refusal."""
    global _openat2_missing
    if not rel or rel.startswith("/") or ".." in rel.split("/"):
        raise PathSwapped(f"{rel!r} is not a plain relative path")
    try:
        if not _openat2_missing:
            try:
                return _openat2(dir_fd, rel, flags, mode)
            except OSError as e:
                if e.errno == errno.ENAMETOOLONG:  # (PATH_MAX or more: one component at a time has no limit)
                    return _walk(dir_fd, rel, flags, mode)
                if e.errno not in (errno.ENOSYS, errno.EPERM):  # (seccomp filters answer EPERM)
                    raise
                _openat2_missing = True
        return _walk(dir_fd, rel, flags, mode)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.EXDEV, errno.ENOTDIR):
            raise PathSwapped(_why(dir_fd, rel, e, where)) from None
        raise


def _why(dir_fd: int, rel: str, e: OSError, where: str) -> str:
    """Which component stopped the open, for the user (looked at without following anything)."""
    parts = rel.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        try:
            st = os.lstat(sub, dir_fd=dir_fd)
        except OSError:
            break
        if stat.S_ISLNK(st.st_mode):
            return f"{os.path.join(where, sub)} is a symbolic link: refused (no link is followed below a root)"
        if not stat.S_ISDIR(st.st_mode) and (i < len(parts) or e.errno == errno.ENOTDIR):
            return f"{os.path.join(where, sub)} is not a directory"
    return f"{os.path.join(where, rel)} cannot be opened without leaving its directory ({e.strerror})"


def open_below(top: str, rel: str, flags: int, mode: int = 0o600) -> int:
    """``top/rel``: ``top`` is trusted (the operator's root, opened as configured), nothing below it
    is followed. ``rel`` ``"."`` opens ``top`` itself."""
    top_fd = os.open(top, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        if rel == ".":
            return os.dup(top_fd) if flags & os.O_DIRECTORY else open_at(top_fd, ".", flags, mode, where=top)
        return open_at(top_fd, rel, flags, mode, where=top)
    finally:
        os.close(top_fd)


def walk_below(root_fd: int) -> Iterator[tuple[str, list[str], list[str], int]]:
    """``os.fwalk(".", dir_fd=root_fd)``, top-down: (``.``-relative top, its subdirectories -- prune them in
    place --, its other entries -- symlinks among them, whatever they point to --, a descriptor of it,
    valid until the next step). Each directory is opened
    below ``root_fd`` with no symlink followed (:func:`open_at`): ``os.fwalk`` opens a subdirectory
    following a link and only then checks it is the one it listed, so a directory swapped for a link
    meanwhile had it open one elsewhere. Iterative, one descriptor at a time: any depth, any breadth."""
    stack = ["."]
    while stack:
        top = stack.pop()
        try:
            fd = os.dup(root_fd) if top == "." else open_at(root_fd, top[2:], os.O_RDONLY | os.O_DIRECTORY)
        except (OSError, PathSwapped):
            continue  # (gone, or swapped since its parent was listed)
        try:
            dirs, others = [], []
            with os.scandir(fd) as it:
                for e in it:
                    try:
                        (dirs if e.is_dir(follow_symlinks=False) else others).append(e.name)
                    except OSError:
                        others.append(e.name)
            yield top, dirs, others, fd
        except OSError:
            continue
        finally:
            os.close(fd)
        stack.extend(f"{top}/{d}" for d in reversed(dirs))


def chmod_entry(name: str | bytes, mode: int, dir_fd: int) -> None:
    """Set the mode of the entry ``name`` of directory ``dir_fd`` -- of that entry itself. ``chmod``
    follows a symlink (Linux has no ``lchmod``), so whoever swaps the entry for a symlink between its
    creation and this call would have the mode set on what the link names, anywhere on the machine.
    Here the entry is opened with ``O_PATH | O_NOFOLLOW`` (a symlink opens as itself, and is refused) and
    its mode set through that descriptor."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dir_fd)
    try:
        if stat.S_ISLNK(os.fstat(fd).st_mode):
            raise OSError(errno.ELOOP, "replaced by a symbolic link: its mode is left alone", os.fsdecode(name))
        os.chmod(fd_path(fd), mode)
    finally:
        os.close(fd)


def fd_path(fd: int) -> str:
    """A path that names the object open on ``fd`` itself, whatever happens to the path it was opened
    by (``/proc/self/fd``): how path-based code is handed an already-checked directory."""
    return f"/proc/self/fd/{fd}"
