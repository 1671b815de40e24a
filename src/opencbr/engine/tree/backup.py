"""Tree (file-system) backup: walk -> (reuse from parent | read + chunk + store) -> catalog -> manifest.

Threads:

- the calling thread walks the tree (:class:`TreeWalker`, sorted depth-first), merge-joins it with the
  parent backup's catalog (:class:`ParentCursor`, streamed in the same order), builds entry records
  and writes the catalog in order;
- ``workers`` threads read, chunk (FastCDC), hash, compress and encrypt the files that must be read
  (new or changed); files under 64 KiB come back as data and the calling thread decides, in walk
  order, where they go in content-defined *bundle* chunks (bundle.py) that ``STORE_THREADS`` threads
  join, hash, compress and store, with the catalog's chunks (the calling thread is the serial part of a
  backup of small files: it makes no system call per entry on a first backup, see walker.py
  ``node_meta``); the session's uploader threads write full packs. Results are consumed in walk order
  from a bounded deque of futures, so memory is bounded (``MAX_PENDING`` results, ``MAX_SMALL_INFLIGHT``
  bytes of small files, ``MAX_BUNDLES_IN_FLIGHT`` bundles, ``MAX_CATALOG_IN_FLIGHT`` catalog chunks,
  ``PARENT_LOOKAHEAD`` of the parent's, one CDC buffer per worker) whatever the tree size;
- a first backup with progress sizes the tree for it (a :class:`TreeScanner`, or the walk's own listings:
  ``ListingTally``); an incremental one lists and lstat's the tree ahead of the walk on several threads at
  the lowest priority and keeps those listings for the walk (``_listing.Ahead``; a forked
  ``MetadataWarmer`` warms the caches instead where the C listing is not built; walker.py).

Incremental by metadata: a regular file whose ``(type, size, mtime_ns, ctime_ns, inode)`` -- and mode,
owner and link count -- equal its record in the parent backup is not opened; its record (chunk list,
xattrs, ...) is copied from the parent with only the access time updated. Directories, symlinks and
special files whose inode is unchanged reuse their record the same way (no listxattr/readlink). ``ctime`` changes on every
inode change (content, chmod, chown, xattrs, links), which is why xattrs need not be listed again for
such a file. A reused chunk must still be in the repository outside packs condemned by GC
(``session.knows``): if the parent was deleted and collected meanwhile, the file is simply read again.
The parent's catalog *is* the files cache: no local cache file is needed, and any machine can
continue the incremental chain. Where the C listing is built, the walk hands a directory's non-directories
over in runs (``walker.WalkRun``) and this comparison, the reuse and the reading of the parent's records
are done in C (``_listing.reuse``, ``_listing.keyed_records``) for the ~90 % of entries that are unchanged;
the rest take the Python path below, and the catalog is the same byte for byte.

Cancellation (``cancel`` event): checked per file and per chunk; the session is aborted (its packs
deleted, no manifest) and :class:`~opencbr.engine.errors.BackupCancelled` is raised.
"""

from __future__ import annotations

import os
import stat
import threading
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone
from typing import NamedTuple

from ...system.heap import limit_heap_growth
from ..chunks import seams
from ..chunks.manifests import check_name
from ..errors import BackupCancelled, Conflict, InvalidArgument, Missing
from .bundle import SMALL_FILE, Bundler
from .catalog import CatalogReader, CatalogWriter
from .chunker import DEFAULT_PARAMS, ChunkParams, FileChunker, FileData, FileUnreadable
from .common import Progress, chunkstore_of, load_index
from .cutting import chunking_secret, cut_name
from .dynamic_index import FORMAT, DynamicIndex
from .entry import (
    BLK,
    CHR,
    DIR,
    FIFO,
    FILE,
    SOCK,
    SYMLINK,
    Entry,
    encode,
    path_key,
    record_digests,
    record_header,
    record_path,
    type_of_mode,
    with_atime,
)
from .memory import fewer_collections, trim
from .results import TreeBackupResult, TreeWarning
from .sources import DirectorySource, TreeSource
from .tree_codec import TREE_ZSTD_LEVEL, tree_codec
from .walker import WalkItem, WalkRun, native_listing

