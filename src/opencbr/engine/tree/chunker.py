"""``FileChunker``: read one regular file and store its content as content-defined chunks.

Chunking: FastCDC (``pyfastcdc``, Cython, releases the GIL while cutting) over each file on its own,
so identical files, and identical runs inside files, give identical chunks wherever they are (dedup
across files and backups of a vault). A file smaller than the minimum chunk size is one chunk and
skips the CDC pass.

Chunk size: the average trades what a scattered 64 KiB rewrite of a big file costs (the whole chunk
around it is stored again) against the number of chunks (index memory in every later backup, per-chunk
CPU, refs in every manifest) and the per-worker buffer (2 x max). Measured with bench/tree.py
(``make_dataset.py tree`` 30k files / 1.64 GB, ``mutate-tree``; encrypted; repository MB after first /
after the changed re-backup / peak RSS of the first backup):

    avg,min,max KiB   effective avg   first      after change   growth   RSS
    512,128,2048      ~690 KiB        1097.7     1106.6          +7.3    136 MB
    768,256,4096      ~1.1 MiB        1095.6     1104.2          +8.5    157 MB   <- default
    1024,512,8192     ~1.4 MiB        1095.2     1103.7          +8.4    176 MB

(the 512 KiB run also paid 1.6 MB for symlink atimes, since fixed, so its growth is ~+7.3). The
differences in stored bytes are under 0.3%; 768/256/4096 keeps restic's ~1 MiB average with half of
the buffer memory of an 8 MiB maximum. With max 2 MiB, 6% of the chunks of random data were forced
cuts (``max`` reached), which is why the maximum stays at 4 MiB.

Reads: ``O_NOATIME`` (our reads do not touch the access times we record; falls back without it when
the kernel refuses, i.e. we are neither root nor the owner), never following symlinks, and the file is
re-checked with ``fstat`` after opening so that a path swapped for something else between the walk and
the read is noticed. Sparse files (allocated blocks < size) are read through their data extents only
(``SEEK_DATA``/``SEEK_HOLE``): holes are recorded, never read or stored.

Keyed cut points (encrypted vaults). With the public gear table, where FastCDC cuts depends on the
content alone, so whoever reads the object store and sees record sizes could chunk a file they know
and test whether it is in the vault (the chunk-size fingerprint restic's Sec #5291 and borg's keyed
chunkers address). An encrypted vault therefore cuts with a gear table of its own: 256 x 64 bits
derived from its data key (``cutting.ChunkingSecret``, HKDF with a label of its own), and the
small-file bundles and catalog chunks, which cut on a CRC-32, decide through a 64 Ki-entry keyed
table instead of ``crc % modulus``. A whole keyed table, not pyfastcdc's ``seed``: the seed only
XORs one 64-bit constant into the public table, and since bit ``j`` of the gear hash depends only on
bits ``0..j`` of the table, cut points seen on one known file give that constant away a few bits at
a time. pyfastcdc (pinned) takes no table, so :func:`_keyed_fastcdc` writes ours into the tables a
seeded instance allocated for itself, after checking the object is laid out exactly as expected
(else it refuses: an encrypted vault is never cut with public parameters by accident). The cut loop
is the same C code reading a different table: no cost per byte. Unencrypted vaults keep the public
parameters (their chunk names are plain hashes of the content anyway). Which cutting made a backup
is recorded in its (sealed) manifest (``chunking.cut``); restores never need it. An old encrypted
vault's next backup cuts changed files the keyed way: they are stored once more (dedup with the old
cuts is lost once), unchanged files keep their recorded chunks.
"""

from __future__ import annotations

import ctypes
import errno
import fcntl
import os
import stat
import struct
import threading
from dataclasses import dataclass, field
from typing import Callable

from pyfastcdc import FastCDC

from ...system.aligned import ALIGN, O_DIRECT, address_of, aligned_buffer
from ...system.beneath import PathSwapped, open_at
from ...system.sparse import data_extents
from ..errors import BackupCancelled
from .xattrs import read_xattrs


