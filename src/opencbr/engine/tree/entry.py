"""One catalog entry (a file, directory, symlink or special file of a backed-up tree) and its binary
record format.

A record is self-delimiting and starts with its own length, so a reader can skip records without
decoding them, and the incremental backup can copy an unchanged file's record from the parent catalog
verbatim (patching only the access time, at a fixed offset)::

    u32  record length (including these 4 bytes)
    HDR  type u8, flags u8, reserved u16, st_mode u32, uid u32, gid u32, size u64,
         mtime_ns i64, ctime_ns i64, atime_ns i64, ino u64, nlink u32, rdev u64
    u16 + path            relative path, '/'-separated, b"" for the root of the tree
    u16 + user name       (may be empty: uid without a name)
    u16 + group name
    u16 + link target     symlinks only (empty otherwise)
    [F_XATTRS]  u16 count, then per xattr: u16 + name, u32 + value
    [F_SPARSE]  u32 count, then per data extent: u64 offset, u64 length (everything else is a hole)
    [type FILE] u32 count, then per chunk: 32-byte digest, u32 length [, u32 offset if F_SLICES]

``chunks`` are ``(digest, length, offset)``: ``length`` bytes starting at ``offset`` of that chunk's
plaintext. A file chunked on its own uses whole chunks (offset 0; the record omits offsets); a small
file packed into a shared *bundle* chunk (see bundle.py) is one slice of it (``F_SLICES``).

A regular file's content is the concatenation of its chunks, laid over its data extents (the whole
file when it is not sparse). Members of a hard-link group (``nlink > 1``) each carry the full chunk
list and the source inode number, so any one of them restores on its own (a sub-path restore) and a
full restore links the later members to the first. For regular files ``rdev`` holds the source
``st_dev``, so groups are keyed by (device, inode) even across file systems.

Paths are raw bytes (file names need not be UTF-8). The catalog is sorted in depth-first pre-order
with siblings by name bytes; :func:`path_key` maps a path to a bytes key whose plain byte order *is*
that order (``/`` becomes NUL, which cannot occur in names), so merge-joins and bisects are simple
byte comparisons.
"""

from __future__ import annotations

import stat
import struct
from dataclasses import dataclass, field

DIGEST_SIZE = 32

FILE, DIR, SYMLINK, CHR, BLK, FIFO, SOCK = 1, 2, 3, 4, 5, 6, 7
TYPE_NAMES = {FILE: "file", DIR: "dir", SYMLINK: "symlink", CHR: "chardev", BLK: "blockdev",
              FIFO: "fifo", SOCK: "socket"}
_IFMT_TO_TYPE = {stat.S_IFREG: FILE, stat.S_IFDIR: DIR, stat.S_IFLNK: SYMLINK, stat.S_IFCHR: CHR,
                 stat.S_IFBLK: BLK, stat.S_IFIFO: FIFO, stat.S_IFSOCK: SOCK}

F_XATTRS = 0x01
F_SPARSE = 0x02
F_SLICES = 0x04

_LEN = struct.Struct("<I")
HDR = struct.Struct("<BBHIIIQqqqQIQ")
_LEN_HDR = struct.Struct("<I" + HDR.format[1:])  # the length word and the header in one unpack
_U16 = struct.Struct("<H")
MAX_PATH = 0xFFFF  # bytes of a recorded path (its length is a u16)
_U32 = struct.Struct("<I")
_EXT = struct.Struct("<QQ")
_CHUNK = struct.Struct(f"<{DIGEST_SIZE}sI")
_SLICE = struct.Struct(f"<{DIGEST_SIZE}sII")
# Byte offset of atime_ns inside a record (after the length word): type..mtime_ns, ctime_ns.
ATIME_OFFSET = _LEN.size + struct.calcsize("<BBHIIIQqq")
_ATIME = struct.Struct("<q")
PATH_OFFSET = _LEN.size + HDR.size


def type_of_mode(mode: int) -> int | None:
    """Catalog type of an ``st_mode``, or None for a type we do not know (e.g. a door/whiteout)."""
    return _IFMT_TO_TYPE.get(stat.S_IFMT(mode))


def path_key(path: bytes) -> bytes:
    """Sort key of a catalog path: byte order of keys == depth-first pre-order, siblings by name."""
    return path.replace(b"/", b"\0")


