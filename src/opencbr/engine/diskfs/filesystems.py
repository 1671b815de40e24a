"""Read-only file-system parsers behind one small interface (:class:`FsNode`).

Parsers: the Dissect family (``dissect.extfs`` for ext2/3/4, ``dissect.fat`` for FAT12/16/32,
``dissect.volume`` for MBR/GPT partition tables; Fox-IT, maintained, pure Python on top of
``dissect.cstruct``). LICENSE NOTE: those three are AGPL-3.0-or-later (cstruct/util are Apache-2.0)
while OpenCBR is Apache-2.0; they are imported only here and in volumes.py, lazily (only when a disk
backup is browsed), so replacing them means reimplementing :class:`FileSystem` and ``find_volumes``
and nothing else. Chosen over a FUSE mount of the backup (``fuse2fs``/``mount -o loop``) because:
no kernel module, privileges or mount namespace is needed in a worker (containers often have none);
a malformed or hostile image is parsed in Python, not by the kernel's file-system code; and the
parsers read through any file-like object, so they work directly on :class:`DiskBackupView`, fetching
only the blocks they touch. Checked here: both parse ``mkfs.ext4 -d`` images (extents, htree
directories, xattrs, symlinks, sparse files) and ``mkfs.vfat`` + ``mcopy`` images with long names.
Limits (documented, not silent): ext4 ``inline_data`` files longer than the inode body, and exFAT/NTFS/
XFS/Btrfs volumes are not browsed (the volume is listed with its type, browsing it raises
InvalidArgument).
"""

from __future__ import annotations

import calendar
import stat
from dataclasses import dataclass
from typing import BinaryIO, Iterator

from ..errors import Damaged, InvalidArgument, Missing

EXT_MAGIC_OFFSET = 1080
EXT_MAGIC = b"\x53\xef"


def probe(fh: BinaryIO) -> str | None:
    """'ext' or 'fat' if ``fh`` (positioned anywhere) starts with such a file system, else None."""
    fh.seek(EXT_MAGIC_OFFSET)
    if fh.read(2) == EXT_MAGIC:
        return "ext"
    fh.seek(0)
    boot = fh.read(512)
    if len(boot) == 512 and boot[510:512] == b"\x55\xaa":
        from dissect.fat.fat import validate_bpb

        try:
            validate_bpb(boot)
        except Exception:  # noqa: BLE001 - any parse failure means "not FAT"
            return None
        if boot[3:11] == b"EXFAT   ":
            return None
        return "fat"
    return None


@dataclass
class FsNode:
    """A directory entry of a parsed file system."""

    name: str
    type: str  # file, dir, symlink, chardev, blockdev, fifo, socket
    size: int
    mode: int
    mtime_ns: int
    atime_ns: int
    uid: int
    gid: int
    link: str | None
    raw: object  # the parser's node

    @property
    def is_dir(self) -> bool:
        return self.type == "dir"


_EXT_TYPES = {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink", stat.S_IFCHR: "chardev",
              stat.S_IFBLK: "blockdev", stat.S_IFIFO: "fifo", stat.S_IFSOCK: "socket"}


class FileSystem:
    """Common interface: ``root``, ``lookup(path)``, ``children(node)``, ``open(node)``."""

    kind = ""

    def lookup(self, path: str) -> FsNode:
        node = self.root
        for part in [p for p in path.split("/") if p not in ("", ".")]:
            if part == "..":
                raise InvalidArgument("'..' is not allowed in a path")
            if not node.is_dir:
                raise Missing(f"{path}: not a directory")
            for c in self.children(node):
                if self._match(c.name, part):
                    node = c
                    break
            else:
                raise Missing(f"{path} is not in the file system")
        return node

    @staticmethod
    def _match(name: str, part: str) -> bool:
        return name == part

    root: FsNode

    def children(self, node: FsNode) -> Iterator[FsNode]:  # pragma: no cover - interface
        raise NotImplementedError

    def open(self, node: FsNode) -> BinaryIO:  # pragma: no cover - interface
        raise NotImplementedError


