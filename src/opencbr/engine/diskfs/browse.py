"""Browse and extract files from a *disk* backup without restoring the disk.

Paths: on a disk that is one bare file system, paths are paths inside it (``/etc/hosts``). On a
partitioned disk the first component names the volume: ``/`` lists the partitions as directories
``p1``, ``p2``, ... (those with an ext or FAT file system can be entered), ``/p2/etc/hosts`` is a file
in partition 2.

Extraction writes below ``target_dir`` through directory descriptors with ``O_NOFOLLOW`` (as the tree
restore does): names from the image are data -- a name with ``/``, NUL, ``.`` or ``..`` is refused,
and nothing is written outside the target. Zero runs of 64 KiB become holes.
"""

from __future__ import annotations

import os
import stat
import time
from dataclasses import asdict, dataclass, field

from ...system.beneath import chmod_entry
from ..errors import Conflict, InvalidArgument, Missing
from ..tree.common import chunkstore_of
from ..tree.results import ListEntry, TreeWarning
from .filesystems import FileSystem, FsNode, open_filesystem
from .view import DiskBackupView
from .volumes import Volume, find_volumes, range_of

COPY_SIZE = 1 << 20
_ZERO = bytes(64 << 10)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass
class DiskFileRestoreResult:
    backup_id: str
    source: str
    target: str
    files: int = 0
    dirs: int = 0
    symlinks: int = 0
    bytes_written: int = 0
    warnings: list[TreeWarning] = field(default_factory=list)
    duration: float = 0.0

    def to_dict(self) -> dict:
        return asdict(self)


class DiskBrowser:
    """The file systems of one disk backup (keeps the view and parsed file systems for reuse)."""

    def __init__(self, repo_or_chunkstore, backup_id: str):
        self.cs = chunkstore_of(repo_or_chunkstore)
        self.backup_id = backup_id
        self.view = DiskBackupView(self.cs, backup_id)
        self.volumes: list[Volume] = find_volumes(self.view, self.view.size)
        self._fs: dict[str, FileSystem] = {}

    @property
    def bare(self) -> bool:
        return len(self.volumes) == 1 and self.volumes[0].name == ""

    def filesystem(self, vol: Volume) -> FileSystem:
        fs = self._fs.get(vol.name)
        if fs is None:
            if vol.fs is None:
                raise InvalidArgument(f"volume {vol.name or '/'} of backup {self.backup_id} holds no supported "
                                      f"file system (type {vol.type or 'unknown'})")
            fh = self.view if vol.offset == 0 and vol.size == self.view.size else range_of(self.view, vol.offset, vol.size)
            fs = self._fs[vol.name] = open_filesystem(fh, vol.fs)
        return fs

    def resolve(self, path: str) -> tuple[Volume | None, FileSystem | None, str]:
        """(volume, file system, path inside it); volume None means the partition list itself."""
        parts = [p for p in path.split("/") if p not in ("", ".")]
        if any(p == ".." for p in parts):
            raise InvalidArgument("'..' is not allowed in a path")
        if not self.volumes:
            raise InvalidArgument(f"backup {self.backup_id}: no partition table or supported file system found")
        if self.bare:
            vol = self.volumes[0]
            return vol, self.filesystem(vol), "/".join(parts)
        if not parts:
            return None, None, ""
        for v in self.volumes:
            if v.name == parts[0]:
                return v, self.filesystem(v), "/".join(parts[1:])
        raise Missing(f"backup {self.backup_id} has no volume {parts[0]!r} (volumes: "
                      f"{', '.join(v.name for v in self.volumes)})")

    def lookup(self, path: str) -> tuple[FileSystem, FsNode, str]:
        vol, fs, inner = self.resolve(path)
        if fs is None:
            raise InvalidArgument("the disk root holds volumes, not files: name a volume (e.g. /p1/...)")
        try:
            return fs, fs.lookup(inner), inner
        except Missing:
            raise Missing(f"path {path} is not in backup {self.backup_id}") from None

    def list(self, path: str = "/") -> list[ListEntry]:
        vol, fs, inner = self.resolve(path)
        if fs is None:
            return [ListEntry(name=v.name, path="/" + v.name, type="dir" if v.fs else "volume", size=v.size,
                              mode=stat.S_IFDIR | 0o755, mtime=0.0) for v in self.volumes]
        fs, node, inner = self.lookup(path)
        base = "/" + "/".join(x for x in [vol.name if vol and vol.name else "", inner] if x)
        if not node.is_dir:
            return [_to_entry(node, base)]
        return [_to_entry(c, base.rstrip("/") + "/" + c.name) for c in fs.children(node)]


def _to_entry(n: FsNode, path: str) -> ListEntry:
    return ListEntry(name=n.name, path=path, type=n.type, size=n.size, mode=n.mode, mtime=n.mtime_ns / 1e9,
                     uid=n.uid, gid=n.gid, link_target=n.link)


def _safe_name(name: str) -> bytes:
    b = os.fsencode(name)
    if not b or b in (b".", b"..") or b"/" in b or b"\0" in b:
        raise InvalidArgument(f"refusing unsafe file name {name!r} from the disk image")
    return b


