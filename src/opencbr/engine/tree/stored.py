"""A stored tree backup as the tree a backup reads (:class:`StoredTreeSource`): how a file-system
backup is replicated into another vault.

A tree backup's chunks are cut with its vault's own keyed chunker (chunker.py) and sealed with its
keys, so another vault cannot take them as they are. Instead the engine's tree backup runs over the
stored backup: its catalog gives the entries in catalog order, with their recorded metadata (modes,
owners and their names, times, inode numbers, link counts, xattrs, symlink targets, sparse maps), and
a regular file's content is decoded from the source vault (every chunk authenticated: by AES-GCM, or
by its digest in a plain vault) and cut, hashed, compressed and sealed by the destination's chunker. What the destination holds already is
not sent (its sink asks), and with a parent (the previous replica of the same file system) an entry
whose recorded metadata did not change keeps the parent's record without its content being read at
all -- the incremental-by-metadata rule of backup.py, over recorded instead of live metadata.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass, replace

from ..errors import Damaged
from .catalog import CatalogReader
from .chunker import FileChunker, FileData
from .common import load_index
from .entry import FILE, Entry, RecordError, decode
from .sources import read_each

CACHED_CHUNKS = 8  # decoded bundles kept (2 MiB at most each): they hold many small files, read in turn


class RecordStat:
    """The ``os.stat_result`` fields a backup reads, from a recorded entry (a regular file's ``rdev``
    holds its source ``st_dev``: see entry.py)."""

    __slots__ = ("st_mode", "st_uid", "st_gid", "st_size", "st_mtime_ns", "st_ctime_ns", "st_atime_ns", "st_ino",
                 "st_nlink", "st_dev", "st_rdev", "st_blocks")

    def __init__(self, e: Entry):
        self.st_mode, self.st_uid, self.st_gid, self.st_size = e.mode, e.uid, e.gid, e.size
        self.st_mtime_ns, self.st_ctime_ns, self.st_atime_ns = e.mtime_ns, e.ctime_ns, e.atime_ns
        self.st_ino, self.st_nlink = e.ino, e.nlink
        self.st_dev = e.rdev if e.type == FILE else 0
        self.st_rdev = 0 if e.type == FILE else e.rdev
        self.st_blocks = 0


@dataclass
class StoredItem:
    path: bytes
    st: RecordStat
    entry: Entry


class _SliceReader:
    """``readinto`` over a file's chunk slices, decoded one chunk at a time."""

    def __init__(self, chunks: list[tuple[bytes, int, int]], fetch):
        self.chunks, self.fetch = chunks, fetch
        self.i = 0
        self.cur: memoryview | None = None
        self.pos = 0

    def readinto(self, mv: memoryview) -> int:
        while self.cur is None or self.pos == len(self.cur):
            if self.i == len(self.chunks):
                return 0
            d, ln, off = self.chunks[self.i]
            self.i += 1
            data = self.fetch(d)
            if off + ln > len(data):
                raise Damaged(f"chunk {d.hex()} is shorter than the slice a file records of it", digest=d)
            self.cur, self.pos = memoryview(data)[off:off + ln], 0
        n = min(len(mv), len(self.cur) - self.pos)
        mv[:n] = self.cur[self.pos:self.pos + n]
        self.pos += n
        return n


class StoredTreeSource:
    """Tree backup ``backup_id`` of chunk store ``cs`` as a :class:`~opencbr.engine.tree.sources.TreeSource`.
    Raises Missing (no such backup) and InvalidArgument (a disk backup); reads raise Damaged."""

    def __init__(self, cs, backup_id: str):
        self.cs = cs
        self.backup_id = backup_id
        self.index = load_index(cs, backup_id, refs=False)
        self.size_hint = int(self.index.stats.get("total_bytes", 0))
        self._tls = threading.local()
        self._cache: OrderedDict[bytes, bytes] = OrderedDict()
        self._lock = threading.Lock()

    # -- what the backup walks --------------------------------------------------------------------
    def walk(self, warn, incremental: bool):
        for rec in CatalogReader(self.cs, self.index).records():
            try:
                e = decode(rec)
            except RecordError as exc:
                raise Damaged(f"backup {self.backup_id}: {exc}", backup_id=self.backup_id) from None
            yield StoredItem(e.path, RecordStat(e), e)

    def scanner(self):
        return None  # (the size is known: size_hint)

    def entry(self, item: StoredItem, typ: int, warn) -> Entry:
        return replace(item.entry, chunks=[], xattrs=list(item.entry.xattrs))

    def readlink(self, item: StoredItem) -> bytes:
        return item.entry.link

    # -- a regular file's content -----------------------------------------------------------------
    def _codec(self):
        c = getattr(self._tls, "codec", None)
        if c is None:
            c = self._tls.codec = self.cs.codec.clone()
        return c

    def _read(self, digest: bytes) -> bytes:
        """A chunk's plaintext. Its record opened where the index says (an encrypted vault's record is
        authenticated by AES-GCM, so its plaintext is not hashed again, unless an agent wrote it
        unverified: ``ChunkCodec.open_body``); any trouble there falls back to
        :meth:`ChunkStore.get_chunk`, which tries every copy and checks it."""
        codec = self._codec()
        for loc in self.cs.reader_index().locations(digest)[:1]:
            try:
                rec = self.cs.read_record(loc)
                if len(rec) == loc.length:
                    return bytes(codec.open_body(digest, rec, check=not self.cs.trusted_pack(loc.pack_id))[2])
            except (KeyError, Damaged):
                pass
        return self.cs.get_chunk(digest, codec)

    def _chunk(self, digest: bytes) -> bytes:
        """A chunk's plaintext, verified; the last few are kept (a bundle serves many small files)."""
        with self._lock:
            data = self._cache.get(digest)
            if data is not None:
                self._cache.move_to_end(digest)
                return data
        data = self._read(digest)
        with self._lock:
            self._cache[digest] = data
            while len(self._cache) > CACHED_CHUNKS:
                self._cache.popitem(last=False)
        return data

    def read_small(self, chunker: FileChunker, items: list, small_limit: int) -> list:
        return read_each(self, chunker, items, small_limit)

    def read_file(self, chunker: FileChunker, item: StoredItem, small_limit: int) -> FileData:
        e = item.entry
        if e.size == 0:
            return FileData(xattrs=list(e.xattrs))
        if e.size < small_limit:  # (the backup bundles it): its content, holes as zeros
            data = bytearray(e.size)
            for d, ln, file_off, chunk_off in e.chunk_offsets():
                piece = self._chunk(d)[chunk_off:chunk_off + ln]
                data[file_off:file_off + len(piece)] = piece
            chunker.on_bytes(len(data))
            return FileData(data=bytes(data), size=e.size, bytes_read=e.size, xattrs=list(e.xattrs))
        # (a big file's chunks are read once, in order: not kept, they would only push bundles out)
        out = chunker.read_stream(_SliceReader(e.chunks, self._read), e.size, e.extents)
        recorded = sum(ln for _d, ln, _o in e.chunks)
        if out.bytes_read != recorded:
            raise Damaged(f"backup {self.backup_id}: file /{e.path.decode(errors='replace')} has "
                          f"{out.bytes_read} bytes of data, its record says {recorded}", backup_id=self.backup_id)
        out.xattrs = list(e.xattrs)
        return out

    def close(self) -> None:
        with self._lock:
            self._cache.clear()