class ExtFileSystem(FileSystem):
    kind = "ext"

    def __init__(self, fh: BinaryIO):
        from dissect.extfs import ExtFS

        try:
            self.fs = ExtFS(fh)
        except Exception as e:  # noqa: BLE001
            raise Damaged(f"cannot parse the ext file system: {e}") from None
        self.root = self._node("/", self.fs.root)

    def _node(self, name: str, ino) -> FsNode:
        try:
            mode = ino.inode.i_mode
            ftype = _EXT_TYPES.get(stat.S_IFMT(mode), "file")
            link = ino.link if ftype == "symlink" else None
            uid = ino.inode.i_uid | (ino.inode.i_uid_high << 16 if hasattr(ino.inode, "i_uid_high") else 0)
            gid = ino.inode.i_gid | (ino.inode.i_gid_high << 16 if hasattr(ino.inode, "i_gid_high") else 0)
            return FsNode(name, ftype, ino.size if ftype != "dir" else 0, mode, ino.mtime_ns, ino.atime_ns,
                          uid, gid, link, ino)
        except Damaged:
            raise
        except Exception as e:  # noqa: BLE001
            raise Damaged(f"cannot parse inode of {name!r}: {e}") from None

    def children(self, node: FsNode) -> Iterator[FsNode]:
        try:
            kids = list(node.raw.iterdir())
        except Exception as e:  # noqa: BLE001
            raise Damaged(f"cannot read directory {node.name!r}: {e}") from None
        out = [self._node(k.filename, k) for k in kids if k.filename not in (".", "..")]
        out.sort(key=lambda n: n.name)
        return iter(out)

    def open(self, node: FsNode) -> BinaryIO:
        return node.raw.open()

    def xattrs(self, node: FsNode) -> list[tuple[str, bytes]]:
        try:
            return [(x.name, bytes(x.value)) for x in node.raw.xattr]
        except Exception:  # noqa: BLE001
            return []


class FatFileSystem(FileSystem):
    kind = "fat"

    def __init__(self, fh: BinaryIO):
        from dissect.fat import FATFS

        try:
            self.fs = FATFS(fh)
        except Exception as e:  # noqa: BLE001
            raise Damaged(f"cannot parse the FAT file system: {e}") from None
        self.root = FsNode("/", "dir", 0, stat.S_IFDIR | 0o755, 0, 0, 0, 0, None, self.fs.root)

    @staticmethod
    def _ns(dt) -> int:
        # FAT stores local time without a zone; we present it as UTC (what mtools/mkfs wrote here).
        return calendar.timegm(dt.timetuple()) * 10**9 + dt.microsecond * 1000

    @staticmethod
    def _name(d) -> str:
        """Long name if any; else the 8.3 name with the case bits Windows NT and Linux set in
        ``DIR_NTRes`` (0x08 base in lower case, 0x10 extension in lower case), as Linux shows it."""
        if d.ldirents:
            return d.name
        name = d.short_name
        flags = d.dirent.DIR_NTRes
        base, dot, ext = name.partition(".")
        if flags & 0x08:
            base = base.lower()
        if flags & 0x10:
            ext = ext.lower()
        return base + dot + ext

    def _node(self, d) -> FsNode:
        is_dir = d.is_directory()
        mode = (stat.S_IFDIR | 0o755) if is_dir else (stat.S_IFREG | (0o444 if d.is_readonly() else 0o644))
        return FsNode(self._name(d), "dir" if is_dir else "file", 0 if is_dir else d.size, mode, self._ns(d.mtime),
                      self._ns(d.atime), 0, 0, None, d)

    @staticmethod
    def _match(name: str, part: str) -> bool:
        return name.upper() == part.upper()  # FAT names are case-insensitive

    def children(self, node: FsNode) -> Iterator[FsNode]:
        try:
            kids = [k for k in node.raw.iterdir() if not k.is_volume_id() and k.name not in (".", "..")]
        except Exception as e:  # noqa: BLE001
            raise Damaged(f"cannot read directory {node.name!r}: {e}") from None
        out = [self._node(k) for k in kids]
        out.sort(key=lambda n: n.name)
        return iter(out)

    def open(self, node: FsNode) -> BinaryIO:
        return node.raw.open()

    def xattrs(self, node: FsNode) -> list[tuple[str, bytes]]:
        return []


def open_filesystem(fh: BinaryIO, kind: str | None = None) -> FileSystem:
    kind = kind or probe(fh)
    if kind == "ext":
        return ExtFileSystem(fh)
    if kind == "fat":
        return FatFileSystem(fh)
    raise InvalidArgument("no supported file system (ext2/3/4, FAT12/16/32) found there")
