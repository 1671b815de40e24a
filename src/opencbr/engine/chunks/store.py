"""The chunk store: content-addressed, compressed, encrypted chunks in packs, plus manifests.

It knows nothing of disks (like pbs-datastore or restic's internal/repository). Layout under the
repository prefix::

    config                      repository id, format, wrapped keys (written by Repository.create)
    data/<xx>/<pack id>         packs of chunk records (packs.py)
    index/<time>-<rand>         which chunk is where (locations.py)
    manifests/<name>            backups (manifests.py)
    refs/<name>/<nonce>-<n>     segments of a large manifest's refs, written before it (manifests.py)
    locks/...                   writer and GC locks (locks.py)
    gc/condemned-<gen>          packs GC has condemned but not yet deleted (gc.py)
    unverified/<time>-<rand>    packs an agent wrote that nothing has checked yet (unverified.py)

Writes go through a :class:`~opencbr.engine.chunks.session.WriteSession` (``WriteSession(chunk_store)``),
which orders them packs -> index -> manifest. Reads (``get_chunk``) verify every chunk against its digest and
fall back to another copy of the chunk if one is damaged or gone.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import threading
from typing import Iterable, Iterator

from ...storage import ObjectStore
from ...system.libc import function as libc_function
from ..errors import Conflict, Damaged, Missing
from .codec import ChunkCodec
from .crypto import DIGEST_SIZE, ZERO_DIGEST, RepoKeys, Sealer
from .digestset import DEFAULT_MEMORY_ENTRIES, DigestSet
from .diskindex import DiskChunkIndex, IndexView, KnownDigests
from .distinct import DistinctDigests
from .locations import ENTRY_SIZE, Location, decode_index, encode_index, new_index_name, pack_entries
from .locks import LockTiming
from .manifests import (
    MANIFESTS_DIR,
    REFS_DIR,
    Manifest,
    RefsSegment,
    check_name,
    decode_manifest,
    decode_refs_segment,
    encode_manifest,
    encode_refs_segment,
    refs_prefix,
    split_refs,
    stream_refs,
)
from .packs import FOOTER_SIZE, pack_key, read_trailer, trailer_length
from .unverified import note_unverified, unverified_packs

INDEX_DIR = "index/"
DATA_DIR = "data/"
GC_DIR = "gc/"
CONDEMNED_PREFIX = "gc/condemned-"
#: refs longer than this go to segment objects (manifests.py): 2 MiB, 4 GiB of disk at 64 KiB blocks.
#: Writing or reading a segment holds about four copies of it at once (the refs, compressed, sealed, the
#: object): with 8 MiB segments that was a 41 MB step in a large disk backup's peak RSS at its commit.
REFS_SEGMENT_SIZE = 2 << 20
#: what verify names, among the damaged index objects, when it needed packs no index object lists
UNLISTED_PACKS = "index/ (no object lists some packs)"
UNLISTED_BATCH_RECORDS = 1 << 15  # records of unlisted packs decoded at once (as an index object's)


def _release_free_heap() -> None:
    malloc_trim = libc_function("malloc_trim", (ctypes.c_size_t,))
    if malloc_trim is not None:
        malloc_trim(0)


class ChunkStore:
    """Chunks and manifests of one repository (``prefix`` in ``store``)."""

    def __init__(
        self,
        store: ObjectStore,
        prefix: str,
        keys: RepoKeys | None,
        *,
        pack_size: int = 16 << 20,
        max_chunk: int = 16 << 20,
        lock_timing: LockTiming | None = None,
        upload_threads: int = 2,
    ):
        self.store = store
        self.prefix = prefix
        self.keys = keys
        self.codec = ChunkCodec(keys, max_chunk=max_chunk)
        self.sealer = Sealer(keys)
        self.pack_size = pack_size
        self.lock_timing = lock_timing or LockTiming()
        self.upload_threads = upload_threads
        # the memory bound of a write session's dedup set (entries) and where it spills (digestset.py)
        self.memory_entries = DEFAULT_MEMORY_ENTRIES
        self.spill_dir: str | None = None
        self._cache_lock = threading.Lock()
        self._disk_index: DiskChunkIndex | None = None  # the vault's chunk index on local disk
        self._index_rebuilt = False  # get_chunk rebuilt it once (see there)
        self._reader_index: IndexView | None = None
        self.marker_cache: dict[str, tuple[str, list[str]]] = {}  # markers read (unverified.py)
        self._unlisted: IndexView | None = None  # packs no index object lists (unlisted_index)
        self._unlisted_read: dict[str, int] = {}  # ... those a reader needed -> chunks read from each
        self._manifest_refs_cache: dict[tuple[str, int], set[bytes]] = {}
        self.refs_segment_size = REFS_SEGMENT_SIZE

    @property
    def encrypted(self) -> bool:
        return self.keys is not None

    # -- keys ------------------------------------------------------------------------------------
    def k(self, rel: str) -> str:
        return self.prefix + rel

    # -- index -----------------------------------------------------------------------------------
    def list_index_objects(self) -> list[str]:
        n = len(self.prefix)
        return sorted(key[n:] for key, _ in self.store.list(self.k(INDEX_DIR)))

    def _index_dir(self) -> str | None:
        """Where this vault's chunk index is kept: under ``spill_dir`` (the service's scratch directory)
        one directory per store and prefix; None (a private temporary one) when there is no spill_dir."""
        if self.spill_dir is None:
            return None
        key = hashlib.sha256(f"{self.store.url()}\0{self.prefix}".encode()).hexdigest()[:32]
        return os.path.join(self.spill_dir, "chunk-index", key)

    def _disk(self) -> DiskChunkIndex:
        with self._cache_lock:
            if self._disk_index is None:
                # the pages it caches follow the memory setting (16,384 entries -> 1,024 pages, 4 MiB)
                self._disk_index = DiskChunkIndex(self._index_dir(), max(64, self.memory_entries // 16))
            return self._disk_index

    def _read_index_packs(self, rel: str) -> list[tuple[str, bytes]]:
        return decode_index(self.sealer, self.store.get(self.k(rel)), rel)

    def damaged_index_objects(self, packs: Iterable[str] | None = None) -> dict[str, str]:
        """The damaged index objects (name -> why): those the local index could not read at its last
        sync, and, read and checked now one at a time, the store's copies of those that list any of
        ``packs`` (None: every object of the vault). The local index (diskindex.py) reads an object once,
        when it first sees its name, so a verify must look at the store's copies itself: a damaged
        object would otherwise go unnoticed until another machine, or a rebuild of the local index,
        needs it. A backup's verify checks those listing its packs (time linear in the backup, not in
        the vault; ~1.3 MB each per 32,768 records), a vault's verify every one; bounded in memory."""
        idx = self.reader_index()
        found = idx.damaged_objects
        unlisted = self.unlisted_packs_read()
        if unlisted and (packs is None or not unlisted.keys().isdisjoint(packs)):
            found[UNLISTED_PACKS] = (
                f"{len(unlisted)} pack(s) hold chunks that no index object lists (was an index object "
                f"deleted?), e.g. {min(unlisted)}: read from their own trailers; the vault's next GC lists "
                f"them in the index again")
        rels = self.list_index_objects() if packs is None else idx.objects_listing(packs)
        for rel in rels:
            if rel in found:
                continue
            try:
                self._read_index_packs(rel)
            except KeyError:
                continue  # consolidated away by GC meanwhile
            except Damaged as e:
                found[rel] = str(e)
        return dict(sorted(found.items()))

    def _recover_packs(self, known: set[str]):
        """``(pack id, packed records)`` of every pack in the store outside ``known``, read from its
        trailer (``None`` for records when the trailer cannot be read): what a damaged index object
        listed (diskindex.py). One listing of the packs, then the tail of each pack outside ``known``."""
        n = len(self.k(DATA_DIR))
        for key, size in list(self.store.list(self.k(DATA_DIR))):
            pack_id = key[n:].rsplit("/", 1)[-1]
            if pack_id in known:
                continue
            try:
                yield pack_id, self.pack_listing(pack_id, size)
            except KeyError:
                continue  # deleted meanwhile (GC)

    def pack_listing(self, pack_id: str, size: int) -> bytes | None:
        """A pack's records as an index object lists them (40 bytes each), read from the pack's own sealed
        trailer: two small range reads. None if the trailer cannot be read; KeyError if the pack is gone."""
        key = self.k(pack_key(pack_id))
        try:
            if size < FOOTER_SIZE:
                raise Damaged(f"pack {pack_id}: too short")
            tail = trailer_length(self.store.get(key, size - FOOTER_SIZE, size))
            if tail > size:
                raise Damaged(f"pack {pack_id}: bad footer")
            entries = read_trailer(self.sealer, self.store.get(key, size - tail, size), size, f"pack {pack_id}")
        except Damaged:
            return None
        return pack_entries((e.digest, e.offset, e.length) for e in entries)

    def unlisted_index(self) -> IndexView:
        """The packs in the store that no index object lists, from their trailers, as an index of their
        own (a private one on local disk: bounded memory): built once per ChunkStore, when a reader meets
        a chunk the index does not know. What they are: a crashed or running writer's packs (not indexed
        yet), or the packs of an index object that was *deleted* (which nothing else can tell from one
        GC replaced). Readers use them as a last resort, never writers (get_chunk); a verify that needed
        them says so (damaged_index_objects); GC lists them again in the index (gc.py)."""
        with self._cache_lock:
            if self._unlisted is not None:
                return self._unlisted
        known = set(self.reader_index().pack_ids)
        disk = DiskChunkIndex(None, 64)
        names: list[str] = []  # every batch so far (a sync drops the packs of names not given)
        pending: dict[str, list[tuple[str, bytes]]] = {}  # ... the one not read yet
        batch: list[tuple[str, bytes]] = []
        records = 0
        for pack_id, listing in self._recover_packs(known):
            if listing is None:
                continue
            batch.append((pack_id, listing))
            records += len(listing) // ENTRY_SIZE
            if records >= UNLISTED_BATCH_RECORDS:
                names.append(f"unlisted/{len(names)}")
                pending[names[-1]], batch, records = batch, [], 0
                disk.sync_with(names, pending.pop)
        names.append(f"unlisted/{len(names)}")
        pending[names[-1]] = batch
        snap = disk.sync_with(names, pending.pop)
        view = IndexView(snap)
        with self._cache_lock:
            if self._unlisted is None:
                self._unlisted = view
            return self._unlisted

    def note_unlisted_read(self, chunks_by_pack: dict[str, int]) -> None:
        with self._cache_lock:
            for pack_id, n in chunks_by_pack.items():
                self._unlisted_read[pack_id] = self._unlisted_read.get(pack_id, 0) + n

    def unlisted_packs_read(self) -> dict[str, int]:
        """The packs no index object lists that readers of this ChunkStore needed (pack id -> chunks)."""
        with self._cache_lock:
            return dict(self._unlisted_read)

    def missing_chunk(self, digest: bytes) -> Missing:
        """The error for a chunk no known copy of exists, naming the damaged index objects that may have
        listed it (their packs' trailers did not: the pack is unreadable or gone)."""
        damaged = sorted(self.reader_index().damaged_objects)
        if not damaged:
            return Missing(f"chunk {digest.hex()} is not in the repository")
        return Missing(f"chunk {digest.hex()} is not in the repository index: the damaged index object(s) "
                       f"{', '.join(damaged[:3])} may have listed it, and no readable pack trailer does")

    def private_index(self) -> DiskChunkIndex:
        """An index of this process alone, built from the store at its first sync (GC's: what it deletes
        is decided from the store's objects, never from a cache another process could have left wrong)."""
        return DiskChunkIndex(None, max(64, self.memory_entries // 16))

    def load_index(self, excluded: Iterable[str] = (), disk: DiskChunkIndex | None = None, *,
                   recover: bool = True) -> IndexView:
        """The index as the store's index objects say now, on local disk (diskindex.py: only objects not
        seen before are read; bounded memory whatever the vault's size), ``excluded`` packs (condemned)
        kept only as fallbacks. ``disk``: that index instead of the vault's shared one. Retries if GC
        replaced objects while they were read. A damaged object is skipped (the view names it); the
        packs no readable object lists are then recovered from their trailers (``recover``)."""
        disk = disk or self._disk()
        for _attempt in range(5):
            snap = disk.sync_with(self.list_index_objects(), self._read_index_packs,
                                  self._recover_packs if recover else None)
            if snap is not None:
                return IndexView(snap, excluded)
        raise Conflict("the repository index kept changing while it was loaded; retry")

    def load_known_digests(self, excluded: Iterable[str] = ()) -> KnownDigests:
        """The digests a writer may deduplicate against (those outside ``excluded`` packs): ``in`` looks
        the on-disk index up (bounded memory whatever the vault's size). A writer never deduplicates
        against packs recovered from their trailers, so its start does not recover them."""
        return KnownDigests(self.load_index(excluded, recover=False))

    # -- packs nothing has checked (unverified.py) -------------------------------------------------
    def marker_cache_path(self) -> str | None:
        """The local copy of the markers read (unverified.py), beside the vault's chunk index; None
        without a spill_dir (then ``marker_cache``, this ChunkStore's own)."""
        d = self._index_dir()
        return None if d is None else os.path.join(d, "unverified-markers.json")

    def unverified_packs(self) -> dict[str, str]:
        """``{pack id: writer}`` of the packs written without a check of their records."""
        return unverified_packs(self)

    def note_unverified(self, writer: str, pack_ids: Iterable[str]) -> None:
        note_unverified(self, writer, pack_ids)

    def trusted_pack(self, pack_id: str, reader: str | None = None) -> bool:
        """Whether a reader may use a record of ``pack_id`` without hashing its plaintext: the pack was
        checked when written (or repacked since), or ``reader`` is the writer that wrote it. As the
        reader index was last loaded: a pack it does not list counts as unverified, and so does a pack
        known only from its trailer while an index object is damaged (it may be a running agent's backup's,
        uploaded and not marked yet)."""
        view = self.reader_index()  # (one view, and the markers read for it: see reader_index)
        if not view.has_pack(pack_id) or view.recovered(pack_id):
            return False
        writer = view.writers.get(pack_id)
        return writer is None or writer == reader

    def write_index(self, packs: Iterable[tuple[str, bytes | Iterable[tuple[bytes, int, int]]]]) -> str:
        packed = [(p, e if isinstance(e, (bytes, bytearray)) else pack_entries(e)) for p, e in packs]
        rel = INDEX_DIR + new_index_name()
        self.store.put(self.k(rel), encode_index(self.sealer, packed))
        if self._disk_index is not None:
            self._disk_index.note_object(rel, packed)  # (what this process wrote need not be read back)
        del packed
        # An index object (a backup writes one per 32,768 records, from an uploader thread) is a few
        # MB built and freed at once; the thread's malloc arena kept them, so each uploader's arena grew
        # by ~4 MB at its first index object and a long backup's peak with it. Returned at once instead
        # (one malloc_trim per index object: well under a millisecond).
        _release_free_heap()
        return rel

    def reader_index(self, refresh: bool = False) -> IndexView:
        """The index readers use (cached; refreshed on demand when a chunk is not where expected)."""
        if refresh or self._reader_index is None:
            view = self.load_index(self.condemned_packs())
            # (the markers after the index: every pack it lists had its marker written before it)
            unverified = self.unverified_packs()
            self._reader_index = IndexView(view.snap, view.excluded, unverified)
        return self._reader_index

    # -- condemned packs (GC) --------------------------------------------------------------------
    def condemned_lists(self) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        n = len(self.k(CONDEMNED_PREFIX))
        for key, _ in self.store.list(self.k(CONDEMNED_PREFIX)):
            try:
                body = json.loads(self.store.get(key))
            except KeyError:
                continue
            out[key[n:]] = list(body.get("packs", []))
        return out

    def condemned_packs(self) -> set[str]:
        s: set[str] = set()
        for packs in self.condemned_lists().values():
            s.update(packs)
        return s

    # -- chunks ------------------------------------------------------------------------------------
    def read_record(self, loc: Location) -> bytes:
        return self.store.get(self.k(pack_key(loc.pack_id)), loc.offset, loc.offset + loc.length)

    def get_chunk(self, digest: bytes, codec: ChunkCodec | None = None) -> bytes:
        """The plaintext of chunk ``digest``, verified. Tries every known copy; refreshes the index
        once if none works (GC may have repacked it), and if still none does, rebuilds the local index
        from the store once per ChunkStore (it may be stale or damaged: never trusted over the store).
        Raises Missing or Damaged."""
        codec = codec or self.codec
        last_err: Exception | None = None
        moved = False  # a copy the index named was not there (GC may have repacked it)
        for attempt in ("as known", "refreshed", "rebuilt"):
            if attempt == "refreshed" and not moved and isinstance(last_err, Damaged):
                # every copy is there but damaged: the chunk did not move. (Not when a copy was missing
                # too: another copy failing its check -- an agent's forged record, unverified.py --
                # says nothing about where the missing one went.)
                continue
            if attempt == "rebuilt":
                if self._index_rebuilt:
                    break
                self._index_rebuilt = True
                self._disk().discard()
            idx = self.reader_index(refresh=attempt != "as known")
            for loc in idx.locations(digest):
                try:
                    rec = self.read_record(loc)
                    if len(rec) != loc.length:
                        raise Damaged(f"chunk {digest.hex()}: short record in pack {loc.pack_id}", digest=digest)
                    return codec.decode(digest, rec)
                except KeyError:
                    last_err = Missing(f"chunk {digest.hex()}: pack {loc.pack_id} is missing")
                    moved = True
                except Damaged as e:
                    last_err = e
        if last_err is None or isinstance(last_err, Missing):
            found = self._read_unlisted(digest, codec)
            if found is not None:
                return found
        if last_err is None:
            last_err = self.missing_chunk(digest)
        raise last_err

    def _read_unlisted(self, digest: bytes, codec: ChunkCodec) -> bytes | None:
        """The chunk from a pack no index object lists (see unlisted_index), or None."""
        for loc in self.unlisted_index().locations(digest):
            try:
                rec = self.read_record(loc)
                if len(rec) == loc.length:
                    data = codec.decode(digest, rec)
                    self.note_unlisted_read({loc.pack_id: 1})
                    return data
            except (KeyError, Damaged):
                continue
        return None

    def has_chunk(self, digest: bytes) -> bool:
        return self.reader_index().has(digest)

    # -- what a backup or restore asks besides chunks (see seams.py) ------------------------------
    @property
    def fork_safe(self) -> bool:
        """A restore may fork processes that read this store."""
        return bool(self.store.capabilities.fork_safe)

    def has_manifest(self, name: str) -> bool:
        return self.store.head(self.k(MANIFESTS_DIR + name)) is not None

    # -- manifests ---------------------------------------------------------------------------------
    def put_manifest(self, manifest: Manifest) -> int:
        """Store a new manifest (never overwrites: Conflict if the name exists); refs longer than
        ``refs_segment_size`` go to segment objects first (read from ``manifest.refs`` a segment at a
        time: it may be the disk's spooled digests). Returns the stored size of the manifest and its
        segments. Prefer :meth:`WriteSession.commit`, which orders it after the data."""
        check_name(manifest.name)
        written: list[RefsSegment] = []
        if len(manifest.refs) > self.refs_segment_size:
            written = self._put_refs_segments(manifest.name, manifest.refs)
            manifest = Manifest(manifest.name, manifest.header, b"", manifest.payload, segments=written)
        blob = encode_manifest(self.sealer, manifest)
        # (if this put fails, the segments stay: it may have stored the manifest; if not, GC removes them
        # as after a kill -9)
        if not self.store.put_if_absent(self.k(MANIFESTS_DIR + manifest.name), blob):
            for seg in written:  # another write's manifest has the name: ours are orphans
                self.store.delete(self.k(seg.rel))
            raise Conflict(f"backup {manifest.name} already exists in the repository")
        return len(blob) + sum(seg.stored_length for seg in written)

    def _put_refs_segments(self, name: str, refs) -> list[RefsSegment]:
        """Write ``refs`` as segment objects under a fresh nonce (never over another write's), durable
        before the manifest that lists them."""
        nonce, segs = os.urandom(8), []
        size = self.refs_segment_size - self.refs_segment_size % 32
        try:
            for number, part in enumerate(split_refs(refs, size)):
                blob, seg = encode_refs_segment(self.sealer, name, nonce, number, part)
                self.store.put(self.k(seg.rel), blob, sync=False)
                segs.append(seg)
            self.store.flush()
        except BaseException:
            for seg in segs:
                self.store.delete(self.k(seg.rel))
            raise
        return segs

    def _read_refs_segment(self, seg: RefsSegment) -> bytes:
        try:
            blob = self.store.get(self.k(seg.rel))
        except KeyError:
            if not self.has_manifest(seg.name):  # deleted while it was read (its segments go after it)
                raise Missing(f"backup {seg.name} is not in the repository") from None
            raise Damaged(f"{seg.what} is missing") from None
        return decode_refs_segment(self.sealer, seg, blob)

    def _manifest_blob(self, name: str) -> bytes:
        check_name(name)
        try:
            return self.store.get(self.k(MANIFESTS_DIR + name))
        except KeyError:
            raise Missing(f"backup {name} is not in the repository") from None

    def read_manifest(self, name: str) -> Manifest:
        """The whole manifest, its refs read in (all segments: callers with a large disk's refs stream
        them with :meth:`manifest_refs_streamed`, or use :meth:`manifest_head`)."""
        m = self.manifest_head(name)
        if m.segments:
            m.refs = b"".join(self._read_refs_segment(seg) for seg in m.segments)
        return m

    def manifest_head(self, name: str) -> Manifest:
        """A manifest without its refs segments read: header, payload, the segment table (format 2;
        ``refs`` empty) or the inline refs (format 1). :meth:`refs_range` reads a part of its refs."""
        return decode_manifest(self.sealer, name, self._manifest_blob(name))

    @staticmethod
    def refs_length(m: Manifest) -> int:
        """Bytes of refs of a manifest from :meth:`manifest_head`."""
        return sum(seg.refs_length for seg in m.segments) if m.segments else len(m.refs)

    def refs_range(self, m: Manifest, start: int, end: int) -> bytes:
        """Bytes ``start:end`` of the refs of ``m`` (from :meth:`manifest_head`), reading only the
        segments that hold them (each checked, as :meth:`manifest_refs_streamed` does)."""
        if not m.segments:
            return bytes(m.refs[start:end])
        out, at = [], 0
        for seg in m.segments:
            seg_end = at + seg.refs_length
            if at < end and seg_end > start:
                refs = self._read_refs_segment(seg)
                out.append(refs[max(0, start - at):min(end, seg_end) - at])
            if seg_end >= end:
                break
            at = seg_end
        return b"".join(out)

    def manifest_header(self, name: str) -> dict:
        """A manifest's header, without reading its refs segments."""
        header, _pieces = self.manifest_refs_streamed(name)
        return header

    def manifest_refs_streamed(self, name: str):
        """``(header, refs pieces)`` of a manifest, its refs decompressed as they are read, a segment
        at a time (see :func:`~opencbr.engine.chunks.manifests.stream_refs`). Missing if there is
        none; Damaged (naming the segment) if a segment is missing, truncated or not the one listed."""
        return stream_refs(self.sealer, name, self._manifest_blob(name), self._read_refs_segment)

    def list_manifests(self) -> list[str]:
        n = len(self.k(MANIFESTS_DIR))
        return sorted(key[n:] for key, _ in self.store.list(self.k(MANIFESTS_DIR)))

    def delete_manifest(self, name: str) -> None:
        """Delete a manifest, then its refs segments (a crash between leaves orphans GC removes)."""
        check_name(name)
        self.store.delete(self.k(MANIFESTS_DIR + name))
        for key, _size in list(self.store.list(self.k(refs_prefix(name)))):
            self.store.delete(key)

    def refs_segment_names(self) -> dict[str, list[str]]:
        """The keys of every refs segment object in the store, by the name of their manifest."""
        out: dict[str, list[str]] = {}
        n = len(self.k(REFS_DIR))
        for key, _size in self.store.list(self.k(REFS_DIR)):
            out.setdefault(key[n:].split("/", 1)[0], []).append(key)
        return out

    def manifest_refs(self, name: str) -> set[bytes]:
        """Distinct digests a manifest references (cached per name and object size)."""
        size = self.store.head(self.k(MANIFESTS_DIR + name))
        if size is None:
            raise Missing(f"backup {name} is not in the repository")
        key = (name, size)
        refs = self._manifest_refs_cache.get(key)
        if refs is None:
            refs = set()
            for piece in self.manifest_refs_streamed(name)[1]:  # (a segment at a time)
                refs.update(piece[i:i + DIGEST_SIZE] for i in range(0, len(piece), DIGEST_SIZE))
            refs.discard(ZERO_DIGEST)
            if len(self._manifest_refs_cache) > 256:
                self._manifest_refs_cache.clear()
            self._manifest_refs_cache[key] = refs
        return refs

    def referenced(self) -> DigestSet:
        """Union of the refs of every manifest in the store now, on disk past ``memory_entries``
        (digestset.py), fed manifest by manifest as its refs are read. The caller closes it."""
        refs = DigestSet(self.memory_entries, self.spill_dir)
        try:
            for buf in self._every_manifests_refs():
                refs.add_many([d for i in range(0, len(buf), DIGEST_SIZE)
                               if (d := bytes(buf[i:i + DIGEST_SIZE])) != ZERO_DIGEST])
        except BaseException:
            refs.close()
            raise
        return refs

    def _every_manifests_refs(self) -> Iterator:
        """The refs of every manifest in the store now, manifest by manifest as they are read, in buffers
        of whole digests (a manifest deleted while they are listed is left out)."""
        for name in self.list_manifests():
            try:
                _header, pieces = self.manifest_refs_streamed(name)
                rest = b""
                for piece in pieces:
                    buf = rest + piece if rest else piece
                    whole = len(buf) - len(buf) % DIGEST_SIZE
                    yield buf[:whole]
                    rest = bytes(buf[whole:])
            except Missing:
                continue  # deleted while we listed

    def usage(self) -> int:
        """Stored bytes of the distinct chunks the manifests reference (the vault's used capacity).
        Counted with a :class:`DistinctDigests`, not :meth:`referenced`'s set: nothing here asks whether
        one digest is in, and past ``memory_entries`` that set cost ~4 µs per ref (distinct.py)."""
        with DistinctDigests(self.memory_entries * DIGEST_SIZE * 2, self.spill_dir) as refs:
            for buf in self._every_manifests_refs():
                refs.add_buffer(buf)
            idx = self.reader_index(refresh=True)
            return sum(idx.stored_size(d) or 0 for d in refs if d != ZERO_DIGEST)