class _Extractor:
    def __init__(self, fs: FileSystem, res: DiskFileRestoreResult, owners: bool):
        self.fs = fs
        self.res = res
        self.owners = owners

    def warn(self, path: str, msg: str) -> None:
        if len(self.res.warnings) < 1000:
            self.res.warnings.append(TreeWarning(path, msg, True))

    def meta(self, name: bytes, dfd: int, n: FsNode, fd: int | None = None) -> None:
        try:
            if self.owners and self.fs.kind == "ext":
                if fd is not None:
                    os.fchown(fd, n.uid, n.gid)
                else:
                    os.chown(name, n.uid, n.gid, dir_fd=dfd, follow_symlinks=False)
            if n.type != "symlink":
                if fd is not None:
                    os.fchmod(fd, stat.S_IMODE(n.mode))
                else:
                    chmod_entry(name, stat.S_IMODE(n.mode), dfd)  # (not through a symlink swapped in)
            if fd is not None and self.fs.kind == "ext":
                for k, v in self.fs.xattrs(n):
                    try:
                        os.setxattr(fd, k, v)
                    except OSError:
                        pass
            if fd is not None:
                os.utime(fd, ns=(n.atime_ns, n.mtime_ns))
            else:
                os.utime(name, ns=(n.atime_ns, n.mtime_ns), dir_fd=dfd, follow_symlinks=False)
        except OSError as e:
            self.warn(os.fsdecode(name), f"cannot set metadata: {e.strerror or e}")

    def file(self, name: bytes, dfd: int, n: FsNode, shown: str) -> None:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dfd)
        try:
            src = self.fs.open(n)
            pos = 0
            while pos < n.size:
                data = src.read(min(COPY_SIZE, n.size - pos))
                if not data:
                    self.warn(shown, f"short read at {pos} of {n.size} bytes")
                    break
                mv = memoryview(data)
                for a in range(0, len(mv), len(_ZERO)):
                    piece = mv[a:a + len(_ZERO)]
                    if piece != _ZERO[:len(piece)]:
                        os.pwrite(fd, piece, pos + a)
                pos += len(data)
            os.ftruncate(fd, n.size)
            self.res.bytes_written += pos
            self.res.files += 1
            self.meta(name, dfd, n, fd)
        finally:
            os.close(fd)

    def node(self, name: bytes, dfd: int, n: FsNode, shown: str) -> None:
        if n.type == "dir":
            os.mkdir(name, 0o700, dir_fd=dfd)
            cfd = os.open(name, _DIR_FLAGS, dir_fd=dfd)
            try:
                self.res.dirs += 1
                for c in self.fs.children(n):
                    self.node(_safe_name(c.name), cfd, c, shown.rstrip("/") + "/" + c.name)
                self.meta(name, dfd, n, cfd)
            finally:
                os.close(cfd)
        elif n.type == "file":
            self.file(name, dfd, n, shown)
        elif n.type == "symlink":
            os.symlink(os.fsencode(n.link or ""), name, dir_fd=dfd)
            self.res.symlinks += 1
            self.meta(name, dfd, n)
        elif n.type == "fifo":
            os.mkfifo(name, stat.S_IMODE(n.mode), dir_fd=dfd)
            self.meta(name, dfd, n)
        else:
            self.warn(shown, f"{n.type} not extracted")


def list_disk_volumes(repo_or_chunkstore, backup_id: str) -> list[Volume]:
    """The volumes of a disk backup: one unnamed volume for a bare file system, else ``p<N>`` per
    partition (``fs`` None when it holds no supported file system)."""
    return DiskBrowser(repo_or_chunkstore, backup_id).volumes


def list_disk_tree(repo_or_chunkstore, backup_id: str, path: str = "/") -> list[ListEntry]:
    """Entries of directory ``path`` inside a disk backup (see the module docstring for paths)."""
    return DiskBrowser(repo_or_chunkstore, backup_id).list(path)


def restore_disk_path(repo_or_chunkstore, backup_id: str, path: str, target_dir: str | os.PathLike, *,
                      owners: bool | None = None, target_fd: int | None = None) -> DiskFileRestoreResult:
    """Extract one file or directory (recursively) of a disk backup to ``target_dir/<its name>``
    (``target_dir`` is created if missing; Conflict if ``<its name>`` exists there). Modes, times,
    symlinks and, for ext, owners (when root) and xattrs are restored. ``target_fd``: the target
    directory already open (checked by the caller); ``target_dir`` then only names it."""
    t0 = time.monotonic()
    b = DiskBrowser(repo_or_chunkstore, backup_id)
    fs, node, inner = b.lookup(path)
    name = node.name if inner else (path.strip("/").split("/")[-1] or "root")
    if name == "/":
        name = "root"
    target = os.path.abspath(os.fspath(target_dir))
    if target_fd is None:
        os.makedirs(target, exist_ok=True)
    res = DiskFileRestoreResult(backup_id, path, os.path.join(target, name))
    ex = _Extractor(fs, res, (os.geteuid() == 0) if owners is None else owners)
    tfd = os.open(target, _DIR_FLAGS) if target_fd is None else os.dup(target_fd)
    try:
        bname = _safe_name(name)
        try:
            os.lstat(bname, dir_fd=tfd)
            raise Conflict(f"{res.target} already exists")
        except FileNotFoundError:
            pass
        ex.node(bname, tfd, node, path)
        os.fsync(tfd)
    finally:
        os.close(tfd)
    res.duration = time.monotonic() - t0
    return res
