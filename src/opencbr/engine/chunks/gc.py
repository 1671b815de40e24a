"""Garbage collection that is safe while backups run (and while other backups are deleted).

Scheme (chosen over restic's exclusive prune lock, which would stop GC whenever any backup runs, and
over PBS's atime marking, which object stores cannot do): two-phase *condemn, then sweep*, with writer
lock objects telling GC which condemnations each running writer has seen.

- A writer (backup) writes its lock object, *then* reads the condemned lists and the index, records in
  its lock which lists it saw, and never deduplicates against a chunk in a condemned pack.
- GC (one at a time: ``locks/gc`` is created with put-if-absent):
  1. lists the locks (and deletes stale ones: not refreshed for ``stale_after`` by the store's clock);
  2. loads the index, lists the packs, reads every manifest's refs (after step 1, so any writer not in
     the lock list has already published its manifest);
  3. sweeps each older condemned list that every live writer has seen: such writers cannot reuse its
     chunks, and writers that could have (older ones) have finished, so their manifests are in the
     refs. A condemned pack holding a referenced chunk with no other copy is *resurrected* (kept);
     the others are deleted;
  4. plans: packs with no live chunk, and packs no index mentions (crashed or running writers), are
     condemned; packs with >= ``REPACK_DEAD_FRACTION`` dead bytes have their live records copied
     (verified, not re-encrypted) into new packs, indexed, and the old pack condemned;
  5. writes the new condemned list; if no live writer predates it, sweeps it right away (the common
     case: a GC with no backup running frees everything in one call), else leaves it for the next GC;
  6. writes one consolidated index object and deletes the ones it replaces, then the swept lists.

**A deleted index object** cannot be told from one GC replaced: its packs look like a crashed writer's.
So before condemning a pack no index object lists, GC reads its trailer, and keeps it if it holds a chunk
that backups reference and no listed pack holds (``packs_unlisted_kept``); when no writer is live it lists those packs in the index again (``packs_relisted``).
Readers find their chunks from the trailers meanwhile (ChunkStore.unlisted_index).

**A damaged index object** (diskindex.py skips it) does not hide packs from GC: the packs no readable
object lists are recovered from their own trailers, and those whose trailer cannot be read either are
neither condemned nor swept while the damage lasts (``packs_unreadable``). When every pack could be read,
the consolidation (step 6) lists them all and deletes the damaged objects, if no writer is live: that is
the index's repair.

Every step is ordered so a crash (SIGKILL) at any point leaves only extra objects that the next GC
removes: new packs before their index, index before condemnation, deletions last.
"""

from __future__ import annotations

import json
import os
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Callable

from ..errors import Conflict, Damaged
from .digestset import DigestSet
from .diskindex import DiskChunkIndex, IndexView
from .locations import ENTRY_SIZE, Location, new_index_name, pack_entries, unpack_entries
from .locks import (
    GC_LOCK_NAME,
    LockInfo,
    RepoLock,
    is_stale,
    list_locks,
)
from .packs import MAX_PACK_RECORDS, PackWriter, pack_key
from .store import CONDEMNED_PREFIX, DATA_DIR, INDEX_DIR, ChunkStore
from .unverified import UNATTRIBUTED, marker_objects, note_unverified, prune_unverified

REPACK_DEAD_FRACTION = 0.25
SMALL_PACK_FRACTION = 0.25  # packs under this fraction of pack_size are merged ...
SMALL_PACK_MIN_COUNT = 8  # ... when at least this many exist
RECORDS_REMEMBERED = 1 << 16  # unverified records GC checked (Intact): the last answers kept (~0.1 KB each)
CONSOLIDATED_RECORDS = 1 << 15  # records per index object GC writes (1.3 MB, as a backup's): what a sync decodes at once

Progress = Callable[[int, int], None]


