"""Metadata of restored entries: owner, mode, xattrs and times (times last: the others change ctime
only, writes change mtime), and the directories kept until the end to be finished deepest first."""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import struct
import tempfile
import threading
from typing import Iterator, NamedTuple

from ....system.beneath import chmod_entry
from ....system.libc import function as libc_function
from ..entry import Entry
from .paths import DIR_FLAGS, open_restored
from .tally import Tally


class BackgroundFlush:
    """Writes back what a restore has written so far, in batches: ``kick()`` asks a thread of its own
    to run ``syncfs`` (coalesced: one at a time, at most one more asked for meanwhile), so the final
    barrier waits for the tail only. It replaced a ``sync_file_range(SYNC_FILE_RANGE_WRITE)`` per
    finished file, which did the same for the 30k-file tree (the final barrier alone had cost 1.7 s of
    a 6.8 s restore) but cost a system call -- and a GIL hand-off -- per small file: on the realtree
    benchmark's small files a durable restore took 2.5-4.2 s with one per file, 2.0-2.6 s with a
    ``syncfs`` every 8 MiB (bench/README.md)."""

    def __init__(self, fd: int):
        self.fd = fd
        self._want = threading.Event()
        self._stop = False
        self._thread: threading.Thread | None = None
        self._pid = 0

    def kick(self) -> None:
        if self._thread is None or self._pid != os.getpid():  # (started in the process that uses it)
            self._pid = os.getpid()
            self._thread = threading.Thread(target=self._run, name="restore-flush", daemon=True)
            self._thread.start()
        self._want.set()

    def _run(self) -> None:
        while True:
            self._want.wait()
            self._want.clear()
            if self._stop:
                return
            try:
                syncfs(self.fd)
            except OSError:
                pass

    def stop(self) -> None:
        self._stop = True
        self._want.set()
        if self._thread is not None and self._pid == os.getpid():
            self._thread.join()


def syncfs(fd: int) -> None:
    """Flush the file system holding ``fd`` (one barrier instead of an fsync per file)."""
    sync = libc_function("syncfs", (ctypes.c_int,))
    if sync is None or sync(fd) != 0:
        os.sync()