MAX_PENDING = 1024  # walked entries waiting for their file to be read (results only, no data)
# An incremental backup reads few files, scattered (a batch of 32 changed files spans hundreds of
# entries): with 1,024 entries the walk stopped for one batch's cold reads after another, two batches
# in flight (a sixth of a changed re-backup's walking thread waited there). Entries reused from the
# parent are ~0.4 KB each waiting here.
MAX_PENDING_INCREMENTAL = 16384
# The walk takes finished entries off the pending queue every 64 walked entries, not after each: an
# incremental backup's entries are mostly reused from the parent and finished at once, and taking them
# one at a time (a run of one: _drain, _emit_reused, _write_reused, CatalogWriter.add_run per entry)
# was the walking thread's busiest call chain after the walk itself. (The queue may then exceed its
# bound by up to 63 entries, and by a run of TreeWalker.RUN_MAX entries more: a WalkRun is queued whole.)
DRAIN_EVERY = 64
MAX_WARNINGS = 1000  # warnings kept in the result and manifest (the rest are counted)
MAX_HELD = 8192  # records held behind an open bundle before it is cut anyway (bounds memory)
MAX_BUNDLES_IN_FLIGHT = 4
# Catalog chunks (~54 KiB each) handed to the store threads and not yet stored (at a limit of four, shared
# with the readers' queue then, the walking thread waited for the fourth ~40 times in realtree's changed
# re-backup: 0.03-0.045 s)
MAX_CATALOG_IN_FLIGHT = 16
STORE_THREADS = 2
# The parent's catalog chunks (~54 KiB each) fetched ahead of the walk that merges with them, and by how
# many threads: with 4 on 2 threads, realtree's changed re-backup walked ~60 times into one not fetched
# yet (0.06-0.08 s; cold pack reads queue behind the listing threads' on the device)
PARENT_LOOKAHEAD = 32
PARENT_READERS = 4
HELD_RUN = -2  # (in TreeBackup._held: the item is a slice of records reused from the parent)
BATCH_FILES = 32  # small files read per worker task
BATCH_BYTES = 1 << 20
MAX_SMALL_INFLIGHT = 8 << 20  # bytes of small files read (or being read) but not yet bundled


class ParentCursor:
    """Merge-join cursor over the parent catalog: ``find(key)`` returns the parent's record for that
    key or None. Keys must be asked in increasing order (the walk order). ``records``: records, or
    ``(key, record)`` pairs with ``keyed`` (``CatalogReader.records(keyed=True)``: no second key)."""

    def __init__(self, records, keyed: bool = False):
        self._records = records
        self._it = iter(records) if keyed else ((path_key(record_path(r)), r) for r in records)
        first = next(self._it, None)
        self._key, self._cur = first if first is not None else (None, None)

    def find(self, key: bytes):
        k = self._key
        if k is not None and k < key:
            # (one parent record per walked entry, mostly: a plain loop over the pairs, no call each)
            for k, rec in self._it:
                if k >= key:
                    self._key, self._cur = k, rec
                    break
            else:
                self._key = self._cur = None
                return None
        return self._cur if k == key else None

    def close(self) -> None:
        close = getattr(self._records, "close", None)
        if close is not None:
            close()


class _Restat(NamedTuple):
    """What ``TreeSource.entry`` reads of a walked item, for a file read with another stat than the walk's."""

    path: bytes
    st: os.stat_result


def _same_file(h: tuple, st: os.stat_result) -> bool:
    # h: (type, flags, _, mode, uid, gid, size, mtime_ns, ctime_ns, atime_ns, ino, nlink, rdev)
    return (h[0] == FILE and h[6] == st.st_size and h[7] == st.st_mtime_ns and h[8] == st.st_ctime_ns
            and h[10] == st.st_ino and h[3] == st.st_mode and h[4] == st.st_uid and h[5] == st.st_gid
            and h[11] == st.st_nlink)


def _same_node(h: tuple, st: os.stat_result, typ: int) -> bool:
    """A directory, symlink or special file whose parent record still describes it (a symlink's size
    is its target's length; a directory's recorded size is 0)."""
    return (h[0] == typ and h[7] == st.st_mtime_ns and h[8] == st.st_ctime_ns and h[10] == st.st_ino
            and h[3] == st.st_mode and h[4] == st.st_uid and h[5] == st.st_gid and h[11] == st.st_nlink
            and (typ == DIR or h[6] == st.st_size) and (typ not in (CHR, BLK) or h[12] == st.st_rdev))


_COUNTER = {DIR: "dirs", SYMLINK: "symlinks", CHR: "specials", BLK: "specials", FIFO: "specials", SOCK: "specials"}


# A walked entry reused from the parent, complete, in the pending queue: a plain tuple ``(path, rec,
# digests, size)`` (``digests`` None for a directory, symlink or special file) rather than a _Pending --
# ~90 % of a changed re-backup's entries, taken off the queue and written to the catalog in runs.


class _Pending:
    """A walked entry whose record is complete (``rec``) or waits for a file read (``fut``)."""

    __slots__ = ("path", "entry", "fut", "rec", "digests", "size", "small", "idx")

    def __init__(self, path: bytes, entry: Entry | None, fut: Future | None = None, rec: bytes | None = None,
                 digests: list[bytes] | None = None, size: int = 0, small: int = 0):
        self.path = path
        self.idx: int | None = None  # position in a batched read's result list (small files)
        self.small = small  # bytes counted in TreeBackup._small_inflight until emitted
        self.entry = entry
        self.fut = fut
        self.rec = rec
        self.digests = digests
        self.size = size