@dataclass(frozen=True)
class ChunkParams:
    """FastCDC parameters. Note pyfastcdc's effective average is about ``avg + min``."""

    avg: int = 768 << 10
    min: int = 256 << 10
    max: int = 4 << 20

    def to_dict(self, cut: str = "public") -> dict:
        return {"algorithm": "fastcdc2020", "avg": self.avg, "min": self.min, "max": self.max, "cut": cut}


DEFAULT_PARAMS = ChunkParams()
READ_SIZE = 4 << 20
# Files at least this big are read with O_DIRECT: no page-cache copy and no cache pages for data read
# once, and a backup does not evict the machine's working set (measured on the 30k-file tree, whose
# files >= 1 MiB hold 1.03 of its 1.63 GB: 0.3-0.4 s less system CPU). Smaller files are a read or
# two each, where the kernel's readahead helps more than the saved copy.
DIRECT_MIN = 1 << 20
PREFETCH = 8 << 20
_O_NOATIME = getattr(os, "O_NOATIME", 0)


_LAYOUT_SEED = 1  # makes pyfastcdc allocate tables of its own, which we then overwrite


def _gear_tables(cdc: FastCDC, params: ChunkParams) -> tuple[int, int] | None:
    """Addresses of the gear tables a seeded pyfastcdc 0.3.1 ``FastCDC`` cuts with, or None unless the
    object is exactly as expected: its header (16 bytes), its ``_Config`` struct (``u32 avg, min, max``;
    four ``u64`` masks; the ``gear`` and ``gear_ls`` pointers the cut loop reads) and the two pointers
    to the tables it owns, equal to those, holding the public table XOR the seed."""
    from pyfastcdc.py.constants import GEAR, GEAR_LS

    if type(cdc).__basicsize__ < 96:
        return None
    raw = ctypes.string_at(id(cdc), 96)
    if struct.unpack_from("<3I", raw, 16) != (params.avg, params.min, params.max):
        return None
    gear, gear_ls, own, own_ls = struct.unpack_from("<4Q", raw, 64)
    if not gear or not gear_ls or (gear, gear_ls) != (own, own_ls):
        return None
    if ctypes.string_at(gear, 2048) != struct.pack("<256Q", *(g ^ _LAYOUT_SEED for g in GEAR)):
        return None
    if ctypes.string_at(gear_ls, 2048) != struct.pack("<256Q", *(g ^ (_LAYOUT_SEED << 1) for g in GEAR_LS)):
        return None
    return gear, gear_ls


def _keyed_fastcdc(params: ChunkParams, gear: tuple[int, ...]) -> FastCDC:
    """A FastCDC cutting with ``gear`` instead of the public table (see the module docstring)."""
    if len(gear) != 256:
        raise ValueError("a gear table has 256 entries")
    cdc = FastCDC(params.avg, min_size=params.min, max_size=params.max, seed=_LAYOUT_SEED)
    at = _gear_tables(cdc, params)
    if at is None:
        raise RuntimeError("cannot install the vault's keyed gear table: this pyfastcdc build is not the "
                           "one OpenCBR was made for (see constraints.txt); refusing to cut with public "
                           "parameters in an encrypted vault")
    ctypes.memmove(at[0], struct.pack("<256Q", *gear), 2048)
    ctypes.memmove(at[1], struct.pack("<256Q", *((g << 1) & 0xFFFFFFFFFFFFFFFF for g in gear)), 2048)
    return cdc