@dataclass
class GCResult:
    packs_deleted: int = 0
    bytes_freed: int = 0  # bytes of pack objects deleted
    repack_bytes_written: int = 0  # bytes of new packs written by repacking
    chunks_removed: int = 0  # index entries dropped with deleted packs
    packs_repacked: int = 0
    packs_condemned_pending: int = 0  # condemned, waiting for running backups to finish
    orphan_packs: int = 0  # packs no index mentioned (crashed or running backups)
    packs_resurrected: int = 0
    stale_locks_removed: int = 0
    abandoned_writes_removed: int = 0  # temporaries of writers that died mid-write
    orphan_refs_segments_removed: int = 0  # refs segment objects without their manifest
    index_objects_replaced: int = 0
    damaged_chunks: list[str] = field(default_factory=list)
    index_objects_damaged: list[str] = field(default_factory=list)  # unreadable index objects met
    packs_recovered: int = 0  # packs known only from their trailers (a damaged index object listed them)
    packs_unreadable: list[str] = field(default_factory=list)  # ... and those whose trailer failed too: kept
    packs_unlisted_kept: int = 0  # no index object lists them, but they hold chunks backups need: kept
    packs_relisted: int = 0  # ... and listed in the index again (no writer was live)
    unverified_markers_replaced: int = 0  # objects naming agents' unverified packs, folded (unverified.py)
    writers_live: int = 0  # writer locks not stale at GC's last look (running writers, or dead ones' locks)
    duration: float = 0.0

    @property
    def net_bytes_freed(self) -> int:
        return self.bytes_freed - self.repack_bytes_written

    def to_dict(self) -> dict:
        d = asdict(self)
        d["net_bytes_freed"] = self.net_bytes_freed
        return d


def _acquire_gc_lock(cs: ChunkStore, result: GCResult) -> RepoLock:
    lock = RepoLock(cs.store, cs.prefix, "gc", cs.lock_timing, name=GC_LOCK_NAME)
    if lock.acquire(exclusive=True):
        return lock
    info = cs.store.stat(lock.key)
    if info is not None:
        probe = cs.k(f"gc/probe-{os.urandom(6).hex()}")
        cs.store.put(probe, b"")
        now_info = cs.store.stat(probe)
        cs.store.delete(probe)
        now = now_info.mtime if now_info else time.time()
        if not is_stale(info.mtime, now, cs.lock_timing):
            raise Conflict("another garbage collection is running on this repository")
        again = cs.store.stat(lock.key)
        if again is not None and again.mtime == info.mtime:
            cs.store.delete(lock.key)  # a GC that died (SIGKILL, power loss) left it
            result.stale_locks_removed += 1
    if not lock.acquire(exclusive=True):
        raise Conflict("another garbage collection is running on this repository")
    return lock


def _pack_listing(cs: ChunkStore) -> dict[str, int]:
    out = {}
    for key, size in cs.store.list(cs.k(DATA_DIR)):
        out[key.rsplit("/", 1)[-1]] = size
    return out


def _all_seen(live: list[LockInfo], gen: str) -> bool:
    return all(lk.seen is not None and gen in lk.seen for lk in live)


def _live_writers(cs: ChunkStore, gc_lock: RepoLock, result: GCResult) -> list[LockInfo]:
    now = gc_lock.store_now()
    live = []
    for lk in list_locks(cs.store, cs.prefix):
        if lk.key == gc_lock.key:
            continue
        if is_stale(lk.mtime, now, cs.lock_timing):
            cs.store.delete(lk.key)
            result.stale_locks_removed += 1
        else:
            live.append(lk)
    result.writers_live = len(live)
    return live


def _sweep(cs: ChunkStore, packs: set[str], *, idx: IndexView, present: dict[str, int], refs: DigestSet,
           result: GCResult, intact: Intact | None = None) -> set[str]:
    """Delete the packs of a condemned list unless they hold a referenced chunk with no other copy, or
    what they hold cannot be told (no readable index object lists them and their trailer is unreadable,
    while an index object is damaged). Returns the packs deleted."""
    deleted: set[str] = set()
    unknowable = set(idx.unreadable_packs)
    for p in sorted(packs):
        if p not in present:
            deleted.add(p)  # already gone (an earlier, interrupted sweep)
            continue
        needed = p in unknowable or _holds_needed(cs, p, idx.entries(p), idx, refs, present, packs, intact)
        if not needed and not idx.has_pack(p):  # listed nowhere: its trailer says what it holds
            needed = bool(_unlisted_needed(cs, p, present[p], idx, refs, present, packs))
        if needed:
            result.packs_resurrected += 1
            continue
        cs.store.delete(cs.k(pack_key(p)))
        result.packs_deleted += 1
        result.bytes_freed += present[p]
        result.chunks_removed += idx.record_count(p)
        deleted.add(p)
    return deleted