class TreeBackup:
    """One backup run (use :func:`backup_tree`)."""

    def __init__(self, cs, source: TreeSource, *, backup_id: str, meta: dict, parent: DynamicIndex | None,
                 parent_id: str | None, full: bool, progress: Progress | None, cancel: threading.Event | None,
                 params: ChunkParams, workers: int, level: int = TREE_ZSTD_LEVEL):
        self.cs = cs
        self.level = level
        self.source = source
        self.backup_id = backup_id
        self.meta = meta
        self.parent = parent
        self.parent_id = parent_id
        self.full = full
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.params = params
        self.secret = chunking_secret(cs.codec.keys)  # encrypted vaults cut where only the key tells
        self.workers = workers
        self.warnings: list[TreeWarning] = []
        self.warnings_dropped = 0
        self.partial = False
        self.counts = {"files": 0, "dirs": 0, "symlinks": 0, "specials": 0}
        self.total_bytes = 0
        self.reused_files = 0
        self.reused_bytes = 0
        self.bytes_read = 0  # file bytes read (the progress counters also count holes)
        self._tls = threading.local()
        self._worker_bytes: dict[int, int] = {}
        self._estimate = max(int(parent.stats.get("total_bytes", 0)) if parent is not None else 0,
                             int(getattr(source, "size_hint", 0)))
        self._last_report = 0.0

    # -- warnings & progress ----------------------------------------------------------------------
    def warn(self, path: bytes, message: str, partial: bool) -> None:
        if partial:
            self.partial = True
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(TreeWarning("/" + os.fsdecode(path), message, partial))
        else:
            self.warnings_dropped += 1

    def _done_bytes(self) -> int:
        return self.reused_bytes + sum(list(self._worker_bytes.values()))  # list(): one atomic copy

    def _report(self, force: bool = False) -> None:
        trim()
        if self.progress is None:
            return
        now = time.monotonic()
        if not force and now - self._last_report < 0.2:
            return
        self._last_report = now
        done = self._done_bytes()
        scanned = self._scanner.total if self._scanner is not None else 0
        total = max(self._estimate if not (self._scanner and self._scanner.done.is_set()) else 0, scanned, done)
        self.progress(done, total)

    # -- worker side --------------------------------------------------------------------------------
    def _chunker(self) -> FileChunker:
        ch = getattr(self._tls, "chunker", None)
        if ch is None:
            codec = tree_codec(self.cs, self.level)
            session = self.session
            key = threading.get_ident()
            self._worker_bytes[key] = 0

            def put(data) -> bytes:
                d = codec.digest(data)
                session.put_chunk(data, d, codec)
                return d

            def on_bytes(n: int) -> None:
                self._worker_bytes[key] += n

            gear = self.secret.gear if self.secret is not None else None
            ch = self._tls.chunker = FileChunker(self.params, put, self.cancel, on_bytes, gear)
        return ch

    def _read(self, item) -> FileData:
        if self.cancel.is_set():
            raise BackupCancelled(f"backup {self.backup_id} was cancelled")
        # Hard-linked files are never bundled: every member must point at the same chunk.
        return self.source.read_file(self._chunker(), item, SMALL_FILE if item.st.st_nlink == 1 else 0)

    # -- main side ----------------------------------------------------------------------------------
    def _entry(self, item, typ: int) -> Entry:
        return self.source.entry(item, typ, self.warn)

    def _emit(self, p: _Pending) -> None:
        """Take the head of the pending queue: finish its record, then write it to the catalog -- or
        hold it while a bundle is open (records stay in walk order; bundled files learn their chunk
        digest only when their bundle is cut)."""
        self._small_inflight -= p.small
        if p.rec is None:
            e = p.entry
            if p.fut is not None:
                try:
                    if p.idx is None:
                        data: FileData = p.fut.result()
                    else:
                        got = p.fut.result()[p.idx]
                        if isinstance(got, FileUnreadable):
                            raise got
                        data = got
                except FileUnreadable as exc:
                    self.warn(e.path, str(exc), not exc.vanished)
                    return
                finally:
                    p.fut = None  # (a held record would keep its whole batch's results, data and all)
                if data.stat is not None:  # another file was renamed over the walked one: its own record
                    e = p.entry = self.source.entry(_Restat(e.path, data.stat), FILE, self.warn)
                e.extents, e.size, e.xattrs = data.extents, data.size, data.xattrs
                self.bytes_read += data.bytes_read
                if data.warning:
                    self.warn(e.path, data.warning, False)
                for msg in data.xattr_problems:
                    self.warn(e.path, msg, False)
                if data.data is not None:
                    off, cut = self.bundler.add(data.data, data.crc)
                    self._held.append((p, off, len(data.data)))
                    self._held_n += 1
                    if cut or self._held_n >= MAX_HELD:
                        self._close_bundle()
                    return
                e.chunks = data.chunks
            p.rec = encode(e)
            p.digests = [d for d, _n, _o in e.chunks]
            p.size = e.size
        if self._closed:
            self._flush_closed(block=False)
        if self._held or self._closed:
            self._held.append((p, -1, 0))
            self._held_n += 1
            if self._held_n >= MAX_HELD:
                self._close_bundle()
            return
        self._write(p)

    def _write(self, p) -> None:
        if p.__class__ is tuple:
            self._write_reused((p,))
            return
        if p.entry.type == FILE:
            self.counts["files"] += 1
            self.total_bytes += p.size
        self.catalog.add(p.rec, p.path)
        if p.digests:
            for d in p.digests:
                if d != self._last_ref:  # files of one bundle are adjacent: list its digest once
                    self.refs += d
                    self._last_ref = d

    def _write_reused(self, run: list) -> None:
        """Write a run of records reused from the parent (the pending queue's plain tuples) to the catalog: what
        :meth:`_write` does per entry, in C where the listing is built (``_listing.run_refs``: this loop over
        every reused entry was ~0.1 s of the walking thread in realtree's changed re-backup)."""
        native = native_listing()
        if native is not None:
            refs, self._last_ref, files, size = native.run_refs(run, self._last_ref)
            self.refs += refs
        else:
            files = size = 0
            last, refs = self._last_ref, self.refs
            for _path, _rec, digests, sz in run:
                if digests is not None:  # (a regular file; None: a directory, symlink or special file)
                    files += 1
                    size += sz
                    for d in digests:
                        if d != last:
                            refs += d
                            last = d
            self._last_ref = last
        self.counts["files"] += files
        self.total_bytes += size
        self.catalog.add_run(run)

    def _emit_reused(self, pending: deque) -> None:
        """Take the run of reused records at the head of the pending queue (what :meth:`_emit` does for
        each, in bulk): written at once, or held behind an open bundle in slices, one held item each
        (``_held_n`` counts their records, so ``MAX_HELD`` cuts exactly where one-by-one holding would).
        In a changed re-backup a bundle of new files is open through most of the walk, and holding each
        reused record as an item of its own, then taking them apart again in :meth:`_write_held`, was
        ~5 % of the walking thread's CPU (realtree's ``/usr`` copy, eight alternated pairs)."""
        run = []
        popleft = pending.popleft
        while pending and pending[0].__class__ is tuple:
            run.append(popleft())
        if self._closed:
            self._flush_closed(block=False)
        if not (self._held or self._closed):
            self._write_reused(run)
            return
        i, n = 0, len(run)
        while i < n:
            if not (self._held or self._closed):  # (a cut at MAX_HELD may have flushed everything)
                self._write_reused(run[i:])
                return
            room = max(1, MAX_HELD - self._held_n)
            part = run[i:i + room]
            self._held.append((part, HELD_RUN, 0))
            self._held_n += len(part)
            i += room
            if self._held_n >= MAX_HELD:
                self._close_bundle()

    def _close_bundle(self) -> None:
        """Cut the open bundle: a worker joins, hashes and stores it (compress/encrypt); its held records
        are written once its digest is known (``_flush_closed``). Joining and hashing bundles on the
        walking thread -- the serial part of a backup of small files -- was ~10 % of its time."""
        fut = None
        if len(self.bundler):
            while len(self._closed) >= MAX_BUNDLES_IN_FLIGHT:
                self._flush_closed(block=True, limit=1)
            fut = self._stores.submit(self._store_bundle, self.bundler.take())
            self.bundles += 1
        if fut is not None or self._closed:
            self._closed.append((fut, self._held))
        else:
            self._write_held(self._held, None)
        self._held = []
        self._held_n = 0
        self._flush_closed(block=False)

    def _flush_closed(self, block: bool, limit: int | None = None) -> None:
        """Write the held records of cut bundles, oldest first, whose digest is known (all of them if
        ``block``, or the oldest ``limit`` groups); then a held tail without bundled files."""
        n = 0
        while self._closed and (limit is None or n < limit):
            fut, held = self._closed[0]
            if fut is not None and not block and not fut.done():
                return
            d = fut.result() if fut is not None else None
            self._closed.popleft()
            n += 1
            self._write_held(held, d)
        if not self._closed and self._held and not len(self.bundler):
            self._write_held(self._held, None)  # (no bundled file among them: nothing to wait for)
            self._held = []
            self._held_n = 0

    def _write_held(self, held: list, d: bytes | None) -> None:
        """Write held records in order; the bundled files among them get their slice of bundle ``d``."""
        run: list = []
        for p, off, ln in held:
            if off == HELD_RUN:
                if run:
                    run.extend(p)
                else:
                    run = p
                continue
            if run:
                self._write_reused(run)
                run = []
            if off >= 0:
                e = p.entry
                e.chunks = [(d, ln, off)]
                p.rec = encode(e)
                p.digests = [d]
                p.size = e.size
            self._write(p)
        if run:
            self._write_reused(run)

    def _store_bundle(self, parts: list[bytes]) -> bytes:
        data = b"".join(parts)
        codec = getattr(self._tls, "bundle_codec", None)
        if codec is None:
            codec = self._tls.bundle_codec = tree_codec(self.cs, self.level)
        digest = codec.digest(data)
        self.session.put_chunk(data, digest, codec)
        return digest

    def _put_catalog(self, data: bytes, digest: bytes) -> None:
        codec = getattr(self._tls, "bundle_codec", None)
        if codec is None:
            codec = self._tls.bundle_codec = tree_codec(self.cs, self.level)
        self.session.put_chunk(data, digest, codec)

    def _drain(self, pending: deque, block: bool, until_small: int | None = None) -> None:
        while pending:
            if until_small is not None and self._small_inflight <= until_small:
                return
            head = pending[0]
            if head.__class__ is tuple:  # reused from the parent: complete, taken as a run
                self._emit_reused(pending)
                continue
            if head.rec is None and head.fut is None:  # in the batch not submitted yet
                if not block and len(pending) < self._max_pending:
                    return
                self._submit_batch()
            if head.fut is not None and not head.fut.done():
                if not block and len(pending) < self._max_pending:
                    return
                while True:
                    try:
                        head.fut.result(timeout=0.2)
                    except TimeoutError:
                        self._check_cancel()
                        self._report()
                        continue
                    except Exception:  # noqa: BLE001 - handled in _emit
                        pass
                    break
            pending.popleft()
            self._emit(head)

    def _submit_batch(self) -> None:
        if not self._batch:
            return
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        fut = self._pool.submit(self._read_batch, [item for item, _p in batch])
        for i, (_item, p) in enumerate(batch):
            p.fut, p.idx = fut, i

    def _read_batch(self, items: list) -> list:
        """Read small files; per file a FileData (with the CRC-32 of its data, for the bundle's cut test:
        off the walking thread) or the FileUnreadable it raised."""
        if self.cancel.is_set():
            raise BackupCancelled(f"backup {self.backup_id} was cancelled")
        return self.source.read_small(self._chunker(), items, SMALL_FILE)

    def _check_cancel(self) -> None:
        if self.cancel.is_set():
            raise BackupCancelled(f"backup {self.backup_id} was cancelled")

    def run(self) -> TreeBackupResult:
        t0 = time.monotonic()
        self._start()
        cursor = None
        if self.parent is not None and not self.full:
            index = getattr(self.session, "index", None)  # (a remote session has none: reads go to the vault)
            cursor = ParentCursor(CatalogReader(self.cs, self.parent, index=index, lookahead=PARENT_LOOKAHEAD,
                                                threads=PARENT_READERS).records(keyed=True), keyed=True)
        if self.progress is not None and self.parent is None:
            # Sizes the tree for the progress bar of a first backup (later ones use the parent's size).
            self._scanner = self.source.scanner()
        try:
            with fewer_collections():
                self._walk(cursor)
            cat = self._finish_catalog()
            stats = self._stats(cat, t0)
            payload = DynamicIndex(self.backup_id, {}, cat).encode_payload()
            manifest_bytes = self.session.commit(self.backup_id, self._header(stats), self.refs, payload)  # no copy
        except BaseException:
            if self._scanner is not None:
                self._scanner.stop()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._stores.shutdown(wait=True, cancel_futures=True)
            self.session.abort()
            if cursor is not None:
                cursor.close()
            raise
        self._pool.shutdown(wait=True)
        self._stores.shutdown(wait=True)
        if cursor is not None:
            cursor.close()
        if self.progress is not None:
            self.progress(self.total_bytes, self.total_bytes)
        return TreeBackupResult(
            backup_id=self.backup_id, files=self.counts["files"], dirs=self.counts["dirs"],
            symlinks=self.counts["symlinks"], specials=self.counts["specials"], total_bytes=self.total_bytes,
            bytes_read=stats["bytes_read"], reused_files=self.reused_files, new_chunks=stats["new_chunks"],
            added_bytes=stats["added_bytes"], written_bytes=stats["written_bytes"], catalog_chunks=len(cat),
            catalog_bytes=self.catalog.raw_bytes, manifest_bytes=manifest_bytes, partial=self.partial,
            warnings=self.warnings, warnings_dropped=self.warnings_dropped,
            duration=time.monotonic() - t0,
        )

    def _start(self) -> None:
        """The session, the reader threads, the bundler and the catalog writer of this run."""
        self._scanner = None
        self.session = seams.open_session(self.cs)
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tree-read")
        # Bundles and catalog chunks are stored (compressed, encrypted, packed) by threads of their own: in
        # the readers' queue they waited behind batches of small files to read, and the walking thread,
        # which holds at most MAX_BUNDLES_IN_FLIGHT / MAX_CATALOG_IN_FLIGHT of them, waited with them
        self._stores = ThreadPoolExecutor(STORE_THREADS, thread_name_prefix="tree-store")
        self._main_codec = main_codec = tree_codec(self.cs, self.level)
        self.bundler = Bundler(self.secret)
        # Records behind an open bundle: (pending entry, offset in the bundle or -1, length), or a
        # slice of reused records held as one item: (their list, HELD_RUN, 0).
        self._held: list[tuple] = []
        self._held_n = 0  # records in _held (a held run of reused records counts its every record)
        self._closed: deque[tuple[Future | None, list]] = deque()  # cut bundles (digest) and their records
        self._puts: deque[Future] = deque()  # catalog chunks being stored
        self._last_ref = b""
        self.bundles = 0
        self._small_inflight = 0
        self._batch: list[tuple[object, _Pending]] = []
        self._batch_bytes = 0
        self._pending: deque[_Pending] = deque()
        self._max_pending = MAX_PENDING_INCREMENTAL if self.parent is not None and not self.full else MAX_PENDING
        self._known = b""  # last chunk digest found in the repository (reuse path)
        self._confirmed: set[bytes] = set()  # digests found there before (the C reuse path; bounded there)
        # (dev, ino) -> [read of a hard-link group's first member, names seen]; dropped once every name
        # of the inode was seen (a tree of many hard-linked files would otherwise keep them all)
        self._links: dict[tuple[int, int], list] = {}

        def put_catalog(data: bytes) -> bytes:
            # Hashed here (the catalog needs the digest now), compressed and encrypted by a worker.
            d = main_codec.digest(data)
            while len(self._puts) >= MAX_CATALOG_IN_FLIGHT:
                self._puts.popleft().result()
            self._puts.append(self._stores.submit(self._put_catalog, data, d))
            return d

        self.catalog = CatalogWriter(put_catalog, self.secret)
        self.refs = bytearray()

    def _walk(self, cursor: ParentCursor | None) -> None:
        """Every entry of the tree, in walk order, into the pending queue (files read by the pool)."""
        pending = self._pending
        find = cursor.find if cursor is not None else None
        walk_entry, drain = self._walk_entry, self._drain  # (62k calls each)
        n = next_check = next_drain = 0  # entries walked; when to check for cancellation, to drain
        for item in self.source.walk(self.warn, self.parent is not None and not self.full):
            if n >= next_check:
                self._check_cancel()
                self._report()
                next_check = n + 256
            if item.__class__ is WalkRun:  # (an incremental walk's run of non-directories: compared in C)
                self._walk_run(item, cursor)
                n += item.count
            else:
                n += 1
                walk_entry(item, find(item.path.replace(b"/", b"\0")) if find is not None else None)  # (path_key inline)
            if n > next_drain:
                drain(pending, block=False)
                next_drain = n - 1 + DRAIN_EVERY
        self._submit_batch()
        self._drain(pending, block=True)

    def _walk_entry(self, item, prec) -> None:
        """One walked entry (``prec``: the parent's record of its path, or None) into the pending queue."""
        typ = type_of_mode(item.st.st_mode)
        if typ is None:
            self.warn(item.path, f"unsupported file type {stat.S_IFMT(item.st.st_mode):o}: skipped", False)
        elif typ == FILE:
            self._walk_file(item, prec)
        else:
            self._walk_node(item, typ, prec)

    def _walk_run(self, run: WalkRun, cursor: ParentCursor) -> None:
        """A run of non-directories: the entries whose parent's record still describes them go to the pending
        queue as _walk_file / _walk_node would put them (decided in C, no Python object per entry but the
        queue's tuple); the others, in their place in the run, the Python way."""
        out, slow, self._known, (files, size, symlinks, specials) = run.reuse(cursor, self.session.knows, self._known,
                                                                            self._confirmed)
        self.reused_files += files
        self.reused_bytes += size
        self.counts["symlinks"] += symlinks
        self.counts["specials"] += specials
        pending = self._pending
        if not slow:
            pending.extend(out)
            return
        i = 0
        for j in slow:
            pending.extend(out[i:j])
            path, abspath, st, prec = out[j]
            self._walk_entry(WalkItem(path, abspath, st), prec)
            i = j + 1
        pending.extend(out[i:])

    def _walk_file(self, item, prec) -> None:
        """A regular file: the parent's record if it is unchanged and its chunks are all still there;
        else read (small files in batches, for bundles; a hard-link group's inode once)."""
        st, pending = item.st, self._pending
        if prec is not None:
            h = record_header(prec)
            if _same_file(h, st):
                digests = record_digests(prec)
                known = self._known
                if len(digests) == 1:  # (most files: one chunk, or one slice of a bundle)
                    ok = digests[0] == known or self.session.knows(digests[0])
                else:
                    ok = all(d == known or self.session.knows(d) for d in digests)
                if ok:
                    if digests:
                        self._known = digests[-1]  # files of a bundle share it: check it once
                    self.reused_files += 1
                    self.reused_bytes += st.st_size
                    # (the parent's bytes as they are when the access time did not move either)
                    rec = bytes(prec) if h[9] == st.st_atime_ns else with_atime(prec, st.st_atime_ns)
                    pending.append((item.path, rec, digests, st.st_size))
                    return
        e = self._entry(item, FILE)
        ident = (st.st_dev, st.st_ino)
        if st.st_nlink > 1 and ident in self._links:
            link = self._links[ident]
            fut = link[0]  # same inode read once; every member gets its chunk list
            link[1] += 1
            if link[1] >= st.st_nlink:
                del self._links[ident]
        elif st.st_size < SMALL_FILE and st.st_nlink == 1:
            # Small files come back as data (for a bundle) and are read in batches (one task per
            # BATCH_FILES files: fewer futures and thread hand-offs); what is read ahead of the
            # bundler is bounded.
            self._small_inflight += st.st_size
            if self._small_inflight > MAX_SMALL_INFLIGHT:
                self._submit_batch()
                self._drain(pending, block=True, until_small=MAX_SMALL_INFLIGHT // 2)
            p = _Pending(item.path, e, None, small=st.st_size)
            self._batch.append((item, p))
            self._batch_bytes += st.st_size
            pending.append(p)
            if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
                self._submit_batch()
            return
        else:
            fut = self._pool.submit(self._read, item)
            if st.st_nlink > 1:
                self._links[ident] = [fut, 1]
        pending.append(_Pending(item.path, e, fut))

    def _walk_node(self, item, typ: int, prec) -> bool:
        """A directory, symlink or special file; False if it is left out (an unreadable symlink)."""
        st = item.st
        if prec is not None and _same_node(record_header(prec), st, typ):
            # Unchanged directory/symlink/special (ctime covers xattrs, target, mode, owner): the
            # parent's record as is, no listxattr/readlink (cold, those were a third of an unchanged
            # re-backup's system calls).
            self.counts[_COUNTER[typ]] += 1
            rec = bytes(prec) if typ in (DIR, SYMLINK) else with_atime(prec, st.st_atime_ns)
            self._pending.append((item.path, rec, None, 0))
            return True
        e = self._entry(item, typ)
        if typ == SYMLINK:
            try:
                e.link = self.source.readlink(item)
            except OSError as exc:
                self.warn(item.path, f"cannot read symlink: {exc.strerror or exc}", True)
                return False
            e.size = len(e.link)
        self.counts[_COUNTER[typ]] += 1
        self._pending.append(_Pending(item.path, e, rec=encode(e), digests=None))
        return True

    def _finish_catalog(self) -> list:
        """Wait for the last files and bundles; the catalog's chunks (their digests join the refs)."""
        self._close_bundle()
        self._flush_closed(block=True)
        self._check_cancel()
        cat = self.catalog.finish()
        while self._puts:
            self._puts.popleft().result()
        for c in cat:
            self.refs += c.digest
        if self._scanner is not None:
            self._scanner.stop()
        self._report(force=True)
        return cat

    def _stats(self, cat: list, t0: float) -> dict:
        st = self.session.stats
        return {
            **self.counts,
            "total_bytes": self.total_bytes,
            "bytes_read": self.bytes_read,
            "reused_files": self.reused_files,
            "new_chunks": st.new_chunks,
            "added_bytes": st.added_bytes,
            "written_bytes": st.written_bytes,
            "catalog_chunks": len(cat),
            "bundles": self.bundles,
            "catalog_entries": self.catalog.entries,
            "catalog_bytes": self.catalog.raw_bytes,
            "duration": round(time.monotonic() - t0, 3),
        }

    def _header(self, stats: dict) -> dict:
        return {
            "type": "tree",
            "format": FORMAT,
            "backup_id": self.backup_id,
            "created": datetime.now(timezone.utc).isoformat(),
            "parent": self.parent_id,
            "full": self.full,
            "encrypted": self.cs.encrypted,
            "meta": self.meta,
            "partial": self.partial,
            "warnings": [w.to_dict() for w in self.warnings[:100]],
            "warnings_total": len(self.warnings) + self.warnings_dropped,
            "chunking": self.params.to_dict(cut_name(self.secret)),
            "zstd_level": self.level,
            "stats": stats,
        }


def default_workers() -> int:
    # Reads of small files wait on the disk, compressing big ones uses a core: one thread more than
    # cores keeps both busy; more threads only added GIL hand-offs on the 2-core bench machine
    # (2-3 workers were fastest there, 4 and 8 slower; see bench/tree.py).
    return max(3, min(8, (os.cpu_count() or 2) + 1))


def backup_tree(
    repo_or_chunkstore,
    root: str | os.PathLike,
    *,
    backup_id: str,
    meta: dict,
    parent_backup_id: str | None = None,
    full: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    params: ChunkParams = DEFAULT_PARAMS,
    workers: int | None = None,
    one_file_system: bool = True,
    level: int = TREE_ZSTD_LEVEL,
    root_fd: int | None = None,
    exclude: list[str | bytes] | None = None,
    listing_total: bool = False,
) -> TreeBackupResult:
    """Back up the directory tree at ``root`` as backup ``backup_id``.

    ``exclude``: paths relative to ``root`` left out with everything below them (an agent path's
    ``exclude_path``).

    ``root_fd``: the root directory already open (checked by the caller): the walk then goes through
    it (``/proc/self/fd``), never through ``root``, which only names it -- replacing ``root`` or a
    directory above it meanwhile changes nothing of what is read.

    ``repo_or_chunkstore``: a :class:`~opencbr.engine.Repository` (or its ``.chunks``). ``meta`` is
    stored verbatim in the manifest header (the catalog can be rebuilt from the store). With
    ``parent_backup_id`` (a tree backup of the same resource; ignored if it no longer exists),
    unchanged files are not read again; ``full=True`` reads every file (chunks are still
    deduplicated). ``progress(done_bytes, total_bytes)`` is called from the calling thread (total is
    an estimate: the parent's size, or a concurrent scan; ``listing_total``: what the walk has listed,
    see ``DirectorySource``); ``cancel`` (a ``threading.Event``) stops
    the backup promptly with nothing published and raises ``BackupCancelled``.

    Unreadable files and directories do not fail the backup: they are listed in ``warnings`` and
    ``partial`` is True (also recorded in the manifest header). Sockets, fifos and devices are
    recorded. Raises Missing (no ``root``), InvalidArgument (``root`` not a directory, bad id,
    parent not a tree backup), Conflict (``backup_id`` exists).
    """
    walk_root = os.path.realpath(os.fsencode(root)) if root_fd is None else os.fsencode(f"/proc/self/fd/{root_fd}")
    try:
        st = os.stat(walk_root)
    except FileNotFoundError:
        raise Missing(f"directory {os.fsdecode(root)} does not exist") from None
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidArgument(f"{os.fsdecode(root)} is not a directory")
    source = DirectorySource(walk_root, one_file_system=one_file_system, listing_total=listing_total, exclude=frozenset(
        os.fsencode(e).strip(b"/") for e in exclude or () if os.fsencode(e).strip(b"/")))
    return backup_tree_from(repo_or_chunkstore, source, backup_id=backup_id, meta=meta,
                            parent_backup_id=parent_backup_id, full=full, progress=progress, cancel=cancel,
                            params=params, workers=workers, level=level)


def backup_tree_from(repo_or_chunkstore, source: TreeSource, *, backup_id: str, meta: dict,
                     parent_backup_id: str | None = None, full: bool = False, progress: Progress | None = None,
                     cancel: threading.Event | None = None, params: ChunkParams = DEFAULT_PARAMS,
                     workers: int | None = None, level: int = TREE_ZSTD_LEVEL) -> TreeBackupResult:
    """:func:`backup_tree` of any :class:`~opencbr.engine.tree.sources.TreeSource` (a directory, or a
    stored tree backup for a replica: ``stored.StoredTreeSource``). The source is closed at the end."""
    try:
        cs = chunkstore_of(repo_or_chunkstore)
        check_name(backup_id)
        limit_heap_growth(above=cs.pack_size)
        if cs.has_manifest(backup_id):
            raise Conflict(f"backup {backup_id} already exists in the repository")
        parent = None
        if parent_backup_id is not None:
            try:
                parent = load_index(cs, parent_backup_id)
            except Missing:
                parent = None  # deleted meanwhile: every backup is a virtual full, nothing depends on it
        return TreeBackup(
            cs, source, backup_id=backup_id, meta=meta, parent=parent,
            parent_id=parent_backup_id if parent else None, full=full, progress=progress, cancel=cancel,
            params=params, workers=workers or default_workers(), level=level,
        ).run()
    finally:
        source.close()
