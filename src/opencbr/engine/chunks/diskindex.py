"""A vault's chunk index on local disk: digest -> location(s) in memory that does not grow with the vault.

The repository index lives in the store as index objects (locations.py); loading all of them into a
dict cost ~130 bytes of RSS per chunk of the vault for every reader, verify and GC. This keeps them in
a local cache directory instead, one per vault, synchronised with the store by index-object *name*: a
sync lists ``index/``, reads only the objects it has not seen, and drops the packs that only objects now
gone listed (GC's consolidation rewrites them under new names; the packs they still list are known and
not added again). The store is the truth: every sync starts from its object list, a cache written by a
process that crashed mid-update (or before a reboot) is rebuilt, and chunks are verified by digest when
read, so a wrong location costs a fallback, never wrong bytes.

Files in the directory (``lock`` serialises updates between processes; readers take no lock)::

    meta.json           packs (id, record offset, record count, alive), objects -> pack numbers,
                        the damaged objects (name -> why) and the packs no trailer could be read of,
                        table geometry, generation, a dirty flag and the boot id
    table-<gen>         the page hash table: pages of 4 KiB, slot 0 the page's fill count, slots 1-84
                        ``digest, pack number, offset, length`` (48 bytes); a digest's home page is its
                        first 8 bytes modulo the page count, a full page overflows to the next one; every
                        copy of a digest is a slot of its own, all in the probe run from its home page
    records-<gen>       each pack's records as in its index object (40 bytes each), appended: what GC
                        walks pack by pack

**A damaged object** (it fails its seal or checksum, or is truncated) does not fail the sync: it is
recorded in ``damaged`` and read again at every sync (an operator may put it back), and the packs no
readable object lists are recovered from their own trailers (``recover``, given by the store: every pack
lists its records in a sealed trailer, packs.py), once per damaged object, under its name. Those packs
serve readers; :meth:`IndexView.has` ignores them, so a writer stores their chunks again rather than
depend on a listing the store's index does not hold. Packs whose trailer cannot be read either are kept
in ``unreadable``: GC must not delete them (gc.py).

Updates happen in place under the lock (a reader in another process ignores slots of packs it does not
know: pack numbers only grow within a generation); growing the table or a rebuild writes a new
generation and renames nothing a reader has open (its old files stay readable until it refreshes).
In memory: the pack table (one entry per pack, ~20 bytes per MiB of stored data), the object list, and
per snapshot the table pages read last (``cache_pages``, 4 MiB by default).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import struct
import tempfile
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Iterable, Iterator

from ..errors import Damaged
from .crypto import DIGEST_SIZE
from .locations import ENTRY_SIZE, Location

PAGE = 4096
SLOT = struct.Struct(f"<{DIGEST_SIZE}sIII4x")  # digest, pack number, offset, length
SLOT_SIZE = SLOT.size  # 48
SLOTS = PAGE // SLOT_SIZE - 1  # 84 (slot 0 is the page's header)
_COUNT = struct.Struct("<I")
_ENTRY = struct.Struct(f"<{DIGEST_SIZE}sII")
_FORMAT = 1
_FIRST_PAGES = 256  # 1 MiB
_SCAN_PAGES = 256  # pages read at a time by a sequential pass (1 MiB)
_REBUILD_MIN_DEAD = 1 << 16  # dead slots before a compaction is considered
DEFAULT_CACHE_PAGES = 1024  # pages of the table a snapshot keeps in memory (4 MiB)


def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


class _Files:
    """The open table and records files of one generation (closed when no snapshot uses them)."""

    def __init__(self, directory: str, gen: str, create: bool):
        flags = os.O_RDWR | (os.O_CREAT if create else 0)
        self.table = os.open(os.path.join(directory, f"table-{gen}"), flags, 0o600)
        # read a page at a time, never ahead: readahead put the table in large page-cache folios, and a
        # 4 KiB write into one costs the kernel a walk over every block of the folio (docs/scale.md)
        os.posix_fadvise(self.table, 0, 0, os.POSIX_FADV_RANDOM)
        try:
            self.records = os.open(os.path.join(directory, f"records-{gen}"), flags, 0o600)
        except BaseException:
            os.close(self.table)
            raise

    def __del__(self) -> None:
        for fd in (getattr(self, "table", -1), getattr(self, "records", -1)):
            if fd >= 0:
                os.close(fd)


@dataclass
class _State:
    """What meta.json holds, in memory: packs as ``[id, record offset, record count, alive]``."""

    gen: str
    pages: int
    slots: int = 0
    dead_slots: int = 0
    records_end: int = 0
    packs: list = None  # type: ignore[assignment]
    objects: dict = None  # type: ignore[assignment]
    damaged: dict = None  # type: ignore[assignment]  # object name -> why it could not be read
    unreadable: list = None  # type: ignore[assignment]  # packs listed nowhere readable, trailer unreadable

    def __post_init__(self) -> None:
        self.packs = self.packs if self.packs is not None else []
        self.objects = self.objects if self.objects is not None else {}
        self.damaged = self.damaged if self.damaged is not None else {}
        self.unreadable = self.unreadable if self.unreadable is not None else []

    def alive_numbers(self) -> dict[str, int]:
        return {p[0]: n for n, p in enumerate(self.packs) if p[3]}


class _PageCache:
    """The table pages read last, for the snapshots of one version of the table (its generation and slot
    count): pages only change when slots are added, which makes a new version. A page another process
    changes meanwhile only gains slots of packs those snapshots do not know, which they ignore."""

    def __init__(self, version: tuple, limit: int):
        self.version = version
        self.limit = limit
        self._pages: OrderedDict[int, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, page_no: int) -> bytes | None:
        with self._lock:
            page = self._pages.get(page_no)
            if page is not None:
                self._pages.move_to_end(page_no)
            return page

    def put(self, page_no: int, page: bytes) -> None:
        with self._lock:
            self._pages[page_no] = page
            if len(self._pages) > self.limit:
                self._pages.popitem(last=False)

    def fill(self, table_fd: int, pages: int) -> None:
        """Every page of a table that fits, read in one call. Read lazily, each look-up of a page not
        yet seen was a ``pread`` on the caller's thread: with the index cold (a service's vault index
        after a restart or under memory pressure) a random read each, and even warm a release of the
        GIL that the caller -- an incremental tree backup's walking thread, checking every reused
        file's chunks -- then waited to get back behind the readers (realtree changed re-backup
        through ``cbr``: ~a fifth of the walking thread's samples, a 1 MiB table of 256 pages)."""
        if pages > self.limit:
            return
        data = os.pread(table_fd, pages * PAGE, 0)
        with self._lock:
            for n in range(min(pages, len(data) // PAGE)):
                self._pages[n] = data[n * PAGE:(n + 1) * PAGE]


class Snapshot:
    """The index as of one sync: lock-free look-ups (``pread`` of a page), consistent for its packs."""

    def __init__(self, files: _Files, state: _State, cache: _PageCache | None = None):
        self.files = files
        self.pages = state.pages
        self.packs = [tuple(p) for p in state.packs]
        self.pack_no = {p[0]: n for n, p in enumerate(self.packs) if p[3]}
        self.live_records = sum(p[2] for p in self.packs if p[3])
        self.objects = {name: tuple(pnos) for name, pnos in state.objects.items()}  # -> pack numbers listed
        self.damaged = dict(state.damaged)
        self.unreadable = tuple(state.unreadable)
        # the packs known only from their trailers (listed under a damaged object's name)
        self.recovered_no = {pno for name in self.damaged for pno in self.objects.get(name, ())}
        for name, pnos in self.objects.items():
            if name not in self.damaged:
                self.recovered_no.difference_update(pnos)
        self._cache = cache

    def _page(self, page_no: int) -> bytes:
        page = self._cache.get(page_no) if self._cache is not None else None
        if page is None:
            page = os.pread(self.files.table, PAGE, page_no * PAGE)
            if self._cache is not None:
                self._cache.put(page_no, page)
        return page

    def matches(self, digest: bytes) -> list[tuple[int, int, int]]:
        """``(pack number, offset, length)`` of every copy in a pack alive in this snapshot."""
        out = []
        mask = self.pages - 1
        first = page_no = int.from_bytes(digest[:8], "little") & mask
        known = len(self.packs)
        while True:
            page = self._page(page_no)
            used = _COUNT.unpack_from(page)[0] if len(page) == PAGE else 0
            end = (min(used, SLOTS) + 1) * SLOT_SIZE  # (slots 1..used are filled: search those only)
            at = page.find(digest, SLOT_SIZE, end)
            while at > 0:
                if at % SLOT_SIZE == 0:
                    _d, pno, off, ln = SLOT.unpack_from(page, at)
                    if pno < known and self.packs[pno][3] and (pno, off, ln) not in out:
                        out.append((pno, off, ln))
                at = page.find(digest, at + 1, end)
            if used < SLOTS:
                return out
            page_no = (page_no + 1) & mask
            if page_no == first:
                return out

    def records(self, pack_id: str) -> bytes:
        pno = self.pack_no.get(pack_id)
        if pno is None:
            return b""
        _pid, off, n, _alive = self.packs[pno]
        return os.pread(self.files.records, n * ENTRY_SIZE, off)

    def slots(self) -> Iterator[bytes]:
        """Every slot of the table (a sequential pass), alive or not."""
        for first in range(0, self.pages, _SCAN_PAGES):
            block = os.pread(self.files.table, _SCAN_PAGES * PAGE, first * PAGE)
            for p in range(0, len(block), PAGE):
                n = _COUNT.unpack_from(block, p)[0]
                for i in range(1, min(n, SLOTS) + 1):
                    yield block[p + i * SLOT_SIZE:p + (i + 1) * SLOT_SIZE]


class IndexView:
    """The :class:`~opencbr.engine.chunks.locations.ChunkIndex` interface over a :class:`Snapshot`, with
    the packs GC condemned (``excluded``) and those known only from their trailers (a damaged index
    object listed them) kept only as fallbacks: :meth:`has` ignores them. Copies in ``unverified`` packs
    (unverified.py) come after the others, oldest first: a newer unverified copy never shadows the one a
    writer checked before it deduplicated against it."""

    def __init__(self, snap: Snapshot, excluded: Iterable[str] = (), unverified: Iterable[str] = ()):
        self.snap = snap
        self.excluded = set(excluded)
        self._excluded_no = {snap.pack_no[p] for p in self.excluded if p in snap.pack_no} | snap.recovered_no
        self.unverified_ids = set(unverified)
        # ``unverified`` as given when it maps each pack to its writer (ChunkStore.trusted_pack asks the
        # view it looked the pack up in, never markers read for another view)
        self.writers: dict[str, str] = dict(unverified) if isinstance(unverified, dict) else {}
        self._unverified_no = {snap.pack_no[p] for p in self.unverified_ids if p in snap.pack_no}

    @property
    def damaged_objects(self) -> dict[str, str]:
        """The index objects the last sync could not read (name -> why)."""
        return dict(self.snap.damaged)

    @property
    def recovered_packs(self) -> list[str]:
        """Packs known only from their trailers (no readable index object lists them)."""
        return [self.snap.packs[n][0] for n in sorted(self.snap.recovered_no)]

    @property
    def unreadable_packs(self) -> list[str]:
        """Packs no readable index object lists whose trailer could not be read either."""
        return list(self.snap.unreadable)

    @property
    def pack_ids(self) -> list[str]:
        return list(self.snap.pack_no)

    def has_pack(self, pack_id: str) -> bool:
        return pack_id in self.snap.pack_no

    def recovered(self, pack_id: str) -> bool:
        """Whether ``pack_id`` is known only from its trailer (no readable index object lists it)."""
        pno = self.snap.pack_no.get(pack_id)
        return pno is not None and pno in self.snap.recovered_no

    def unverified(self, pack_id: str) -> bool:
        """Whether ``pack_id`` is one of the ``unverified`` packs this view was given."""
        return pack_id in self.unverified_ids

    def entries(self, pack_id: str) -> list[tuple[bytes, int, int]]:
        return list(_ENTRY.iter_unpack(self.snap.records(pack_id)))

    def packed_entries(self, pack_id: str) -> bytes:
        """The records of one pack as in its index object (40 bytes each; empty if unknown)."""
        return self.snap.records(pack_id)

    def objects_listing(self, pack_ids: Iterable[str]) -> list[str]:
        """The index objects that list any of ``pack_ids`` (those a read of their chunks depends on)."""
        pnos = {self.snap.pack_no[p] for p in pack_ids if p in self.snap.pack_no}
        return sorted(name for name, listed in self.snap.objects.items() if not pnos.isdisjoint(listed))

    def record_count(self, pack_id: str) -> int:
        pno = self.snap.pack_no.get(pack_id)
        return 0 if pno is None else self.snap.packs[pno][2]

    def _ordered(self, digest: bytes) -> list[tuple[int, int, int]]:
        """Copies, preferred first: outside condemned packs before inside, verified before unverified;
        newest (highest pack number, i.e. added last) first, but oldest first among unverified ones."""
        found = self.snap.matches(digest)
        unverified = self._unverified_no
        found.sort(key=lambda m: (m[0] in self._excluded_no, m[0] in unverified,
                                  m[0] if m[0] in unverified else -m[0]))
        return found

    def _location(self, m: tuple[int, int, int]) -> Location:
        return Location(self.snap.packs[m[0]][0], m[1], m[2])

    def has(self, digest: bytes) -> bool:
        return any(m[0] not in self._excluded_no for m in self.snap.matches(digest))

    def __contains__(self, digest: bytes) -> bool:
        return bool(self.snap.matches(digest))

    def __len__(self) -> int:
        """Records outside condemned packs (a chunk stored twice counts twice, unlike the dict)."""
        return self.snap.live_records - sum(self.snap.packs[n][2] for n in self._excluded_no)

    def lookup(self, digest: bytes) -> Location | None:
        found = self._ordered(digest)
        return self._location(found[0]) if found else None

    def locations(self, digest: bytes) -> list[Location]:
        return [self._location(m) for m in self._ordered(digest)]

    def stored_size(self, digest: bytes) -> int | None:
        loc = self.lookup(digest)
        return None if loc is None else loc.length

    def digests(self) -> Iterator[bytes]:
        """Each digest once (at its preferred copy's slot)."""
        for slot in self.snap.slots():
            d, pno, off, ln = SLOT.unpack(slot)
            if pno < len(self.snap.packs) and self.snap.packs[pno][3]:
                first = self._ordered(d)
                if first and first[0] == (pno, off, ln):
                    yield d


class KnownDigests:
    """What a writer may deduplicate against: ``in`` is :meth:`IndexView.has`."""

    def __init__(self, view: IndexView):
        self.view = view

    def __contains__(self, digest: bytes) -> bool:
        return self.view.has(digest)

    def close(self) -> None:
        self.view = None  # type: ignore[assignment]


PRIVATE_PREFIX = "opencbr-chunk-index-"


def _private_directory() -> tempfile.TemporaryDirectory:
    """A private index's directory, removed with its object, its ``owner`` file share-locked for as long
    as the directory is in use: one whose owner lock can be taken exclusively was left by a process
    killed before it could remove it (SIGKILL, OOM), and is removed here first. A lock, not a pid: it
    holds across pid namespaces sharing /tmp and against reused pids. The lock is taken on a file of
    another name, renamed to ``owner`` once held, so a directory is never seen unlocked while created."""
    remove_abandoned_private_directories(tempfile.gettempdir())
    tmp = tempfile.TemporaryDirectory(prefix=PRIVATE_PREFIX)
    fd = os.open(os.path.join(tmp.name, "owner.new"), os.O_RDWR | os.O_CREAT, 0o600)
    fcntl.flock(fd, fcntl.LOCK_SH)
    os.rename(os.path.join(tmp.name, "owner.new"), os.path.join(tmp.name, "owner"))
    weakref.finalize(tmp, os.close, fd)
    return tmp


def remove_abandoned_private_directories(parent: str) -> int:
    """Remove the private index directories under ``parent`` that no live process holds; returns how many."""
    removed = 0
    try:
        names = [e.name for e in os.scandir(parent) if e.name.startswith(PRIVATE_PREFIX) and e.is_dir()]
    except OSError:
        return 0
    for name in names:
        path = os.path.join(parent, name)
        try:
            fd = os.open(os.path.join(path, "owner"), os.O_RDONLY)
        except OSError:
            continue  # being created, or not ours to judge
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            continue  # alive
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        removed += 1
    return removed


class DiskChunkIndex:
    """The persistent index of one vault in ``directory`` (see the module's docstring). ``directory``
    None: a private temporary one, removed with this object (the engine alone, tests)."""

    def __init__(self, directory: str | None, cache_pages: int = DEFAULT_CACHE_PAGES):
        self.cache_pages = cache_pages
        self._tmp = None
        if directory is None:
            self._tmp = _private_directory()
            directory = self._tmp.name
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self.directory = directory
        self._lock = threading.Lock()
        self._snap: Snapshot | None = None
        self._files: _Files | None = None
        self._files_gen: str | None = None
        self._pages: _PageCache | None = None

    # -- the lock and meta.json -------------------------------------------------------------------
    def _flock(self):
        fd = os.open(os.path.join(self.directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        return fd

    def _meta_path(self) -> str:
        return os.path.join(self.directory, "meta.json")

    def _read_state(self) -> _State | None:
        """The state on disk, or None if there is none usable (absent, damaged, left dirty by a crash,
        written before a reboot, another format, or its files are gone)."""
        try:
            with open(self._meta_path()) as f:
                meta = json.load(f)
            if meta.get("format") != _FORMAT or meta.get("dirty") or meta.get("boot") != _boot_id():
                return None
            state = _State(meta["gen"], meta["pages"], meta["slots"], meta["dead_slots"], meta["records_end"],
                           meta["packs"], meta["objects"], meta.get("damaged"), meta.get("unreadable"))
            if os.path.getsize(os.path.join(self.directory, f"table-{state.gen}")) != state.pages * PAGE:
                return None
            return state
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _write_state(self, state: _State, dirty: bool) -> None:
        meta = {"format": _FORMAT, "dirty": dirty, "boot": _boot_id(), "gen": state.gen, "pages": state.pages,
                "slots": state.slots, "dead_slots": state.dead_slots, "records_end": state.records_end,
                "packs": state.packs, "objects": state.objects, "damaged": state.damaged,
                "unreadable": state.unreadable}
        tmp = f"{self._meta_path()}.{os.getpid()}.{threading.get_ident()}"
        with open(tmp, "w") as f:
            json.dump(meta, f, separators=(",", ":"))
        os.replace(tmp, self._meta_path())

    def _open_files(self, gen: str, create: bool = False) -> _Files:
        if self._files_gen != gen or self._files is None:
            self._files, self._files_gen = _Files(self.directory, gen, create), gen
        return self._files

    def _fresh_state(self) -> _State:
        for name in os.listdir(self.directory):  # what a crashed or replaced generation left
            if name.startswith(("table-", "records-")):
                os.unlink(os.path.join(self.directory, name))
        state = _State(os.urandom(6).hex(), _FIRST_PAGES)
        files = self._open_files(state.gen, create=True)
        os.ftruncate(files.table, state.pages * PAGE)
        return state

    # -- synchronising with the store -------------------------------------------------------------
    def sync_with(self, names: list[str], read_object, recover=None) -> Snapshot | None:
        """Bring the index to the objects ``names`` (the store's listing now); ``read_object(name)``
        returns an object's ``[(pack id, packed records)]`` (KeyError if it disappeared, Damaged if it
        cannot be read). None if an object disappeared meanwhile (GC replaced it: list again and retry);
        what was read is kept. A damaged object is skipped and remembered (``Snapshot.damaged``), and
        read again at the next sync. ``recover(known pack ids)`` yields ``(pack id, packed records or
        None if unreadable)`` for the packs in the store outside ``known``, from their trailers: called
        once per damaged object (None: not now; a writer's start, which would not use them)."""
        with self._lock:
            lock_fd = self._flock()
            try:
                state = self._read_state()
                fresh = state is None
                if state is None:
                    state = self._fresh_state()
                listed = set(names)
                new = [n for n in names if n not in state.objects and n not in state.damaged]
                retry = [n for n in names if n in state.damaged]
                gone = [n for n in state.objects if n not in listed]
                vanished = False
                healed = []  # damaged objects that read now (put back): the state changes only then
                for name in retry:
                    try:
                        healed.append((name, read_object(name)))
                    except KeyError:
                        vanished = True
                    except Damaged:
                        pass
                unrecovered = recover is not None and any(n not in state.objects for n in state.damaged)
                if new or gone or fresh or healed or unrecovered:
                    self._write_state(state, dirty=True)
                    for name in new:
                        try:
                            packs = read_object(name)
                        except KeyError:
                            vanished = True
                            continue
                        except Damaged as e:
                            state.damaged[name] = str(e)
                            continue
                        self._add_object(state, name, packs)
                    for name, packs in healed:  # (what was recovered under its name: listed again or dead)
                        del state.damaged[name]
                        state.objects.pop(name, None)
                        self._add_object(state, name, packs)
                    if healed:
                        self._drop_objects(state, [])
                    for name in [n for n in state.damaged if n not in listed]:
                        del state.damaged[name]
                    if gone:
                        self._drop_objects(state, gone)
                    if recover is not None and any(n not in state.objects for n in state.damaged):
                        self._recover(state, recover)
                    if not state.damaged:
                        state.unreadable = []
                    if state.dead_slots > _REBUILD_MIN_DEAD and state.dead_slots * 2 > state.slots:
                        self._grow(state, state.pages)  # compaction: the live slots into a new generation
                    self._write_state(state, dirty=False)
                version = (state.gen, state.slots)
                files = self._open_files(state.gen)
                if self._pages is None or self._pages.version != version:
                    self._pages = _PageCache(version, self.cache_pages) if self.cache_pages else None
                    if self._pages is not None:
                        self._pages.fill(files.table, state.pages)
                self._snap = Snapshot(files, state, self._pages)
                return None if vanished else self._snap
            finally:
                os.close(lock_fd)  # (releases the flock)

    def _recover(self, state: _State, recover) -> None:
        """The packs no readable object lists, from their trailers, under the name of each damaged
        object not recovered yet (which of them listed which pack cannot be told)."""
        known = state.alive_numbers()
        pnos, unreadable = [], []
        for pack_id, blob in recover(set(known)):
            if blob is None:
                unreadable.append(pack_id)
                continue
            pno = known.get(pack_id)
            if pno is None:
                pno = known[pack_id] = len(state.packs)
                self._add_pack(state, pno, pack_id, bytes(blob))
            pnos.append(pno)
        for name in state.damaged:
            if name not in state.objects:
                state.objects[name] = pnos
        state.unreadable = sorted(unreadable)

    def discard(self) -> None:
        """Have the next sync rebuild the index from the store (a reader found no intact copy where it
        said: it may be stale or damaged)."""
        with self._lock:
            lock_fd = self._flock()
            try:
                state = self._read_state()
                if state is not None:
                    self._write_state(state, dirty=True)
            finally:
                os.close(lock_fd)

    def note_object(self, name: str, packs: list[tuple[str, bytes]]) -> None:
        """An index object this process just wrote: add it without reading it back (GC's consolidated
        objects, a backup's own). A no-op until the index was first synced in this process."""
        if self._snap is None:
            return
        with self._lock:
            lock_fd = self._flock()
            try:
                state = self._read_state()
                if state is None or name in state.objects:
                    return
                self._write_state(state, dirty=True)
                self._open_files(state.gen)
                self._add_object(state, name, packs)
                self._write_state(state, dirty=False)
            finally:
                os.close(lock_fd)

    def _add_object(self, state: _State, name: str, packs: list[tuple[str, bytes]]) -> None:
        known = state.alive_numbers()
        listed = []
        for pack_id, blob in packs:
            pno = known.get(pack_id)
            if pno is None:  # a pack not seen yet (an old and a consolidated object list the same packs)
                pno = known[pack_id] = len(state.packs)
                self._add_pack(state, pno, pack_id, bytes(blob))
            listed.append(pno)
        state.objects[name] = listed

    def _add_pack(self, state: _State, pno: int, pack_id: str, blob: bytes) -> None:
        """One pack's records and slots (a pack at a time: at most 8,192 records in flight)."""
        files = self._open_files(state.gen)
        state.packs.append([pack_id, state.records_end, len(blob) // ENTRY_SIZE, 1])
        os.pwrite(files.records, blob, state.records_end)
        state.records_end += len(blob)
        new_slots = [SLOT.pack(d, pno, off, ln) for d, off, ln in _ENTRY.iter_unpack(blob)]
        while (state.slots + len(new_slots)) * 4 > state.pages * SLOTS * 3:
            self._grow(state, state.pages * 2)
        _insert(self._open_files(state.gen).table, state.pages, new_slots)
        state.slots += len(new_slots)

    def _drop_objects(self, state: _State, gone: list[str]) -> None:
        """Forget objects no longer in the store; their packs no remaining object lists are dead."""
        for name in gone:
            del state.objects[name]
        still = {pno for pnos in state.objects.values() for pno in pnos}
        for pno, p in enumerate(state.packs):
            if p[3] and pno not in still:
                p[3] = 0
                state.dead_slots += p[2]

    def _grow(self, state: _State, pages: int) -> None:
        """Copy the slots of live packs into a new generation of ``pages`` pages (dead ones are left)."""
        old = self._open_files(state.gen)
        old_pages = state.pages
        gen = os.urandom(6).hex()
        new = _Files(self.directory, gen, create=True)
        os.ftruncate(new.table, pages * PAGE)
        # the records are copied as they are (offsets unchanged): one sequential pass
        at = 0
        while at < state.records_end:
            block = os.pread(old.records, min(1 << 20, state.records_end - at), at)
            os.pwrite(new.records, block, at)
            at += len(block)
        alive = [p[3] for p in state.packs]
        kept = 0
        snap = Snapshot(old, _State(state.gen, old_pages))
        batch: list[bytes] = []
        for slot in snap.slots():
            pno = _COUNT.unpack_from(slot, DIGEST_SIZE)[0]
            if pno < len(alive) and alive[pno]:
                batch.append(slot)
                if len(batch) >= 1 << 13:
                    _insert(new.table, pages, batch)
                    kept, batch = kept + len(batch), []
        _insert(new.table, pages, batch)
        kept += len(batch)
        for name in (f"table-{state.gen}", f"records-{state.gen}"):
            os.unlink(os.path.join(self.directory, name))  # (readers keep their open files)
        state.gen, state.pages, state.slots, state.dead_slots = gen, pages, kept, 0
        self._files, self._files_gen = new, gen


def _insert(fd: int, pages: int, slots: list[bytes]) -> None:
    """Add ``slots`` to the table, page by page in ascending order of their home page (one read and one
    write per page touched); what does not fit in a full page goes on to the next (wrapping at the end)."""
    mask = pages - 1
    homes = sorted(((int.from_bytes(s[:8], "little") & mask, s) for s in slots), key=lambda x: x[0])
    i, carry, page_no = 0, [], 0
    while i < len(homes) or carry:
        if not carry:
            page_no = homes[i][0]
        todo = carry
        while i < len(homes) and homes[i][0] == page_no:
            todo.append(homes[i][1])
            i += 1
        page = bytearray(os.pread(fd, PAGE, page_no * PAGE))
        n = _COUNT.unpack_from(page)[0]
        k = min(SLOTS - n, len(todo))
        page[(n + 1) * SLOT_SIZE:(n + 1 + k) * SLOT_SIZE] = b"".join(todo[:k])
        _COUNT.pack_into(page, 0, n + k)
        os.pwrite(fd, page, page_no * PAGE)
        carry = todo[k:]
        page_no = (page_no + 1) & mask