def _holds_needed(cs: ChunkStore, pack_id: str, entries, idx: IndexView, refs: DigestSet, present: dict[str, int],
                  gone: set[str], intact: Intact | None = None) -> bool:
    """Whether any of a pack's ``entries`` is a referenced chunk with no indexed copy outside ``gone``
    that may stand in for it: a checked copy, or one in an agent's unverified pack (unverified.py) that
    passes its check now (it may be forged). A record of an unverified pack is needed only if it passes
    its check itself (a forged one a repack left behind is not kept for ever)."""
    intact = intact or Intact(cs)
    unverified = idx.unverified(pack_id)
    for d, off, ln in entries:
        if d not in refs:
            continue
        others = [loc for loc in idx.locations(d) if loc.pack_id not in gone and loc.pack_id in present]
        if any(not idx.unverified(loc.pack_id) for loc in others) or any(intact(loc, d) for loc in others):
            continue  # a copy that holds the chunk stays
        if not unverified or intact(Location(pack_id, off, ln), d):
            return True
    return False


class Intact:
    """``intact(location, digest)``: whether a record passes its check, read once (the last answers
    remembered: each pack holding a copy of a chunk asks about the same copies)."""

    def __init__(self, cs: ChunkStore):
        self.cs = cs
        self.codec = cs.codec.clone()
        self._seen: OrderedDict[tuple[str, int], bool] = OrderedDict()

    def __call__(self, loc: Location, digest: bytes) -> bool:
        key = (loc.pack_id, loc.offset)
        ok = self._seen.get(key)
        if ok is not None:
            self._seen.move_to_end(key)
            return ok
        try:
            rec = self.cs.read_record(loc)
            ok = len(rec) == loc.length and self.codec.decode(digest, rec) is not None
        except (KeyError, Damaged):
            ok = False
        self._seen[key] = ok
        if len(self._seen) > RECORDS_REMEMBERED:
            self._seen.popitem(last=False)
        return ok


def _unlisted_needed(cs: ChunkStore, pack_id: str, size: int, idx: IndexView, refs: DigestSet,
                     present: dict[str, int], gone: set[str]) -> bytes | bool | None:
    """For a pack no index object lists: its listing (from its trailer) if it holds a chunk that backups
    reference and no listed pack outside ``gone`` holds, which happens when the index object that listed
    it was deleted (nothing else tells a deleted object from one GC replaced); False if it holds none
    (a crashed writer's leftovers, a running writer's packs: GC's two phases cover those); None if its
    trailer cannot be read: without an index object or a trailer its records cannot be found anyway, so
    it is condemned like any orphan (while an index object is *damaged*, such packs are kept instead:
    ``IndexView.unreadable_packs``)."""
    try:
        listing = cs.pack_listing(pack_id, size)
    except KeyError:
        return False  # gone meanwhile
    if listing is None:
        return None
    return listing if _holds_needed(cs, pack_id, unpack_entries(listing), idx, refs, present, gone) else False


def _keep_unlisted(cs: ChunkStore, condemn: set[str], idx: IndexView, refs: DigestSet, present: dict[str, int],
                   gone: set[str], result: GCResult) -> dict[str, bytes]:
    """Take out of ``condemn`` the packs no index object lists that backups still need; returns their
    listings, to list them again. Orphans are few (crashed or running writers'
    packs), so reading their trailers (two small range reads each) costs little."""
    relist: dict[str, bytes] = {}
    for p in sorted(p for p in condemn if not idx.has_pack(p)):
        listing = _unlisted_needed(cs, p, present[p], idx, refs, present, gone)
        if not listing:
            continue  # nothing a backup needs, or what it holds cannot be told: condemned as before
        condemn.discard(p)
        result.packs_unlisted_kept += 1
        relist[p] = listing
    return relist


def _relist(cs: ChunkStore, gc_lock: RepoLock, relist: dict[str, bytes], result: GCResult) -> None:
    """List the kept unlisted packs in the index again (the repair of a deleted index object), only when
    no writer is live: a running writer's packs are not indexed yet, and one that aborts deletes them."""
    if not relist or _live_writers(cs, gc_lock, result):
        return
    items = sorted(relist.items())
    _mark_unattributed(cs, [p for p, _ in items])
    batch: list[tuple[str, bytes]] = []
    size = 0
    for p, listing in items:
        batch.append((p, listing))
        size += len(listing)
        if size >= CONSOLIDATED_RECORDS * ENTRY_SIZE:
            cs.write_index(batch)
            batch, size = [], 0
    if batch:
        cs.write_index(batch)
    result.packs_relisted = len(items)


