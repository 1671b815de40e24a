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

Writes go through a :class:`~opencbr.engine.chunks.session.WriteSession` (``WriteSession(chunk_store)``),
which orders them packs -> index -> manifest. Reads (``get_chunk``) verify every chunk against its digest and
fall back to another copy of the chunk if one is damaged or gone.
"""

from __future__ import annotations

import json
import os
import threading
from typing import Iterable

from ...storage import ObjectStore
from ..errors import Conflict, Damaged, Missing
from .codec import ChunkCodec
from .crypto import DIGEST_SIZE, ZERO_DIGEST, RepoKeys, Sealer
from .digestset import DEFAULT_MEMORY_ENTRIES, DigestSet
from .locations import ENTRY_SIZE, ChunkIndex, Location, decode_index, encode_index, new_index_name
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
from .packs import pack_key

INDEX_DIR = "index/"
DATA_DIR = "data/"
GC_DIR = "gc/"
CONDEMNED_PREFIX = "gc/condemned-"
#: refs longer than this go to segment objects (manifests.py): 8 MiB, 16 GiB of disk at 64 KiB blocks
REFS_SEGMENT_SIZE = 8 << 20


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
        self._index_cache: dict[str, list[tuple[str, bytes]]] = {}
        self._cache_lock = threading.Lock()
        self._reader_index: ChunkIndex | None = None
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

    def _read_index_object(self, rel: str):
        with self._cache_lock:
            cached = self._index_cache.get(rel)
        if cached is not None:
            return cached
        parsed = decode_index(self.sealer, self.store.get(self.k(rel)), rel)
        with self._cache_lock:
            self._index_cache[rel] = parsed
        return parsed

    def load_index(self, excluded: Iterable[str] = ()) -> ChunkIndex:
        """Build a fresh :class:`ChunkIndex` from the index objects in the store now (parsed objects
        are cached: they are immutable). Retries if GC replaced objects while we were reading."""
        for _attempt in range(5):
            names = self.list_index_objects()
            idx = ChunkIndex(excluded)
            try:
                for rel in names:
                    for pack_id, entries in self._read_index_object(rel):
                        idx.add_pack(pack_id, entries)
            except KeyError:
                continue  # an index object was consolidated away between list and get
            with self._cache_lock:
                for stale in set(self._index_cache) - set(names):
                    del self._index_cache[stale]
            return idx
        raise Conflict("the repository index kept changing while it was loaded; retry")

    def load_known_digests(self, excluded: Iterable[str] = ()) -> DigestSet:
        """The digests a writer may deduplicate against (those outside ``excluded`` packs), in a
        :class:`DigestSet` -- bounded memory whatever the vault's size -- rather than a whole
        :class:`ChunkIndex`: a writer only asks "is it there?". Objects read here are not cached
        (the cache would hold 40 bytes per chunk of the vault)."""
        excluded = set(excluded)
        for _attempt in range(5):
            known = DigestSet(self.memory_entries, self.spill_dir)
            try:
                for rel in self.list_index_objects():
                    with self._cache_lock:
                        parsed = self._index_cache.get(rel)
                    if parsed is None:
                        parsed = decode_index(self.sealer, self.store.get(self.k(rel)), rel)
                    known.add_many([entries[at:at + 32] for pack_id, entries in parsed if pack_id not in excluded
                                    for at in range(0, len(entries), ENTRY_SIZE)])
            except KeyError:
                known.close()
                continue  # an index object was consolidated away between list and get
            except BaseException:
                known.close()
                raise
            return known
        raise Conflict("the repository index kept changing while it was loaded; retry")

    def write_index(self, packs: Iterable[tuple[str, Iterable[tuple[bytes, int, int]]]]) -> str:
        rel = INDEX_DIR + new_index_name()
        self.store.put(self.k(rel), encode_index(self.sealer, packs))
        return rel

    def reader_index(self, refresh: bool = False) -> ChunkIndex:
        """The index readers use (cached; refreshed on demand when a chunk is not where expected)."""
        if refresh or self._reader_index is None:
            self._reader_index = self.load_index(self.condemned_packs())
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
        once if none works (GC may have repacked it). Raises Missing or Damaged."""
        codec = codec or self.codec
        last_err: Exception | None = None
        for refresh in (False, True):
            idx = self.reader_index(refresh=refresh)
            for loc in idx.locations(digest):
                try:
                    rec = self.read_record(loc)
                    if len(rec) != loc.length:
                        raise Damaged(f"chunk {digest.hex()}: short record in pack {loc.pack_id}", digest=digest)
                    return codec.decode(digest, rec)
                except KeyError:
                    last_err = Missing(f"chunk {digest.hex()}: pack {loc.pack_id} is missing")
                except Damaged as e:
                    last_err = e
            if isinstance(last_err, Damaged):
                break
        if last_err is None:
            last_err = Missing(f"chunk {digest.hex()} is not in the repository")
        raise last_err

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
        them with :meth:`manifest_refs_streamed`, or use :meth:`manifest_header`)."""
        m = decode_manifest(self.sealer, name, self._manifest_blob(name))
        if m.segments:
            m.refs = b"".join(self._read_refs_segment(seg) for seg in m.segments)
        return m

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

    def referenced(self) -> set[bytes]:
        """Union of the refs of every manifest in the store now."""
        s: set[bytes] = set()
        for name in self.list_manifests():
            try:
                s |= self.manifest_refs(name)
            except Missing:
                continue  # deleted while we listed
        return s

    def usage(self) -> int:
        """Stored bytes of the distinct chunks the manifests reference (the vault's used capacity)."""
        refs = self.referenced()
        idx = self.reader_index(refresh=True)
        total = 0
        for d in refs:
            sz = idx.stored_size(d)
            if sz is not None:
                total += sz
        return total
