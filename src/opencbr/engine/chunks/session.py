"""A write session: how new chunks and one manifest get into a repository safely.

Order of a session (crash safety by ordering):

1. write our writer lock (``locks/w-...``), then read GC's condemned lists and the index, then record
   in the lock which condemned lists we saw; chunks in condemned packs are never deduplicated against;
2. ``put_chunk`` from any number of threads: dedup against the index and the session, encode
   (zstd, AES-GCM), append to the current pack; full packs go to uploader threads through a bounded
   queue (memory stays flat) and are written with fsync each (measured: fsync per 8 MiB pack in the
   uploader threads overlaps with hashing/compression and was not slower than deferring every sync to
   one barrier at the end, see bench/README.md);
3. ``commit``: last pack, wait for uploads, an index object for our packs not indexed yet (a long session
   writes one every ``INDEX_EVERY_RECORDS`` records as it goes, so what it holds stays bounded), check our
   lock is still ours, the manifest (put-if-absent), check the lock again, release the lock.

What it holds does not grow with the backup: the vault's digests it may deduplicate against and the ones
it stored live in :class:`~opencbr.engine.chunks.digestset.DigestSet` s (on disk past a bound).

``abort`` (cancel, error) deletes the packs this session wrote: no index references them yet, so no
other writer can depend on them. If the process dies instead, they stay as unindexed packs, which GC
condemns and later removes.

A session of an unchecked writer (``writer``: an agent's id; the remote chunk service does not check its
records one by one) records its packs as unverified before it indexes them, and every session treats
another writer's unverified copy of a chunk as absent until it has checked it (unverified.py).

A session that may be resumed (``keep_partial``: a replication into this repository, whose next attempt
should not send again what arrived) indexes its packs as it goes (every ``CHECKPOINT_PACKS``) and, when it
ends without a manifest, :meth:`keep` indexes the rest instead of deleting them: the chunks are then known
to the next session (which does not ask for them again) but referenced by no manifest, so the next GC
condemns and removes them unless a backup referenced them by then. ``abort`` never deletes indexed packs.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
from dataclasses import dataclass

from ...system.aligned import BufferPool
from ..errors import Conflict, Damaged
from .codec import ChunkCodec
from .damage import damaged_digests
from .digestset import DigestSet
from .diskindex import IndexView, KnownDigests
from .locks import RepoLock
from .manifests import Manifest
from .packs import FinishedPack, PackWriter, pack_key
from .reader import spans_of
from .store import ChunkStore

_ENTRY = struct.Struct("<32sII")  # digest, offset, length: the record form of locations.py
CHECKPOINT_PACKS = 4  # a resumable session indexes its packs at least this often (packs)
# Any session writes an index object once this many records wait for one: what it keeps of its packs
# stays bounded (40 bytes a record) whatever the backup's size. Safe before the manifest: the packs are
# durable, and until a manifest references them they are like a resumable session's (GC condemns them
# only for a later sweep, which waits for this session's lock; abort leaves indexed packs to GC).
INDEX_EVERY_RECORDS = 1 << 15  # (1.3 MB)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PutResult:
    """Outcome of :meth:`WriteSession.put_chunk`: the chunk's digest, whether this call stored it,
    and the bytes it stored (0 when deduplicated)."""

    digest: bytes
    new: bool
    stored_size: int


@dataclass
class SessionStats:
    new_chunks: int = 0
    written_bytes: int = 0  # record bytes this session stored (incl. rewrites when force_new)
    added_bytes: int = 0  # record bytes of chunks the repository did not hold before
    packs: int = 0
    pack_bytes: int = 0


class WriteSession:
    def __init__(self, cs: ChunkStore, *, force_new: bool = False, keep_partial: bool = False,
                 writer: str | None = None):
        self.cs = cs
        self.force_new = force_new
        self.keep_partial = keep_partial
        self.writer = writer  # None: the records are checked (or encoded) here; else whose they are
        self._indexed = 0  # packs of self._written already in an index object (keep_partial)
        self._index_lock = threading.Lock()
        self.lock = RepoLock(cs.store, cs.prefix, "backup", cs.lock_timing)
        self.lock.acquire()
        try:
            gens = cs.condemned_lists()
            excluded = {p for packs in gens.values() for p in packs}
            self.known, self._foreign = self._load_known(excluded)  # (bounded memory: diskindex.py)
            self.damaged = damaged_digests(cs)  # stored again, never deduplicated against (damage.py)
            self.lock.set_seen(sorted(gens))
            self.lock.start_refresh()
        except BaseException:
            self.lock.release()
            raise
        self.stats = SessionStats()
        self._stats_lock = threading.Lock()
        # what this session stored: on disk past a bounded number of entries (digestset.py)
        self._claimed = DigestSet(cs.memory_entries, cs.spill_dir)
        # other writers' unverified copies this session checked and deduplicates against
        self._checked_foreign = DigestSet(cs.memory_entries, cs.spill_dir)
        self._tls = threading.local()
        self._unindexed_records = 0
        # Packs in flight: the one being filled, the queue, one per uploader -> as many pooled buffers.
        self._pool = BufferPool(cs.pack_size + cs.codec.max_chunk + (64 << 10), keep=2 * max(1, cs.upload_threads) + 2)
        self._writer = PackWriter(cs.sealer, cs.pack_size, self._pool)
        self._queue: queue.Queue[FinishedPack | None] = queue.Queue(maxsize=max(1, cs.upload_threads))
        self._written: list[tuple[str, bytes]] = []
        self._written_lock = threading.Lock()
        self._error: BaseException | None = None
        self._closed = False
        self._uploaders = [
            threading.Thread(target=self._upload_loop, name=f"pack-upload-{i}", daemon=True)
            for i in range(max(1, cs.upload_threads))
        ]
        for t in self._uploaders:
            t.start()

    def _load_known(self, condemned: set[str]) -> tuple[KnownDigests, IndexView | None]:
        """What this session deduplicates against at once, and the index over the packs other writers
        wrote unverified (their copies are checked before they are deduplicated against), or None."""
        view = self.cs.load_index(condemned, recover=False)
        # (the markers after the index: every pack it lists had its marker written before it)
        foreign = {p for p, w in self.cs.unverified_packs().items() if w != self.writer and view.has_pack(p)}
        if not foreign:
            return KnownDigests(view), None
        return KnownDigests(IndexView(view.snap, condemned | foreign)), IndexView(view.snap, condemned, foreign)

    # -- uploads -----------------------------------------------------------------------------------
    def _upload_loop(self) -> None:
        while True:
            pack = self._queue.get()
            if pack is None:
                return
            if self._error is not None:
                continue  # drain so producers never block forever
            try:
                self.cs.store.put(self.cs.k(pack_key(pack.pack_id)), pack.data, sync=True)
                size = len(pack.data)
                pack.release()
                # packed (40 bytes per chunk, as the pack writer keeps them) rather than tuples (~130):
                # kept until the next index object
                with self._written_lock:
                    self._written.append((pack.pack_id, pack.records))
                    self._unindexed_records += pack.count
                    due = self._unindexed_records >= INDEX_EVERY_RECORDS
                with self._stats_lock:
                    self.stats.packs += 1
                    self.stats.pack_bytes += size
                if self.keep_partial:
                    self._index_written(CHECKPOINT_PACKS)
                elif due:
                    self._index_written()
            except BaseException as e:  # noqa: BLE001 - re-raised in the producer
                self._error = e

    def _index_written(self, at_least: int = 1) -> None:
        """One index object for the uploaded packs not indexed yet (when there are ``at_least``)."""
        with self._index_lock:
            with self._written_lock:
                todo = self._written[self._indexed:]
            if todo and len(todo) >= at_least:
                self.cs.store.flush()
                if self.writer is not None:  # (before the index: an indexed pack's writer is known)
                    self.cs.note_unverified(self.writer, [pid for pid, _ in todo])
                self.cs.write_index(todo)
                with self._written_lock:
                    # keep only the ids (abort must not delete indexed packs), not their records
                    self._written[self._indexed:self._indexed + len(todo)] = [(pid, b"") for pid, _ in todo]
                    self._indexed += len(todo)
                    self._unindexed_records -= sum(len(e) for _, e in todo) // _ENTRY.size

    def _enqueue(self, pack: FinishedPack) -> None:
        while True:
            self._check_error()
            try:
                self._queue.put(pack, timeout=0.5)
                return
            except queue.Full:
                continue

    def _check_error(self) -> None:
        if self._error is not None:
            raise self._error

    # -- chunks ------------------------------------------------------------------------------------
    def knows(self, digest: bytes) -> bool:
        """True if the chunk is in the repository (outside condemned packs) or in this session."""
        return digest in self._claimed or self._present(digest)  # (this session's own: no index look-up)

    def _present(self, digest: bytes) -> bool:
        """The repository has an intact copy to deduplicate against (as far as verify knows)."""
        if digest in self.damaged:
            return False
        return digest in self.known or (self._foreign is not None and self._foreign_checked(digest))

    def _foreign_checked(self, digest: bytes) -> bool:
        """Another writer's unverified copy of ``digest`` read and checked (once per session): the one
        readers prefer first (oldest), else the next. False if there is none or none is intact."""
        if digest in self._checked_foreign:
            return True
        for loc in self._foreign.locations(digest):
            if loc.pack_id not in self._foreign.excluded:  # (not condemned; then another writer's)
                try:
                    rec = self.cs.read_record(loc)
                    if len(rec) == loc.length:
                        self._codec().decode(digest, rec)
                        self._checked_foreign.add(digest)
                        return True
                except KeyError:
                    continue  # (GC removed the pack since: not a copy to rely on)
                except Damaged as e:
                    log.warning("chunk %s: the unverified copy in pack %s failed its check (%s); stored "
                                "again instead of deduplicated", digest.hex(), loc.pack_id, e)
        return False

    def check_foreign(self, digests) -> list[bytes]:
        """Check at once the other writers' unverified copies of the chunks of ``digests`` that this
        session would otherwise check one at a time (in :meth:`claim`, :meth:`knows`, :meth:`put_chunk`):
        grouped into ranged reads pack by pack, one read per span instead of one per chunk (an S3 GET
        each). A copy that fails here is left to the one-at-a-time check, which tries the next.

        Returns the digests this session may not know (the others it knows for sure): all of them when
        no other writer's packs are unverified, so a caller asks :meth:`knows` of those alone."""
        if self._foreign is None:
            return [d for d in digests if d is not None]
        maybe = [d for d in digests if d is not None and d not in self._claimed
                 and (d in self.damaged or d not in self.known)]
        todo = [d for d in maybe if d not in self.damaged and d not in self._checked_foreign]
        codec = self._codec()
        for pack_id, start, end, items in spans_of(self._foreign, todo, lambda d: None):
            if pack_id in self._foreign.excluded:
                continue  # (condemned: not a copy to rely on)
            try:
                blob = memoryview(self.cs.store.get(self.cs.k(pack_key(pack_id)), start, end))
            except KeyError:
                continue
            for d, loc in items:
                rec = blob[loc.offset - start:loc.offset - start + loc.length]
                try:
                    if len(rec) == loc.length:
                        codec.decode(d, rec)
                        self._checked_foreign.add(d)
                except Damaged:
                    pass  # (logged by the one-at-a-time check, which tries the other copies)
        return [d for d in maybe if d in self.damaged or d not in self._checked_foreign]

    def _codec(self) -> ChunkCodec:
        c = getattr(self._tls, "codec", None)
        if c is None:
            c = self._tls.codec = self.cs.codec.clone()
        return c

    def put_chunk(self, data, digest: bytes | None = None, codec: ChunkCodec | None = None) -> PutResult:
        """Store one chunk unless the repository or this session has it (``force_new`` stores it
        again unless this session already did). Thread-safe; pass a per-thread ``codec``
        (``chunk_store.codec.clone()``) when calling from several threads."""
        codec = codec or self.cs.codec
        d = digest if digest is not None else codec.digest(data)
        if not self.force_new and self._present(d):
            return PutResult(d, False, 0)
        if not self._claimed.add(d):  # atomic: exactly one thread claims a new digest
            return PutResult(d, False, 0)
        return PutResult(d, True, self.put_record(d, codec.encode_parts(d, data)))

    def put_chunks(self, pairs, codec: ChunkCodec | None = None) -> None:
        """:meth:`put_chunk` for each ``(data, digest)`` of a batch (a disk segment's blocks): one call
        per segment, so a sink that asks a remote vault asks once per batch."""
        pairs = list(pairs)
        if not self.force_new:
            self.check_foreign([d for _data, d in pairs])
        for data, d in pairs:
            self.put_chunk(data, d, codec)

    def claim(self, digest: bytes) -> bool:
        """For a writer that encodes elsewhere (the remote chunk service): True if this session
        stores ``digest`` -- the caller must then :meth:`put_record` it -- False if the repository
        (outside condemned packs) or this session already has it."""
        if not self.force_new and self._present(digest):
            return False
        return self._claimed.add(digest)

    def put_record(self, digest: bytes, record) -> int:
        """Append an encoded record (a sequence of parts) of a chunk this session claimed; returns
        its size. The caller checked the record (see engine/remote/service.py)."""
        n = sum(len(p) for p in record)
        pack = self._writer.add(digest, record)
        # Claimed without force_new, the chunk is new unless only a damaged copy is held; otherwise the
        # index says (a chunk only in condemned packs counts as added). (One index look-up less per
        # chunk stored: claim() made it already.)
        added = (not self.force_new and digest not in self.damaged) or digest not in self.known
        with self._stats_lock:
            self.stats.new_chunks += 1
            self.stats.written_bytes += n
            if added:
                self.stats.added_bytes += n
        if pack is not None:
            self._enqueue(pack)
        return n

    # -- end ---------------------------------------------------------------------------------------
    def _drain(self) -> None:
        last = self._writer.finish()
        if last is not None:
            self._enqueue(last)
        for _ in self._uploaders:
            self._queue.put(None)
        for t in self._uploaders:
            t.join()
        self._check_error()

    def commit(self, name: str, header: dict, refs: bytes = b"", payload: bytes = b"") -> int:
        """Make everything durable, then publish the manifest. Returns the manifest's stored size."""
        if self._closed:
            raise Conflict("session already closed")
        try:
            self._drain()
            self.cs.store.flush()
            self._index_written()  # (the entries are in the index object's packed form already)
            if not self.lock.still_held():
                raise Conflict("the backup lost its repository lock (stalled longer than the stale "
                               "timeout); no backup was recorded, retry it")
            size = self.cs.put_manifest(Manifest(name, header, refs, payload))
            if not self.lock.still_held():
                self.cs.delete_manifest(name)
                raise Conflict("the backup lost its repository lock while it was being recorded; retry")
        except BaseException:
            self._finish()
            raise
        self._finish()
        return size

    def keep(self) -> None:
        """End without a manifest, keeping what was stored (``keep_partial``): the last pack is written
        and every pack indexed, so a later session reuses the chunks. Falls back to :meth:`abort`."""
        if self._closed:
            return
        try:
            self._drain()
            self._index_written()
        except BaseException:
            self.abort()
            raise
        self._finish()

    def _finish(self) -> None:
        self._closed = True
        self._claimed.close()
        self._checked_foreign.close()
        self.known.close()
        self.lock.release()

    def abort(self) -> None:
        """Drop everything this session wrote and did not index (best effort) and release the lock."""
        if self._closed:
            return
        self._closed = True
        self._error = self._error or RuntimeError("aborted")
        for _ in self._uploaders:
            try:
                self._queue.put(None, timeout=5)
            except queue.Full:
                pass
        deadline = time.monotonic() + 30
        for t in self._uploaders:
            t.join(timeout=max(0.1, deadline - time.monotonic()))
        with self._index_lock, self._written_lock:
            written = list(self._written[self._indexed:])
        for pack_id, _ in written:
            try:
                self.cs.store.delete(self.cs.k(pack_key(pack_id)))
            except Exception:
                pass  # left for GC
        self._claimed.close()
        self._checked_foreign.close()
        self.known.close()
        self.lock.release()