@dataclass
class Entry:
    """A decoded catalog entry. ``chunks`` is ``[(digest, length), ...]``; ``extents`` the data
    extents of a sparse file (None when not sparse); ``xattrs`` ``[(name, value), ...]``."""

    path: bytes
    type: int
    mode: int
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime_ns: int = 0
    ctime_ns: int = 0
    atime_ns: int = 0
    ino: int = 0
    nlink: int = 1
    rdev: int = 0
    user: bytes = b""
    group: bytes = b""
    link: bytes = b""
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)
    extents: list[tuple[int, int]] | None = None
    chunks: list[tuple[bytes, int, int]] = field(default_factory=list)

    @property
    def type_name(self) -> str:
        return TYPE_NAMES.get(self.type, "unknown")

    @property
    def key(self) -> bytes:
        return path_key(self.path)

    @property
    def name(self) -> bytes:
        return self.path.rsplit(b"/", 1)[-1]

    @property
    def hardlinked(self) -> bool:
        return self.type == FILE and self.nlink > 1

    def data_extents(self) -> list[tuple[int, int]]:
        """Where the chunks go in the file: the sparse map, or the whole file."""
        if self.extents is not None:
            return self.extents
        return [(0, self.size)] if self.size else []

    def chunk_offsets(self):
        """Yield ``(digest, length, file_offset, offset_in_chunk)`` pieces: every chunk laid over the
        data extents (a chunk of a sparse file may straddle a hole and yield several pieces)."""
        ext = self.data_extents()
        ei = 0
        e_off, e_len = ext[0] if ext else (0, 0)
        used = 0  # bytes of the current extent already covered
        for d, ln, coff in self.chunks:
            left = ln
            while left:
                if used == e_len:
                    ei += 1
                    e_off, e_len = ext[ei]
                    used = 0
                take = min(left, e_len - used)
                yield d, take, e_off + used, coff + ln - left  # digest, bytes, file offset, offset in chunk
                used += take
                left -= take


def encode(e: Entry) -> bytes:
    sliced = any(c[2] for c in e.chunks)
    flags = (F_XATTRS if e.xattrs else 0) | (F_SPARSE if e.extents is not None else 0) | (F_SLICES if sliced else 0)
    parts = [
        b"",  # length placeholder
        HDR.pack(e.type, flags, 0, e.mode, e.uid, e.gid, e.size, e.mtime_ns, e.ctime_ns, e.atime_ns,
                 e.ino, e.nlink, e.rdev),
        _U16.pack(len(e.path)), e.path,
        _U16.pack(len(e.user)), e.user,
        _U16.pack(len(e.group)), e.group,
        _U16.pack(len(e.link)), e.link,
    ]
    if e.xattrs:
        parts.append(_U16.pack(len(e.xattrs)))
        for name, value in e.xattrs:
            parts += (_U16.pack(len(name)), name, _U32.pack(len(value)), value)
    if e.extents is not None:
        parts.append(_U32.pack(len(e.extents)))
        parts += [_EXT.pack(o, n) for o, n in e.extents]
    if e.type == FILE:
        parts.append(_U32.pack(len(e.chunks)))
        if sliced:
            parts += [_SLICE.pack(d, n, o) for d, n, o in e.chunks]
        else:
            parts += [_CHUNK.pack(d, n) for d, n, _o in e.chunks]
    body_len = sum(map(len, parts))
    parts[0] = _LEN.pack(body_len + _LEN.size)
    return b"".join(parts)


class RecordError(ValueError):
    """A record does not parse (the chunk it came from was authenticated, so this means a bug or a
    hand-crafted catalog)."""


def _str(buf, pos: int) -> tuple[bytes, int]:
    (n,) = _U16.unpack_from(buf, pos)
    pos += 2
    return bytes(buf[pos:pos + n]), pos + n


