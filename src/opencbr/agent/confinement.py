"""What the agent may open: files and directories below its roots, and the block devices its policy allows.

The service names paths; the operator of the host decides, in the agent's configuration, which
directories (``roots``) and which block devices (``devices``: fnmatch patterns such as ``/dev/sd*`` or
``/dev/vg0/*``) the service may reach. Every open is checked again, from scratch:

- below a root: the root is opened as configured (the operator's own path), everything below it with
  ``openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`` where the kernel has it, one ``O_NOFOLLOW`` open
  per component otherwise (:mod:`opencbr.system.beneath`): a symlink anywhere below the root is refused
  with :class:`PathSwapped`, so a user of the host who can write below a root cannot lead the agent out.
  A path below a root that is not a directory must be a regular file (a disk image): it is first opened
  ``O_PATH`` (which opens nothing: no driver acts, no fifo waits), checked, and only then reopened
  through that very descriptor. A device node there (restored from a tree backup, or put there by whoever
  may) is opened only as the device policy below allows, a fifo or socket never. A file opened for
  writing must have one name only: another name may be outside every root (a hard link made where the
  kernel's ``fs.protected_hardlinks`` is off);
- a device: the path must match a pattern, lead (through /dev's own links: ``/dev/vg0/data``,
  ``/dev/disk/by-id/...``, which only root creates) to a block device the kernel lists in
  /sys/class/block, and the open descriptor is checked to be that very device. Writing opens with
  ``O_EXCL``, which the kernel refuses for a mounted or otherwise claimed device.

A path that is neither is refused. Snapshots the agent made itself for the running task are allowed
for that task only (:meth:`Confinement.granted`).
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import stat
import threading

from opencbr.system.beneath import PathSwapped, fd_path, open_at, open_below

__all__ = ["Confinement", "PathSwapped"]

_WRITE = os.O_WRONLY | os.O_RDWR


def normal_path(path: str) -> str:
    """An absolute path without ``.``/``..``/``//`` (``..`` refused rather than resolved: it is never needed)."""
    if not isinstance(path, str) or not path.startswith("/") or "\0" in path:
        raise PathSwapped(f"{path!r} is not an absolute path")
    if ".." in path.split("/"):
        raise PathSwapped(f"{path} contains '..': refused")
    return os.path.normpath(path).replace("//", "/")


