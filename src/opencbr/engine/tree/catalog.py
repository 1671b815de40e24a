"""Writing and reading the catalog of a tree backup (the sorted stream of entry records).

:class:`CatalogWriter` appends encoded records and cuts the stream into catalog chunks at
content-defined entry boundaries: after at least ``MIN_CHUNK`` bytes, a cut follows every record whose
path hashes to 0 mod ``CUT_MODULUS``, and always at ``MAX_CHUNK``. Because the decision depends on the
path (stable between backups) and not on offsets, an unchanged run of entries produces the same
catalog chunks in the next backup and is stored once (the same idea as restic's per-directory tree
blobs, without one object per directory). Each catalog chunk goes through the write session like file
data. In an encrypted vault the path test goes through the vault's keyed cut table (see chunker.py).

:class:`CatalogReader` streams records back, fetching catalog chunks a few ahead in threads, from the
first chunk that can hold a given key (bisect on the chunk's first key, see dynamic_index.py).
"""

from __future__ import annotations

import threading
import zlib
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

from ..chunks.codec import ChunkCodec
from ..chunks.locations import ChunkIndex
from ..chunks.store import ChunkStore
from ..errors import Damaged
from .cutting import ChunkingSecret, public_cut
from .dynamic_index import CatalogChunk, DynamicIndex
from .entry import PATH_OFFSET, Entry, RecordError, decode, iter_records, path_key, record_path
from .walker import native_listing

MIN_CHUNK = 16 << 10
MAX_CHUNK = 256 << 10
CUT_MODULUS = 256  # ~150-byte records: 16 KiB + 256 x 150 B ~ 54 KiB average catalog chunk


class CatalogWriter:
    """Collects records (in key order) and stores them as catalog chunks through ``put``
    (``put(data) -> digest``, normally a write session's ``put_chunk``)."""

    def __init__(self, put, secret: ChunkingSecret | None = None):
        self._put = put
        self._cut_here = secret.cut_here if secret is not None else public_cut
        self._cut_table = secret.cut_table if secret is not None else None  # (for the C cut test)
        self._buf: list[bytes] = []
        self._size = 0
        self._count = 0
        self._first: bytes | None = None
        self.chunks: list[CatalogChunk] = []
        self.entries = 0
        self.raw_bytes = 0

    def add(self, rec: bytes, path: bytes) -> None:
        if self._first is None:
            self._first = path_key(path)
        self._buf.append(rec)
        self._size += len(rec)
        self._count += 1
        if self._size >= MAX_CHUNK or (self._size >= MIN_CHUNK and self._cut_here(zlib.crc32(path), CUT_MODULUS)):
            self._cut()

    def add_run(self, run: list) -> None:
        """:meth:`add` of every ``(path, rec, ...)`` of ``run`` in order (the incremental backup's
        records reused from the parent: the same chunks, cut at the same records, as one by one)."""
        native = native_listing()
        if native is None:
            return self._add_run_python(run)
        cuts, size, count = native.run_cuts(run, self._size, self._count, self._cut_table, CUT_MODULUS, MIN_CHUNK,
                                            MAX_CHUNK)
        at = 0
        for end in cuts:  # (a chunk is cut after run[end])
            self._extend(run, at, end + 1)
            self._cut()
            at = end + 1
        if at < len(run):
            self._extend(run, at, len(run))
        self._size, self._count = size, count

    def _extend(self, run: list, start: int, stop: int) -> None:
        if not self._count:
            self._first = path_key(run[start][0])
        self._buf.extend([item[1] for item in run[start:stop]])
        self._count += stop - start

    def _add_run_python(self, run: list) -> None:
        buf, size, count = self._buf, self._size, self._count
        cut_here, crc32 = self._cut_here, zlib.crc32
        for item in run:
            path, rec = item[0], item[1]
            if not count:
                self._first = path_key(path)
            buf.append(rec)
            size += len(rec)
            count += 1
            if size >= MAX_CHUNK or (size >= MIN_CHUNK and cut_here(crc32(path), CUT_MODULUS)):
                self._size, self._count = size, count
                self._cut()
                buf, size, count = self._buf, 0, 0
        self._size, self._count = size, count

    def _cut(self) -> None:
        if not self._buf:
            return
        data = b"".join(self._buf)
        digest = self._put(data)
        self.chunks.append(CatalogChunk(digest, self._count, len(data), self._first or b""))
        self.entries += self._count
        self.raw_bytes += len(data)
        self._buf, self._size, self._count, self._first = [], 0, 0, None

    def finish(self) -> list[CatalogChunk]:
        self._cut()
        return self.chunks


