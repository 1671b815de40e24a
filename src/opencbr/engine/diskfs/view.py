"""``DiskBackupView``: a read-only, seekable file object over a *disk* backup in the chunk store.

Reads fetch only the fixed-index blocks they touch (see ``engine/disk/fixed_index.py``, read unchanged):
zero blocks (the :data:`ZERO_DIGEST` marker) return zeros without any I/O; other blocks are looked up
in the chunk index, grouped into range reads of consecutive records in the same pack, decoded
(decrypt, decompress, digest check) and kept in a small LRU. Sequential reads (extracting a large
file) are detected and read ahead up to ``MAX_READAHEAD`` blocks per request, so a file comes out as a
few large range reads instead of one request per 64 KiB block.

A damaged block is re-read from any other copy (``ChunkStore.get_chunk``); if none is intact the read
raises ``Damaged`` -- a parser never sees silently wrong bytes.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from ..chunks.packs import pack_key
from ..chunks.store import ChunkStore
from ..disk.fixed_index import FixedIndex
from ..errors import Damaged, Missing

CACHE_BLOCKS = 256  # 16 MiB of decoded 64 KiB blocks
MAX_READAHEAD = 64
MAX_SPAN = 8 << 20


class DiskBackupView(io.RawIOBase):
    """File-like view of disk backup ``backup_id`` (``read``, ``readinto``, ``seek``, ``tell``,
    ``pread``). Thread-safe for ``pread``; the stream position is per object."""

    def __init__(self, cs: ChunkStore, backup_id: str, *, cache_blocks: int = CACHE_BLOCKS):
        super().__init__()
        self.cs = cs
        self.backup_id = backup_id
        self.index = FixedIndex.read(cs, backup_id)
        self.size = self.index.disk_size
        self.block_size = self.index.block_size
        self._cache: OrderedDict[int, bytes] = OrderedDict()
        self._cache_blocks = max(MAX_READAHEAD * 2, cache_blocks)
        self._codec = cs.codec.clone()
        self._lock = threading.Lock()
        self._pos = 0
        self._last_end = -1
        self._ra = 4
        self._zero = bytes(self.block_size)
        self.blocks_fetched = 0  # blocks read from the store (for tests and stats)
        self.range_reads = 0

    # -- io.RawIOBase ---------------------------------------------------------------------------
    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        if whence == io.SEEK_SET:
            pos = offset
        elif whence == io.SEEK_CUR:
            pos = self._pos + offset
        elif whence == io.SEEK_END:
            pos = self.size + offset
        else:
            raise ValueError(f"bad whence {whence}")
        if pos < 0:
            raise ValueError("negative seek position")
        self._pos = pos
        return pos

    def readinto(self, b) -> int:
        data = self.pread(self._pos, len(b))
        n = len(data)
        memoryview(b)[:n] = data
        self._pos += n
        return n

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0:
            size = max(0, self.size - self._pos)
        data = self.pread(self._pos, size)
        self._pos += len(data)
        return data

    # -- block access ---------------------------------------------------------------------------
    def pread(self, offset: int, length: int) -> bytes:
        """``length`` bytes at ``offset`` (short only at the end of the disk)."""
        if offset >= self.size or length <= 0:
            return b""
        end = min(self.size, offset + length)
        bs = self.block_size
        b0, b1 = offset // bs, (end - 1) // bs + 1
        with self._lock:
            sequential = offset == self._last_end
            self._ra = min(MAX_READAHEAD, self._ra * 2) if sequential else 4
            self._last_end = end
            blocks = self._blocks(b0, b1, readahead=self._ra if sequential else 0)
        buf = b"".join(blocks)
        a = offset - b0 * bs
        return buf[a:a + (end - offset)]

    def _blocks(self, b0: int, b1: int, readahead: int) -> list[bytes]:
        idx = self.index
        missing = [i for i in range(b0, b1) if i not in self._cache and not idx.is_zero(i)]
        if missing:
            extra = [i for i in range(b1, min(idx.block_count, b1 + readahead))
                     if i not in self._cache and not idx.is_zero(i)]
            self._fetch(missing + extra)
        out = []
        for i in range(b0, b1):
            if idx.is_zero(i):
                out.append(self._zero[:idx.block_length(i)])
                continue
            blk = self._cache.get(i)
            if blk is None:  # evicted by this very request (huge read): fetch alone
                self._fetch([i])
                blk = self._cache[i]
            self._cache.move_to_end(i)
            out.append(blk)
        return out

    def _store_block(self, i: int, data: bytes) -> None:
        if len(data) != self.index.block_length(i):
            raise Damaged(f"disk backup {self.backup_id}: block {i} has {len(data)} bytes, "
                          f"expected {self.index.block_length(i)}", backup_id=self.backup_id)
        self._cache[i] = data
        while len(self._cache) > self._cache_blocks:
            self._cache.popitem(last=False)

    def _fetch(self, blocks: list[int]) -> None:
        idx = self.cs.reader_index()
        by_digest: dict[bytes, list[int]] = {}
        for i in blocks:
            by_digest.setdefault(self.index.digest(i), []).append(i)
        if idx is None:  # a remote store (engine/remote, on an agent): the vault's index stays with the vault
            self._fetch_remote(by_digest)
            return
        locs = []
        for d, bl in by_digest.items():
            loc = idx.lookup(d)
            if loc is None:
                data = self._get_chunk(d)  # not in the cached index: refreshes, or raises Missing
                for i in bl:
                    self._store_block(i, data)
                continue
            locs.append((loc.pack_id, loc.offset, loc.length, d))
        locs.sort()
        j = 0
        while j < len(locs):
            pack_id, start, _ln, _d = locs[j]
            k = j
            end = start
            while (k < len(locs) and locs[k][0] == pack_id and locs[k][1] <= end + (64 << 10)
                   and locs[k][1] + locs[k][2] - start <= MAX_SPAN):
                end = max(end, locs[k][1] + locs[k][2])
                k += 1
            try:
                blob = memoryview(self.cs.store.get(self.cs.k(pack_key(pack_id)), start, end))
            except KeyError:
                blob = memoryview(b"")
            self.range_reads += 1
            for _pid, off, ln, d in locs[j:k]:
                rec = blob[off - start:off - start + ln]
                try:
                    if len(rec) != ln:
                        raise Missing("short")
                    data = self._codec.decode(d, rec)
                except (Damaged, Missing):
                    data = self._get_chunk(d)
                for i in by_digest[d]:
                    self._store_block(i, data)
                self.blocks_fetched += len(by_digest[d])
            j = k

    def _fetch_remote(self, by_digest: dict[bytes, list[int]]) -> None:
        """The blocks' chunks asked for in groups over the remote store's channel."""
        for group in self.cs.plan_reads(None, list(by_digest), None):
            for d, data, err in self.cs.read_planned(self._codec, group):
                if err is not None:
                    raise Damaged(f"disk backup {self.backup_id}: block data {d.hex()[:16]} cannot be read "
                                  f"intact: {err}", backup_id=self.backup_id)
                for i in by_digest[d]:
                    self._store_block(i, data)
                self.blocks_fetched += len(by_digest[d])

    def _get_chunk(self, d: bytes) -> bytes:
        try:
            return self.cs.get_chunk(d, self._codec)
        except (Damaged, Missing) as e:
            raise Damaged(f"disk backup {self.backup_id}: block data {d.hex()[:16]} cannot be read "
                          f"intact: {e}", backup_id=self.backup_id) from None