def _mark_unattributed(cs: ChunkStore, packs: list[str]) -> None:
    """Record ``packs``, about to be listed from their own trailers (a lost or damaged index object's), as
    unverified ones of no known writer (before they are listed): whoever wrote one may have been an
    agent whose worker died before marking it, so nothing relies on its records unchecked."""
    marked = cs.unverified_packs()
    note_unverified(cs, UNATTRIBUTED, [p for p in packs if p not in marked])


def _load_all(cs: ChunkStore, excluded: set[str], disk: DiskChunkIndex) -> tuple[list[str], IndexView, dict[str, int]]:
    """Index (from the objects listed now), then the pack listing (packs are written before their index,
    so an indexed pack missing from the listing was deleted). The view knows the agents' unverified packs
    (read after the index: every pack it lists had its marker written before it), so that GC keeps the
    copies readers rely on (:func:`_live_test`)."""
    names = cs.list_index_objects()
    idx = cs.load_index(excluded, disk)
    # (and the packs known only from their trailers: their marker may be what is missing)
    idx = IndexView(idx.snap, excluded, set(cs.unverified_packs()) | set(idx.recovered_packs))
    present = _pack_listing(cs)
    return names, idx, present


def run_gc(cs: ChunkStore, progress: Progress | None = None) -> GCResult:
    t0 = time.monotonic()
    result = GCResult()
    gc_lock = _acquire_gc_lock(cs, result)
    gc_lock.start_refresh()
    try:
        _gc(cs, gc_lock, result, progress)
    finally:
        gc_lock.release()
    cs._reader_index = None
    result.duration = time.monotonic() - t0
    return result


def _gc(cs: ChunkStore, gc_lock: RepoLock, result: GCResult, progress: Progress | None) -> None:
    report = progress or (lambda a, b: None)
    report(0, 6)
    # 1. who is writing (and what dead writers left half-written: never a finished object)
    live = _live_writers(cs, gc_lock, result)
    result.abandoned_writes_removed = cs.store.remove_abandoned_writes(cs.prefix, cs.lock_timing.stale_after)
    gens = cs.condemned_lists()
    pending_all = {p for ps in gens.values() for p in ps}
    markers = marker_objects(cs)  # (before the packs are listed: see prune_unverified)
    # 2. index (GC's own, from the store: diskindex.py), packs, refs (on disk past the memory bound)
    disk = cs.private_index()
    _names, idx, present = _load_all(cs, pending_all, disk)
    result.index_objects_damaged = sorted(idx.damaged_objects)
    result.packs_recovered = len(idx.recovered_packs)
    result.packs_unreadable = idx.unreadable_packs
    refs = cs.referenced()
    try:
        _gc_with_refs(cs, gc_lock, result, report, live, gens, disk, idx, present, refs)
    finally:
        refs.close()
    # the packs a marker names that are gone now (swept; a repacked record was checked as it was copied)
    result.unverified_markers_replaced = prune_unverified(cs, markers, lambda p: p in present)


def _gc_with_refs(cs: ChunkStore, gc_lock: RepoLock, result: GCResult, report: Progress, live: list[LockInfo],
                  gens: dict[str, list[str]], disk: DiskChunkIndex, idx: IndexView, present: dict[str, int],
                  refs: DigestSet) -> None:
    report(1, 6)
    intact = Intact(cs)  # (agents' unverified records checked here: one answer for all who ask)
    # 3. sweep older condemned lists every live writer has seen
    swept_gens: list[str] = []
    deleted: set[str] = set()
    for gen, packs in sorted(gens.items()):
        if _all_seen(live, gen):
            gone = _sweep(cs, set(packs) - deleted, idx=idx, present=present, refs=refs, result=result,
                          intact=intact)
            deleted |= gone
            for p in gone:  # a copy deleted here is no "other copy" for the next list's sweep
                present.pop(p, None)
            swept_gens.append(gen)
    still_pending = {p for g, ps in gens.items() if g not in swept_gens for p in ps}
    report(2, 6)
    # 4. plan, pack by pack (its records read from the on-disk index, never all at once)
    live_at = _live_test(idx, refs, present, deleted, intact)
    condemn, repack = _plan(cs, idx, present, deleted | still_pending | set(idx.unreadable_packs), live_at, result)
    relist = _keep_unlisted(cs, condemn, idx, refs, present, deleted, result)
    if repack:
        _repack(cs, repack, idx, live_at, result)
        condemn |= set(repack)
        result.packs_repacked = len(repack)
    report(3, 6)
    # 5. condemn; sweep now if no live writer predates the list
    new_gen = None
    if condemn:
        new_gen = new_index_name()
        cs.store.put(cs.k(CONDEMNED_PREFIX + new_gen),
                     json.dumps({"gen": new_gen, "packs": sorted(condemn), "created": time.time()}).encode())
        live = _live_writers(cs, gc_lock, result)
        if _all_seen(live, new_gen):
            _names2, idx2, present2 = _load_all(cs, still_pending | condemn, disk)
            refs2 = cs.referenced()
            try:
                deleted |= _sweep(cs, condemn, idx=idx2, present=present2, refs=refs2, result=result,
                                  intact=intact)
            finally:
                refs2.close()
            swept_gens.append(new_gen)
        else:
            result.packs_condemned_pending += len(condemn)
    result.packs_condemned_pending += len(still_pending)
    report(4, 6)
    # 6. list the unlisted packs backups need again, consolidate the index, then forget swept lists
    _relist(cs, gc_lock, relist, result)
    _consolidate_index(cs, gc_lock, result, disk)
    for g in swept_gens:
        cs.store.delete(cs.k(CONDEMNED_PREFIX + g))
    _remove_orphan_refs_segments(cs, gc_lock, result)
    report(6, 6)