def current_umask() -> int:
    """This process's umask without changing it (``os.umask`` sets it process-wide, racing other
    threads): from /proc, else assume the most restrictive (every permission bit would be masked)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


class DirMeta(NamedTuple):
    """What finishing a directory needs (:meth:`MetadataWriter.finish_fd`)."""

    mode: int
    uid: int
    gid: int
    xattrs: list
    atime_ns: int
    mtime_ns: int


class DirList:
    """The directories restored, in catalog order, with what finishing them needs, kept until the
    end (their metadata is applied last, deepest first). Packed records in one buffer: a Python object
    per directory, made between thousands of short-lived catalog entries, pins the interpreter's memory
    pools (restoring 300k files in one process grew by ~18 MB during the run; the records are ~50
    bytes each here). Past ``spill_bytes`` the buffer moves to an unlinked temporary file in
    ``spill_dir`` (the chunk store's, i.e. the service's ``scratch_dir``) and is read back from its end
    in blocks: memory stays bounded whatever the number of directories (a million directories would
    otherwise hold ~60 MB to the end of the restore).

    A record: mode, uid, gid, atime, mtime, len(rel), xattr count | rel | per xattr (u16 name length,
    u32 value length, name, value) | u32 length of all before it (so the list reads backwards)."""

    _HEAD = struct.Struct("<IIIqqII")
    _XATTR = struct.Struct("<HI")
    _LEN = struct.Struct("<I")
    SPILL_BYTES = 4 << 20
    READ_BLOCK = 1 << 20

    def __init__(self, spill_dir: str | None = None, spill_bytes: int | None = None) -> None:
        self._buf = bytearray()
        self._file = None  # the spilled records (unlinked temporary file), oldest first
        self.spill_dir = spill_dir
        self.spill_bytes = self.SPILL_BYTES if spill_bytes is None else spill_bytes
        self.count = 0

    def append(self, rel: bytes, e: Entry) -> None:
        start = len(self._buf)
        self._buf += self._HEAD.pack(e.mode, e.uid, e.gid, e.atime_ns or 0, e.mtime_ns, len(rel), len(e.xattrs))
        self._buf += rel
        for name, value in e.xattrs:
            self._buf += self._XATTR.pack(len(name), len(value))
            self._buf += name
            self._buf += value
        self._buf += self._LEN.pack(len(self._buf) - start)
        self.count += 1
        if len(self._buf) >= self.spill_bytes:
            if self._file is None:
                self._file = tempfile.TemporaryFile(prefix="opencbr-restore-dirs-", dir=self.spill_dir)
            self._file.write(self._buf)
            self._buf = bytearray()

    def __len__(self) -> int:
        return self.count

    def deepest_first(self) -> Iterator[tuple[bytes, DirMeta]]:
        """Catalog order reversed: every directory after everything below it."""
        yield from self._backwards(self._buf)
        if self._file is None:
            return
        pos = self._file.seek(0, os.SEEK_END)
        tail = bytearray()  # records not complete in the block read so far (their start is before it)
        while pos > 0:
            n = min(self.READ_BLOCK, pos)
            pos -= n
            self._file.seek(pos)
            block = bytearray(self._file.read(n)) + tail
            cut = self._first_whole(block) if pos > 0 else 0
            tail = block[:cut]
            yield from self._backwards(memoryview(block)[cut:])
        self._file.close()
        self._file = None

    def _first_whole(self, block: bytearray) -> int:
        """Where the first record that lies whole in ``block`` (which ends at a record's end) starts."""
        end = len(block)
        while end >= self._LEN.size:
            (n,) = self._LEN.unpack_from(block, end - self._LEN.size)
            start = end - self._LEN.size - n
            if start < 0:
                break
            end = start
        return end

    def _backwards(self, buf) -> Iterator[tuple[bytes, DirMeta]]:
        head, xh = self._HEAD, self._XATTR
        end = len(buf)
        while end > 0:
            (n,) = self._LEN.unpack_from(buf, end - self._LEN.size)
            o = end - self._LEN.size - n
            end = o
            mode, uid, gid, atime, mtime, rlen, nx = head.unpack_from(buf, o)
            o += head.size
            rel = bytes(buf[o:o + rlen])
            o += rlen
            xattrs = []
            for _ in range(nx):
                kl, vl = xh.unpack_from(buf, o)
                o += xh.size
                xattrs.append((bytes(buf[o:o + kl]), bytes(buf[o + kl:o + kl + vl])))
                o += kl + vl
            yield rel, DirMeta(mode, uid, gid, xattrs, atime, mtime)


_ACL_NAMES = (b"system.posix_acl_access", b"system.posix_acl_default")


def has_default_acl(fd: int) -> bool:
    """Whether directory ``fd`` has a default ACL (what is made in it inherits)."""
    try:
        os.getxattr(fd, _ACL_NAMES[1])
    except OSError:
        return False
    return True


class MetadataWriter:
    """Applies recorded metadata; what cannot be applied becomes a warning (the restore goes on)."""

    def __init__(self, tally: Tally, *, owners: bool, root_fd: int):
        self.tally = tally
        self.owners = owners
        self.umask = current_umask()
        # Files we create are ours (uid, gid) unless the target is a set-group-id directory (then
        # every directory below inherits it, and new files its group). Our own directories get
        # their final modes only at the end, after every file was created.
        self.plain_owner = None if os.fstat(root_fd).st_mode & stat.S_ISGID else (os.geteuid(), os.getegid())
        # A target with a default ACL hands it to whatever is made in it, and on down through the
        # directories made (their own recorded ACLs are set only at the end): each entry then gets an
        # ACL its source never had, and the default ACL, not the umask, cuts the mode it is created
        # with. So there every entry is given its mode explicitly and loses the ACLs it does not record.
        self.inherits_acl = has_default_acl(root_fd)

    def create_mode(self, e: Entry) -> int:
        """The mode to create a regular file with. Normally 0600 until its owner and mode are set at
        the end. When the file is to belong to us anyway (what creating it gives: our uid and gid, and
        no set-group-id directory above) and its permission bits survive the umask, it is created
        with its final mode and :meth:`finish_fd` skips ``fchown``/``fchmod`` (two of the four system
        calls per file; each also waits for the GIL behind the busy span workers)."""
        mode = stat.S_IMODE(e.mode)
        if (self.plain_owner == (e.uid, e.gid) or not self.owners) and mode & ~0o777 == 0 \
                and mode & self.umask == 0 and not self.inherits_acl:
            return mode
        return 0o600

    def drop_inherited_acls(self, target, e: Entry | DirMeta, rel: bytes, *, directory: bool,
                            follow: bool = True) -> None:
        """Remove the ACLs ``target`` got from the target's default ACL (``inherits_acl``) and its record
        does not hold; before its mode is set (with an access ACL, ``chmod`` sets the mask instead)."""
        recorded = {name for name, _ in e.xattrs}
        for name in _ACL_NAMES if directory else _ACL_NAMES[:1]:
            if name in recorded:
                continue
            try:
                os.removexattr(target, name, follow_symlinks=follow)
            except OSError as exc:
                if exc.errno not in (errno.ENODATA, errno.ENOTSUP, errno.EOPNOTSUPP):
                    self.tally.warn(rel, f"cannot remove the inherited {os.fsdecode(name)}: "
                                         f"{exc.strerror or exc}", False)

    def set_xattrs(self, target, e: Entry | DirMeta, rel: bytes, follow: bool = True) -> None:
        for name, value in e.xattrs:
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as exc:
                self.tally.warn(rel, f"cannot set xattr {os.fsdecode(name)}: {exc.strerror or exc}", False)

    def finish_fd(self, fd: int, e: Entry | DirMeta, rel: bytes, created_final: bool = False) -> None:
        """Owner, mode, xattrs, then times of an open file or directory."""
        if self.inherits_acl:
            self.drop_inherited_acls(fd, e, rel, directory=isinstance(e, DirMeta))
        try:
            if created_final:
                pass  # created with its final owner and mode (create_mode)
            elif self.owners:
                os.fchown(fd, e.uid, e.gid)
                os.fchmod(fd, stat.S_IMODE(e.mode))
            else:
                os.fchmod(fd, stat.S_IMODE(e.mode))
        except OSError as exc:
            self.tally.warn(rel, f"cannot set owner/mode: {exc.strerror or exc}", False)
        if e.xattrs:
            self.set_xattrs(fd, e, rel)
        try:
            os.utime(fd, ns=(e.atime_ns or e.mtime_ns, e.mtime_ns))  # directories: no atime recorded
        except OSError as exc:
            self.tally.warn(rel, f"cannot set times: {exc.strerror or exc}", False)

    def finish_path(self, name: bytes, dfd: int, e: Entry, rel: bytes, *, symlink: bool) -> None:
        """Owner, mode (not of a symlink), xattrs, then times of ``name`` in directory ``dfd``."""
        if self.inherits_acl and not symlink:  # (a symlink has no ACL)
            self.drop_inherited_acls(f"/proc/self/fd/{dfd}/".encode() + name, e, rel, directory=False,
                                     follow=False)
        try:
            if self.owners:
                os.chown(name, e.uid, e.gid, dir_fd=dfd, follow_symlinks=False)
            if not symlink:
                chmod_entry(name, stat.S_IMODE(e.mode), dfd)
        except OSError as exc:
            self.tally.warn(rel, f"cannot set owner/mode: {exc.strerror or exc}", False)
        if e.xattrs:
            self.set_xattrs(f"/proc/self/fd/{dfd}/".encode() + name, e, rel, follow=False)
        try:
            os.utime(name, ns=(e.atime_ns or e.mtime_ns, e.mtime_ns), dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            self.tally.warn(rel, f"cannot set times: {exc.strerror or exc}", False)

    def finish_dir(self, root_fd: int, rel: bytes, e: DirMeta) -> None:
        try:
            fd = open_restored(root_fd, rel, DIR_FLAGS) if rel else os.dup(root_fd)
        except OSError as exc:
            self.tally.warn(rel, f"cannot set directory metadata: {exc.strerror or exc}", False)
            return
        try:
            self.finish_fd(fd, e, rel)
        finally:
            os.close(fd)