@dataclass
class FileData:
    """What reading a file gave: chunk list, sparse map (None if not sparse), bytes actually read, the
    size to record, and a warning when the file changed or could not be read completely."""

    chunks: list[tuple[bytes, int, int]] = field(default_factory=list)
    extents: list[tuple[int, int]] | None = None
    data: bytes | None = None  # small files: the content, to be packed into a bundle by the caller
    crc: int | None = None  # CRC-32 of ``data`` when the reader computed it (bundle cut points)
    bytes_read: int = 0
    size: int = 0
    warning: str | None = None
    xattrs: list[tuple[bytes, bytes]] = field(default_factory=list)  # read through the open descriptor
    xattr_problems: list[str] = field(default_factory=list)
    # Set when another regular file had taken the walked one's name (saved anew and renamed over it)
    # by the time it was opened: that file was read, and its record takes this stat, not the walk's.
    stat: os.stat_result | None = None


# What a read tells of a file (also the C reader's words for its codes, sources.py).
VANISHED = "vanished during the backup"
REPLACED = "replaced by another file during the backup"
REPLACED_READ = "replaced by another file during the backup (the file there when it was read is stored)"
SIZE_CHANGED = "changed size while it was being read (stored as read)"
CHANGED = "changed while it was being read (stored as read)"


def cannot_open(strerror: str) -> str:
    return f"cannot open: {strerror}"


def read_error(strerror: str) -> str:
    return f"read error: {strerror}"


class FileUnreadable(Exception):
    """The file could not be opened or read (permission, I/O error, vanished, replaced)."""

    def __init__(self, message: str, vanished: bool = False):
        super().__init__(message)
        self.vanished = vanished


def open_noatime(where: bytes | tuple[int, bytes]) -> int:
    """``where``: a path, or (a descriptor of a tree's root, a path below it). Below a root nothing is
    followed out of it and no symlink on the way (``beneath.open_at``; a symlink there is PathSwapped):
    the walk's entry may have been swapped meanwhile, and an open is itself an action -- a device node's
    driver acts on open -- so it must not be led elsewhere, not merely be checked afterwards."""
    # O_NONBLOCK: a fifo (or a device) put where the walk saw a regular file opens at once, and the
    # fstat check then says so, instead of the open waiting for a writer; regular files ignore it.
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    if _O_NOATIME:
        try:
            return _open(where, flags | _O_NOATIME)
        except PermissionError:
            pass  # EPERM: not the owner and not privileged; open without O_NOATIME
    return _open(where, flags)


def _open(where: bytes | tuple[int, bytes], flags: int) -> int:
    if isinstance(where, tuple):
        return open_at(where[0], os.fsdecode(where[1]), flags)
    return os.open(where, flags)


class _ExtentSource:
    """Reads the concatenated data extents of a file (``pread``; releases the GIL). Extents that end
    early (the file shrank under us) are shortened to what was read."""

    def __init__(self, fd: int, extents: list[tuple[int, int]]):
        self.fd = fd
        self.extents = list(extents)
        self.i = 0
        self.pos = self.extents[0][0] if self.extents else 0

    def readinto(self, mv: memoryview) -> int:
        while self.i < len(self.extents):
            off, ln = self.extents[self.i]
            left = off + ln - self.pos
            if left > 0:
                n = os.preadv(self.fd, [mv[:min(len(mv), left)]], self.pos)
                if n > 0:
                    self.pos += n
                    return n
                self.extents[self.i] = (off, self.pos - off)  # truncated under us
            self.i += 1
            if self.i < len(self.extents):
                self.pos = self.extents[self.i][0]
        return 0


class _FdSource:
    """Sequential reads. Buffered: the next ``PREFETCH`` bytes are always requested ahead (``WILLNEED``
    starts asynchronous readahead), so the disk works while this thread hashes and compresses.
    ``direct``: the fd is in ``O_DIRECT`` mode (reads go from the device into our aligned buffer)."""

    def __init__(self, fd: int, direct: bool = False):
        self.fd = fd
        self.pos = 0
        self.hinted = 0
        self.direct = direct
        if not direct:
            try:
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            except OSError:
                pass

    def readinto(self, mv: memoryview) -> int:
        if not self.direct and self.pos + PREFETCH > self.hinted:
            try:
                os.posix_fadvise(self.fd, self.hinted, self.pos + 2 * PREFETCH - self.hinted, os.POSIX_FADV_WILLNEED)
            except OSError:
                pass
            self.hinted = self.pos + 2 * PREFETCH
        n = os.readv(self.fd, [mv])
        self.pos += n
        return n