class CatalogReader:
    """Streams the records of one backup's catalog from ``cs``."""

    def __init__(self, cs: ChunkStore, dix: DynamicIndex, *, lookahead: int = 4, threads: int = 2,
                 index: ChunkIndex | None = None):
        self.cs = cs
        self.dix = dix
        # A backup passes its write session's index: the chunk store's reader index would be a second
        # copy of the whole index in memory (~300 bytes per chunk in the repository).
        self.index = index
        self.lookahead = max(1, lookahead)
        self.threads = max(1, threads)
        self._tls = threading.local()

    def _codec(self) -> ChunkCodec:
        c = getattr(self._tls, "codec", None)
        if c is None:
            c = self._tls.codec = self.cs.codec.clone()
        return c

    def _fetch(self, i: int) -> bytes:
        c = self.dix.catalog[i]
        data = None
        if self.index is not None:
            for loc in self.index.locations(c.digest):
                try:
                    rec = self.cs.read_record(loc)
                    data = self._codec().decode(c.digest, rec)
                    break
                except (KeyError, Damaged):
                    continue
        if data is None:
            data = self.cs.get_chunk(c.digest, self._codec())
        if len(data) != c.raw_len:
            raise Damaged(f"backup {self.dix.backup_id}: catalog chunk {i} has {len(data)} bytes, "
                          f"expected {c.raw_len}", backup_id=self.dix.backup_id)
        return data

    def chunk_data(self, start: int = 0, stop: int | None = None) -> Iterator[tuple[int, bytes]]:
        """Plaintext of catalog chunks ``start..stop-1`` in order, fetched ``lookahead`` ahead."""
        n = len(self.dix.catalog) if stop is None else min(stop, len(self.dix.catalog))
        if start >= n:
            return
        if n - start == 1:
            yield start, self._fetch(start)
            return
        pool = ThreadPoolExecutor(self.threads, thread_name_prefix="catalog-read")
        pending: deque[tuple[int, Future]] = deque()
        nxt = start
        try:
            while nxt < n or pending:
                while nxt < n and len(pending) < self.lookahead:
                    pending.append((nxt, pool.submit(self._fetch, nxt)))
                    nxt += 1
                i, fut = pending.popleft()
                yield i, fut.result()
        finally:
            for _, f in pending:
                f.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def records(self, start_key: bytes = b"", *, keyed: bool = False) -> Iterator:
        """Records whose key is >= ``start_key``, in order (``keyed``: ``(key, record)`` pairs, the key
        this check computes anyway). Checks the per-chunk entry counts and that keys strictly increase
        (a crafted or buggy catalog is refused, never half-used)."""
        start = self.dix.start_chunk(start_key) if start_key else 0
        native = native_listing() if keyed else None
        if native is not None:
            yield from self._keyed_records(start, start_key, native)
            return
        last = None
        for i, data in self.chunk_data(start):
            count = 0
            try:
                for rec in iter_records(data):
                    count += 1
                    n = rec[PATH_OFFSET] | rec[PATH_OFFSET + 1] << 8  # (record_path, path_key inline)
                    k = bytes(rec[PATH_OFFSET + 2:PATH_OFFSET + 2 + n]).replace(b"/", b"\0")
                    if last is not None and k <= last:
                        raise Damaged(f"backup {self.dix.backup_id}: catalog out of order at "
                                      f"{record_path(rec)!r}", backup_id=self.dix.backup_id)
                    last = k
                    if k < start_key:
                        continue
                    yield (k, rec) if keyed else rec
            except RecordError as e:
                raise Damaged(f"backup {self.dix.backup_id}: catalog chunk {i}: {e}",
                              backup_id=self.dix.backup_id) from None
            if count != self.dix.catalog[i].entries:
                raise Damaged(f"backup {self.dix.backup_id}: catalog chunk {i} holds {count} entries, "
                              f"expected {self.dix.catalog[i].entries}", backup_id=self.dix.backup_id)

    def _keyed_records(self, start: int, start_key: bytes, native) -> Iterator[tuple[bytes, memoryview]]:
        """:meth:`records` (keyed) with each chunk's records, keys and order check in one call to the C
        extension (``_listing.keyed_records``): an incremental backup's parent cursor reads every record."""
        last = None
        for i, data in self.chunk_data(start):
            pairs, problem, at = native.keyed_records(bytes(data), last)
            if problem == "order":
                raise Damaged(f"backup {self.dix.backup_id}: catalog out of order at "
                              f"{record_path(memoryview(data)[at:])!r}", backup_id=self.dix.backup_id)
            if problem is not None:
                try:  # (the Python reader says what is wrong)
                    for _rec in iter_records(data):
                        pass
                except RecordError as e:
                    raise Damaged(f"backup {self.dix.backup_id}: catalog chunk {i}: {e}",
                                  backup_id=self.dix.backup_id) from None
            if len(pairs) != self.dix.catalog[i].entries:
                raise Damaged(f"backup {self.dix.backup_id}: catalog chunk {i} holds {len(pairs)} entries, "
                              f"expected {self.dix.catalog[i].entries}", backup_id=self.dix.backup_id)
            if pairs:
                last = pairs[-1][0]
                if pairs[0][0] < start_key:
                    pairs = [p for p in pairs if p[0] >= start_key]
            yield from pairs

    def entries(self, start_key: bytes = b"") -> Iterator[Entry]:
        for rec in self.records(start_key):
            try:
                yield decode(rec)
            except RecordError as e:
                raise Damaged(f"backup {self.dix.backup_id}: {e}", backup_id=self.dix.backup_id) from None