def _plan(cs: ChunkStore, idx: IndexView, present: dict[str, int], skip: set[str], live_at: LiveTest,
          result: GCResult) -> tuple[set[str], list[str]]:
    """The packs to condemn (nothing live, or not indexed) and to repack (mostly dead, or small and
    numerous), among those ``present`` and not in ``skip`` (swept or pending)."""
    condemn: set[str] = set()
    repack: list[str] = []
    small: list[str] = []
    for p, size in present.items():
        if p in skip:
            continue
        if not idx.has_pack(p):
            condemn.add(p)
            result.orphan_packs += 1
            continue
        entries = idx.entries(p)
        live_bytes = sum(ln for d, off, ln in entries if live_at(p, d, off))
        dead_bytes = sum(ln for _d, _off, ln in entries) - live_bytes  # trailer overhead is not "dead"
        if live_bytes == 0:
            condemn.add(p)
        elif dead_bytes / size >= REPACK_DEAD_FRACTION:
            repack.append(p)
        elif size < cs.pack_size * SMALL_PACK_FRACTION and len(entries) < MAX_PACK_RECORDS:
            small.append(p)  # (a pack cut at the record cap is full: merging would cut it again)
    if len(small) >= SMALL_PACK_MIN_COUNT:
        repack += small
    return condemn, repack


def _remove_orphan_refs_segments(cs: ChunkStore, gc_lock: RepoLock, result: GCResult) -> None:
    """Delete the refs segment objects (manifests.py) whose manifest does not exist: what a writer
    killed between its segments and its manifest, or a deletion cut short, left. Never a running
    writer's: the segments are listed *before* the locks, and a writer writes its lock before its
    segments and publishes its manifest before releasing its lock, so a segment listed here whose
    writer holds no live lock afterwards has its manifest published or never will. While any writer
    is live nothing is removed (a lock does not say which backup it writes); a later GC does it."""
    by_name = cs.refs_segment_names()
    if not by_name or _live_writers(cs, gc_lock, result):
        return
    manifests = set(cs.list_manifests())  # (after the locks)
    for name, keys in sorted(by_name.items()):
        if name in manifests:
            continue
        for key in keys:
            cs.store.delete(key)
        result.orphan_refs_segments_removed += len(keys)


LiveTest = Callable[[str, bytes, int], bool]


def _live_test(idx: IndexView, refs: DigestSet, present: dict[str, int], deleted: set[str],
               intact: Intact) -> LiveTest:
    """``live_at(pack, digest, offset)``: whether that record is the copy GC keeps of a referenced chunk
    (its preferred copy among those that still exist), asked record by record instead of a dict of
    every referenced chunk's copy.

    A chunk with no checked copy, only copies in agents' unverified packs (any of which may be forged:
    unverified.py), keeps the first of them that passes its check (``intact``): the copy another writer
    checked and deduplicated against is not necessarily the one readers prefer, and every intact copy
    holds the same chunk. (Read only for a chunk stored more than once: an agent's full backup, mostly.)
    If none is intact, all are kept."""

    def live_at(pack_id: str, digest: bytes, offset: int) -> bool:
        if digest not in refs:
            return False
        copies = [loc for loc in idx.locations(digest)  # preferred first; only copies that still exist
                  if loc.pack_id in present and loc.pack_id not in deleted]
        if not copies:
            return False
        if not idx.unverified(copies[0].pack_id) or len(copies) == 1:  # (checked copies come first)
            return copies[0].pack_id == pack_id and copies[0].offset == offset
        keep = next((loc for loc in copies if intact(loc, digest)), None)
        if keep is None:
            return idx.unverified(pack_id)
        return keep.pack_id == pack_id and keep.offset == offset

    return live_at