class Confinement:
    """Opens paths for the agent's operations (see the module's docstring). Thread-safe."""

    def __init__(self, roots: list[str], devices: list[str]):
        self.roots = sorted({normal_path(r) for r in roots}, key=len, reverse=True)
        self.devices = list(devices)
        self._granted: set[str] = set()
        self._lock = threading.Lock()

    # -- files and directories below the roots
    def below_root(self, path: str) -> tuple[str, str] | None:
        """``(root, relative path)`` for a path below (or at) a root, the longest root first; else None."""
        path = normal_path(path)
        for root in self.roots:
            if path == root:
                return root, "."
            prefix = root if root.endswith("/") else root + "/"
            if path.startswith(prefix):
                return root, path[len(prefix):]
        return None

    def open(self, path: str, flags: int = os.O_RDONLY, mode: int = 0o600) -> int:
        """A descriptor for ``path``: below a root (no symlink followed), or an allowed block device.
        Raises :class:`PathSwapped` when refused, ``FileNotFoundError`` when missing."""
        where = self.below_root(path)
        if where is not None:
            if flags & os.O_DIRECTORY:
                return open_below(where[0], where[1], flags, mode)
            return self._open_file_below(path, where, flags, mode)
        if self.device_allowed(path):
            return self.open_device(path, flags)
        raise PathSwapped(f"{path} is outside this agent's roots ({', '.join(self.roots) or 'none'}) "
                          "and not a block device it may open")

    def _open_file_below(self, path: str, where: tuple[str, str], flags: int, mode: int) -> int:
        """A regular file below a root (see the module's docstring): a new one (``O_CREAT | O_EXCL``:
        nothing that was there is opened), or what is there, looked at through an ``O_PATH`` descriptor
        first. Opening a device node or a fifo would act on open (a driver; a fifo waits for a writer,
        holding the task forever) and would reach a device the policy may not allow, without ``O_EXCL``:
        a block device below a root is opened only as :meth:`open_device` opens one, anything else
        that is not a regular file is refused."""
        if flags & os.O_CREAT and flags & os.O_EXCL:
            fd = open_below(where[0], where[1], flags, mode)
            if not stat.S_ISREG(os.fstat(fd).st_mode):  # (O_EXCL made it: it is one)
                os.close(fd)
                raise PathSwapped(f"{path} is not a regular file: refused")
            return fd
        at = open_below(where[0], where[1], os.O_PATH)
        try:
            st = os.fstat(at)
            if stat.S_ISBLK(st.st_mode) and self.device_allowed(path):
                os.close(at)
                at = -1
                return self.open_device(path, flags)
            if not stat.S_ISREG(st.st_mode):
                raise PathSwapped(f"{path} is {_kind(st.st_mode)}, not a regular file: below a root the agent opens "
                                  "directories and disk-image files only (block devices through its device "
                                  "patterns)")
            if flags & _WRITE and st.st_nlink > 1:
                raise PathSwapped(f"{path} has {st.st_nlink} hard links: a restore would write through every name "
                                  "of it, wherever they are; refused (make it a file of its own, then restore)")
            fd = os.open(fd_path(at), (flags & ~(os.O_CREAT | os.O_EXCL)) | os.O_NOCTTY | os.O_CLOEXEC)
        finally:
            if at >= 0:
                os.close(at)
        now = os.fstat(fd)
        if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino):
            os.close(fd)
            raise PathSwapped(f"{path} changed while it was opened: refused")
        return fd

    def open_dir(self, path: str) -> int:
        """A directory below a root, as an ``O_DIRECTORY`` descriptor (for ``*at`` calls)."""
        where = self._root_or_refuse(path)
        return open_below(where[0], where[1], os.O_RDONLY | os.O_DIRECTORY)

    def makedirs(self, path: str, mode: int = 0o755, created: list[str] | None = None) -> int:
        """Create the missing directories of ``path`` below its root (never through a symlink) and
        return a descriptor of the last one; the paths of those it created are appended to ``created``."""
        root, rel = self._root_or_refuse(path)
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            at = root
            for name in [] if rel == "." else rel.split("/"):
                at = os.path.join(at, name)
                try:
                    os.mkdir(name, mode, dir_fd=fd)
                    if created is not None:
                        created.append(at)
                except FileExistsError:
                    pass
                nxt = open_at(fd, name, os.O_RDONLY | os.O_DIRECTORY, where=os.path.dirname(at))
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _root_or_refuse(self, path: str) -> tuple[str, str]:
        where = self.below_root(path)
        if where is None:
            raise PathSwapped(f"{path} is outside this agent's roots ({', '.join(self.roots) or 'none'})")
        return where

    # -- block devices
    def device_allowed(self, path: str) -> bool:
        path = normal_path(path)
        with self._lock:
            if path in self._granted:
                return True
        return path.startswith("/dev/") and any(fnmatch.fnmatchcase(path, p) for p in self.devices)

    def open_device(self, path: str, flags: int = os.O_RDONLY) -> int:
        path = normal_path(path)
        if not self.device_allowed(path):
            raise PathSwapped(f"{path} is not among the devices this agent may open ({', '.join(self.devices)})")
        real = os.path.realpath(path)
        if not real.startswith("/dev/"):
            raise PathSwapped(f"{path} leads to {real}, outside /dev: refused")
        before = os.stat(real, follow_symlinks=False)
        if not stat.S_ISBLK(before.st_mode) or not os.path.exists(f"/sys/class/block/{os.path.basename(real)}"):
            raise PathSwapped(f"{path} is not a block device of this host")
        extra = os.O_EXCL if flags & _WRITE else 0
        fd = os.open(real, flags | extra | os.O_NOFOLLOW | os.O_CLOEXEC)
        st = os.fstat(fd)
        if not stat.S_ISBLK(st.st_mode) or st.st_rdev != before.st_rdev:
            os.close(fd)
            raise PathSwapped(f"{path} changed while it was opened: refused")
        return fd

    @contextlib.contextmanager
    def granted(self, paths: list[str]):
        """Allow these device paths (the agent's own snapshots) while the block runs."""
        paths = [normal_path(p) for p in paths]
        with self._lock:
            fresh = [p for p in paths if p not in self._granted]
            self._granted.update(fresh)
        try:
            yield
        finally:
            with self._lock:
                self._granted.difference_update(fresh)


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISBLK, "a block device"),
                       (stat.S_ISCHR, "a character device"), (stat.S_ISFIFO, "a fifo"), (stat.S_ISSOCK, "a socket"),
                       (stat.S_ISLNK, "a symbolic link")):
        if test(mode):
            return name
    return "not a regular file"