def _try_direct(fd: int) -> bool:
    """Switch an open file to ``O_DIRECT`` (see system/aligned.py for why); False where refused."""
    if not O_DIRECT:
        return False
    try:
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | O_DIRECT)
        return True
    except OSError:
        return False


Put = Callable[[object], bytes]  # data -> digest (stores the chunk unless the repository has it)


class FileChunker:
    """Reads files and stores their chunks. Holds a FastCDC object, which is not thread-safe: make one
    per worker thread. ``gear``: the vault's keyed gear table (``cutting.ChunkingSecret``), None for
    the public one."""

    def __init__(self, params: ChunkParams, put: Put, cancel: threading.Event | None = None,
                 on_bytes: Callable[[int], None] | None = None, gear: tuple[int, ...] | None = None):
        self.params = params
        self.put = put
        self.cancel = cancel
        self.on_bytes = on_bytes or (lambda n: None)
        if gear is None:
            self.cdc = FastCDC(params.avg, min_size=params.min, max_size=params.max)
        else:
            self.cdc = _keyed_fastcdc(params, gear)
        # One buffer per worker for the whole run: pyfastcdc's cut_stream allocates (and the kernel
        # zeroes) a fresh 2 x max_size buffer per file, which was ~10% of the CPU of a backup. Page-
        # aligned, so that big files can be read with O_DIRECT into it.
        self._buf = aligned_buffer(max(2 * params.max, READ_SIZE + params.max) + ALIGN)
        self._mv = memoryview(self._buf)
        self._addr = address_of(self._buf)

    def _chunk_stream(self, src, out: "FileData") -> None:
        """CDC over everything ``src.readinto`` yields, through the reusable buffer. A chunk is cut only
        while at least ``max`` bytes (or the end of the file) follow its start, so the cut points are
        exactly those of chunking the whole file at once. The uncut tail is moved so that it *ends* on
        a page boundary: every read then lands page-aligned (as O_DIRECT requires)."""
        mv, mx = self._mv, self.params.max
        cap = len(mv)
        base = end = 0  # valid data is mv[base:end]
        eof = False
        while True:
            while not eof and end < cap:
                n = src.readinto(mv[end:min(cap, end + READ_SIZE)])
                if n <= 0:
                    eof = True
                else:
                    end += n
            if end == base:
                return
            pos = base
            for c in self.cdc.cut_buf(mv[base:end]):
                if not eof and end - (base + c.offset) < mx:
                    break
                self._store(c.data, out)
                pos = base + c.offset + c.length
            if eof and pos >= end:
                return
            tail = end - pos
            nb = -tail % ALIGN
            ctypes.memmove(self._addr + nb, self._addr + pos, tail)  # (regions may overlap)
            base, end = nb, nb + tail

    def read_stream(self, src, size: int, extents: list[tuple[int, int]] | None = None) -> FileData:
        """Store content that is not a file of this machine (a stored backup's file, for a replica):
        ``src.readinto`` yields the file's data -- its ``extents`` laid end to end when it is sparse --
        and it is cut exactly as :meth:`read_file` cuts a file of that content."""
        out = FileData(size=size, extents=extents)
        self._chunk_stream(src, out)
        if extents is not None:
            self.on_bytes(max(0, size - out.bytes_read))  # holes count as done for progress
        return out

    def read_file(self, where: bytes | tuple[int, bytes], st: os.stat_result, small_limit: int = 0) -> FileData:
        """Read and store one file (``where``: as :func:`open_noatime` takes it). A file of fewer than
        ``small_limit`` bytes (at ``lstat`` time and still when read) is not stored: its content is
        returned in ``FileData.data`` for a bundle."""
        try:
            fd = open_noatime(where)
        except FileNotFoundError:
            raise FileUnreadable(VANISHED, vanished=True) from None
        except PathSwapped:  # (a symlink on the way, or the file one now: not what the walk saw)
            raise FileUnreadable(REPLACED, vanished=True) from None
        except OSError as e:
            raise FileUnreadable(cannot_open(e.strerror or str(e))) from None
        try:
            fst = os.fstat(fd)
            replaced = (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino)
            if not stat.S_ISREG(fst.st_mode) or (replaced and (st.st_nlink != 1 or fst.st_nlink != 1)):
                raise FileUnreadable(REPLACED, vanished=True)
            try:
                out = self._read(fd, fst, small_limit)
            except OSError as e:
                raise FileUnreadable(read_error(e.strerror or str(e))) from None
            if replaced:  # (saved anew and renamed over it: the file there now is stored, with its own stat)
                out.stat, out.warning, st = fst, out.warning or REPLACED_READ, fst
            out.xattrs, out.xattr_problems = read_xattrs(fd)
            # A small file came in one read (FileData.data): the descriptor's stat before it tells as
            # much as one after it, and a second fstat per small file is a system call less for
            # trees of small files (a change after the read shows in the next backup's ctime anyway).
            end = fst if out.data is not None else os.fstat(fd)
            if (end.st_mtime_ns, end.st_size) != (st.st_mtime_ns, st.st_size) and out.warning is None:
                out.warning = CHANGED
            return out
        finally:
            os.close(fd)

    def _store(self, data, out: FileData) -> None:
        if self.cancel is not None and self.cancel.is_set():
            raise BackupCancelled("backup cancelled")
        out.chunks.append((self.put(data), len(data), 0))
        out.bytes_read += len(data)
        self.on_bytes(len(data))

    def _read(self, fd: int, st: os.stat_result, small_limit: int = 0) -> FileData:
        size = st.st_size
        out = FileData(size=size)
        if size == 0:
            return out
        if size < small_limit:
            data = os.read(fd, small_limit)  # one more byte than allowed tells us it grew
            if len(data) < small_limit:
                while len(data) < size:  # (a short read of a regular file is rare; finish it)
                    more = os.read(fd, small_limit - len(data))
                    if not more:
                        break
                    data += more
                if len(data) < small_limit:
                    out.data, out.size, out.bytes_read = data, len(data), len(data)
                    self.on_bytes(len(data))
                    if len(data) != size:
                        out.warning = SIZE_CHANGED
                    return out
            os.lseek(fd, 0, os.SEEK_SET)  # grew past the limit: store it on its own
        sparse = st.st_blocks * 512 < size
        if sparse:
            ext = list(data_extents(fd, size))
            if ext != [(0, size)]:
                src = _ExtentSource(fd, ext)
                self._chunk_stream(src, out)
                out.extents = [e for e in src.extents if e[1] > 0]
                self.on_bytes(max(0, size - out.bytes_read))  # holes count as done for progress
                if sum(n for _, n in out.extents) != out.bytes_read:
                    raise OSError(errno.EIO, "sparse map changed while reading")
                if out.bytes_read < sum(n for _, n in ext):
                    out.warning = "shrank while it was being read (stored as read)"
                return out
        if size < self.params.min:
            # One chunk; read one byte more than expected to notice growth.
            data = os.read(fd, size + 1)
            if len(data) <= size:
                while len(data) < size:
                    more = os.read(fd, size - len(data))
                    if not more:
                        break
                    data += more
                if data:
                    self._store(data, out)
                out.size = len(data)
                if len(data) != size:
                    out.warning = "shrank while it was being read (stored as read)"
                return out
            os.lseek(fd, 0, os.SEEK_SET)  # it grew: chunk it like a large file
        self._chunk_stream(_FdSource(fd, size >= DIRECT_MIN and _try_direct(fd)), out)
        out.size = out.bytes_read
        if out.size != size:
            out.warning = SIZE_CHANGED
        return out