def _repack(cs: ChunkStore, packs: list[str], idx: IndexView, live_at: LiveTest, result: GCResult) -> None:
    """Copy the live records of ``packs`` into new packs, indexed as they go (an index object per
    ``CONSOLIDATED_RECORDS`` records, after its packs are durable), not all at the end."""
    writer = PackWriter(cs.sealer, cs.pack_size)
    written: list[tuple[str, bytes]] = []  # new packs not indexed yet, their records packed
    codec = cs.codec.clone()

    def index_written() -> None:
        if written:
            cs.store.flush()
            cs.write_index(written)
            written.clear()

    def emit(fp) -> None:
        if fp is None:
            return
        cs.store.put(cs.k(pack_key(fp.pack_id)), fp.data, sync=True)
        written.append((fp.pack_id, pack_entries((e.digest, e.offset, e.length) for e in fp.entries)))
        result.repack_bytes_written += len(fp.data)
        if sum(len(e) for _p, e in written) >= CONSOLIDATED_RECORDS * ENTRY_SIZE:
            index_written()

    for p in packs:
        live = [(d, off, ln) for d, off, ln in idx.entries(p) if live_at(p, d, off)]
        if not live:
            continue
        try:
            blob = cs.store.get(cs.k(pack_key(p)))
        except KeyError:
            continue
        for d, off, ln in live:
            rec = blob[off:off + ln]
            try:
                codec.decode(d, rec)  # never copy a damaged record over an intact-looking one
            except Damaged:
                result.damaged_chunks.append(d.hex())
                continue
            emit(writer.add(d, rec))
    emit(writer.finish())
    index_written()


def _consolidate_index(cs: ChunkStore, gc_lock: RepoLock, result: GCResult, disk: DiskChunkIndex) -> None:
    """Rewrite the index as objects of at most ``CONSOLIDATED_RECORDS`` records describing exactly the
    packs that exist (a reader decodes one object at a time: its size bounds the memory a sync needs),
    then delete the objects replaced. Streams the records pack by pack from the on-disk index.

    Damaged objects are replaced too (the index's repair) once every pack they could have listed is
    known from its trailer, and only when no writer is live: the packs recovered from trailers include
    a running writer's packs it has not indexed yet, which it deletes itself if it aborts; listed in the
    index, another writer could deduplicate against them first. Otherwise the damaged objects stay (and
    verify keeps naming them), and the recovered packs stay out of the objects written here."""
    listing = {key[len(cs.k("")):]: size for key, size in cs.store.list(cs.k(INDEX_DIR))}
    names = sorted(listing)
    if not names:
        return
    idx = cs.load_index((), disk)
    damaged = idx.damaged_objects
    candidates = idx.pack_ids
    if damaged and (idx.unreadable_packs or _live_writers(cs, gc_lock, result)):
        names = [n for n in names if n not in damaged]
        recovered = set(idx.recovered_packs)
        candidates = [p for p in candidates if p not in recovered]
    present = _pack_listing(cs)
    kept = [p for p in candidates if p in present]
    if damaged and set(names) & set(damaged):  # (the repair: the recovered packs are listed from now on)
        _mark_unattributed(cs, [p for p in idx.recovered_packs if p in present])
    records = sum(idx.record_count(p) for p in kept)
    needed = max(1, -(-records // CONSOLIDATED_RECORDS))
    too_big = any(size > CONSOLIDATED_RECORDS * ENTRY_SIZE * 3 // 2 for size in listing.values())
    if len(kept) == len(candidates) and len(names) <= needed and not too_big and not set(names) & set(damaged):
        return  # already few objects describing exactly the packs that exist
    batch: list[tuple[str, bytes]] = []
    in_batch = 0
    for p in kept:
        batch.append((p, idx.packed_entries(p)))
        in_batch += idx.record_count(p)
        if in_batch >= CONSOLIDATED_RECORDS:
            cs.write_index(batch)
            batch, in_batch = [], 0
    if batch:
        cs.write_index(batch)
    for n in names:
        cs.store.delete(cs.k(n))
    result.index_objects_replaced += len(names)