def decode(rec) -> Entry:
    """Decode one record (bytes or memoryview holding exactly the record). (The four strings' u16
    lengths are read byte by byte and a file of one chunk or slice is unpacked directly: a restore
    decodes every record it creates, and this halved the cost of a decode.)"""
    try:
        (ln, typ, flags, _r, mode, uid, gid, size, mt, ct, at, ino, nlink, rdev) = _LEN_HDR.unpack_from(rec, 0)
        if ln != len(rec):
            raise RecordError("record length mismatch")
        pos = PATH_OFFSET
        n = rec[pos] | rec[pos + 1] << 8
        path = bytes(rec[pos + 2:pos + 2 + n])
        pos += 2 + n
        n = rec[pos] | rec[pos + 1] << 8
        user = bytes(rec[pos + 2:pos + 2 + n])
        pos += 2 + n
        n = rec[pos] | rec[pos + 1] << 8
        group = bytes(rec[pos + 2:pos + 2 + n])
        pos += 2 + n
        n = rec[pos] | rec[pos + 1] << 8
        link = bytes(rec[pos + 2:pos + 2 + n])
        pos += 2 + n
        xattrs: list[tuple[bytes, bytes]] = []
        if flags & F_XATTRS:
            (n,) = _U16.unpack_from(rec, pos)
            pos += 2
            for _ in range(n):
                name, pos = _str(rec, pos)
                (vl,) = _U32.unpack_from(rec, pos)
                pos += 4
                xattrs.append((name, bytes(rec[pos:pos + vl])))
                pos += vl
        extents = None
        if flags & F_SPARSE:
            (n,) = _U32.unpack_from(rec, pos)
            pos += 4
            extents = [_EXT.unpack_from(rec, pos + i * _EXT.size) for i in range(n)]
            pos += n * _EXT.size
        chunks: list[tuple[bytes, int, int]] = []
        if typ == FILE:
            (n,) = _U32.unpack_from(rec, pos)
            pos += 4
            if flags & F_SLICES:
                if n == 1:
                    chunks = [_SLICE.unpack_from(rec, pos)]
                else:
                    chunks = list(_SLICE.iter_unpack(rec[pos:pos + n * _SLICE.size]))
                pos += n * _SLICE.size
            else:
                chunks = [(d, c, 0) for d, c in _CHUNK.iter_unpack(rec[pos:pos + n * _CHUNK.size])]
                pos += n * _CHUNK.size
        if pos != ln:
            raise RecordError("trailing bytes in record")
    except (struct.error, IndexError) as e:
        raise RecordError(f"truncated record: {e}") from None
    return Entry(path, typ, mode, uid, gid, size, mt, ct, at, ino, nlink, rdev, user, group, link, xattrs,
                 extents, chunks)


def record_path(rec) -> bytes:
    """The path of a record without decoding the rest."""
    (n,) = _U16.unpack_from(rec, PATH_OFFSET)
    return bytes(rec[PATH_OFFSET + 2:PATH_OFFSET + 2 + n])


def record_header(rec) -> tuple:
    """The fixed header fields ``(type, flags, _, mode, uid, gid, size, mtime_ns, ctime_ns, atime_ns,
    ino, nlink, rdev)`` of a record."""
    return HDR.unpack_from(rec, 4)


def record_digests(rec) -> list[bytes]:
    """The chunk digests of a FILE record, skipping everything else (the incremental backup's hot
    path: one call per unchanged file)."""
    flags = rec[5]
    pos = PATH_OFFSET
    # path, user, group, link: u16 lengths, little-endian, read byte by byte (cheaper than unpack_from)
    pos += 2 + (rec[pos] | rec[pos + 1] << 8)
    pos += 2 + (rec[pos] | rec[pos + 1] << 8)
    pos += 2 + (rec[pos] | rec[pos + 1] << 8)
    pos += 2 + (rec[pos] | rec[pos + 1] << 8)
    if not flags & (F_XATTRS | F_SPARSE):  # (most files)
        step = _SLICE.size if flags & F_SLICES else _CHUNK.size
        if len(rec) == pos + 4 + step and _U32.unpack_from(rec, pos)[0] == 1:  # one chunk or slice
            return [bytes(rec[pos + 4:pos + 4 + DIGEST_SIZE])]
    if flags & F_XATTRS:
        (n,) = _U16.unpack_from(rec, pos)
        pos += 2
        for _ in range(n):
            (kl,) = _U16.unpack_from(rec, pos)
            pos += 2 + kl
            (vl,) = _U32.unpack_from(rec, pos)
            pos += 4 + vl
    if flags & F_SPARSE:
        (n,) = _U32.unpack_from(rec, pos)
        pos += 4 + n * _EXT.size
    (n,) = _U32.unpack_from(rec, pos)
    pos += 4
    if n == 1:  # (most files: one chunk or one slice of a bundle)
        return [bytes(rec[pos:pos + DIGEST_SIZE])]
    step = _SLICE.size if flags & F_SLICES else _CHUNK.size
    return [bytes(rec[pos + i * step:pos + i * step + DIGEST_SIZE]) for i in range(n)]


def with_atime(rec: bytes, atime_ns: int) -> bytes:
    """A copy of ``rec`` with a new access time (the one field an unchanged file may differ in)."""
    b = bytearray(rec)
    _ATIME.pack_into(b, ATIME_OFFSET, atime_ns)
    return bytes(b)


def iter_records(buf):
    """Yield memoryviews of the consecutive records in a catalog chunk's plaintext."""
    mv = memoryview(buf)
    pos, end = 0, len(mv)
    while pos < end:
        if end - pos < _LEN.size:
            raise RecordError("truncated catalog chunk")
        (ln,) = _LEN.unpack_from(mv, pos)
        if ln < PATH_OFFSET + 2 or pos + ln > end:
            raise RecordError("bad record length in catalog chunk")
        yield mv[pos:pos + ln]
        pos += ln
