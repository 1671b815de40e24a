"""``TreeWalker``: the directory tree in catalog order, one ``lstat`` per entry.

Depth-first pre-order, siblings sorted by name bytes: exactly the order of
:func:`~opencbr.engine.tree.entry.path_key`, so the backup can merge-join the walk with the parent
backup's catalog (streamed in the same order) instead of loading either into memory. Memory is one
sorted sibling list per level of the current path.

Symlinks are never followed. With ``one_file_system`` (the default) a directory on another device
(a mount point inside the tree) is recorded but not entered, like ``--one-file-system`` in restic and
borg: a file-system backup is one file system. Problems never stop the walk: a directory that cannot
be listed is reported (and makes the backup partial), an entry that vanished between listing and
``lstat`` is reported as a plain warning.
"""

from __future__ import annotations

import errno
import heapq
import itertools
import operator
import os
import queue
import resource
import stat
import sys
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Callable, Iterator

from ...system.beneath import PathSwapped, open_at, walk_below
from .common import built_extension
from .entry import MAX_PATH
from .forked import die_with_parent, kill_and_reap
from .xattrs import read_xattrs


@dataclass
class WalkItem:
    path: bytes  # relative to the root, '/'-separated; b"" for the root itself
    abspath: bytes
    st: os.stat_result
    # With ``node_meta``: what the listing read of a directory, symlink or special file (NodeMeta);
    # None: not read yet (regular files, the root, or node_meta off).
    meta: NodeMeta | None = None


@dataclass
class NodeMeta:
    """A non-regular entry's xattrs (and a symlink's target) read by the listing, so that the walking
    thread -- the serial part of a backup of small files -- makes no system call for it."""

    xattrs: list
    xattr_problems: list
    link: bytes | None = None  # a symlink's target
    link_error: OSError | None = None  # why it could not be read


class WalkRun:
    """Consecutive entries of one directory that are not directories, as the C listing read them (a walk
    with ``runs``): no Python object per entry until :meth:`reuse` says which the parent backup's records
    no longer describe. An incremental backup's entries are ~90 % unchanged, and building a
    ``stat_result``, a :class:`WalkItem` and the comparison in Python was most of its walking thread's CPU."""

    __slots__ = ("listing", "count")

    def __init__(self, listing: tuple):
        self.listing = listing  # _listing.list_dir's (prefix, apfx, names, stats, count)
        self.count = listing[4]

    def reuse(self, cursor, knows: Callable[[bytes], bool], known: bytes, confirmed: set[bytes]) -> tuple:
        """``_listing.reuse`` of this run (see its docstring): the entries' pending-queue tuples where the
        parent's record (``cursor``, a ``backup.ParentCursor``) still describes them, else what the
        Python path needs. ``confirmed``: digests ``knows`` said yes to (kept across runs, bounded)."""
        return _native_listing.reuse(self.listing, cursor, knows, known, confirmed)


Warn = Callable[[bytes, str, bool], None]


_RA_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _on_cpu_or_runnable() -> float:
    """Seconds this thread has run or waited in the run queue for a CPU: wall time beyond it was spent
    blocked (on the device, or on a lock). The run time is the thread's CPU clock; the queue time comes
    from Linux ``schedstat`` (exact while the thread runs: it grows when the thread gets a CPU). Not
    ``schedstat``'s run time: that lags by up to a scheduler tick while the thread runs (up to 3.3 ms
    against the CPU clock over a 2 ms spin here). The queue time can be booked late too, on a busy CPU
    (see ``TreeWalker``: why the probe also counts voluntary context switches). Without ``schedstat``,
    the CPU time alone: on a machine whose CPUs are all busy, waiting for one then looks like waiting
    on the device."""
    ran = time.thread_time()
    try:
        with open("/proc/thread-self/schedstat", "rb") as f:
            queued_ns = f.read().split()[1]
        return ran + int(queued_ns) / 1e9
    except (OSError, ValueError, IndexError):
        return ran


_RUSAGE_THREAD = getattr(resource, "RUSAGE_THREAD", None)


def _voluntary_switches() -> int | None:
    """Times this thread gave up its CPU to wait (for the device, a lock): a thread that is only
    preempted, or waits in the run queue, makes none. None where the system does not count them."""
    return resource.getrusage(_RUSAGE_THREAD).ru_nvcsw if _RUSAGE_THREAD is not None else None


_FS_ENCODING = sys.getfilesystemencoding()

# What _listing.list_dir says of a directory it did not list, and the warning for it (the same from the
# Python listing, which sees the same errors).
_LIST_OK, _LIST_OPEN_FAILED, _LIST_OTHER_DIRECTORY, _LIST_FAILED = range(4)
_LIST_PROBLEMS = {
    _LIST_OPEN_FAILED: lambda err: ("replaced during the backup (a symbolic link or a file is there now, or in place "
                                    "of a directory above it): not listed" if err in (errno.ELOOP, errno.ENOTDIR, errno.EXDEV)
                                    else f"cannot list directory: {os.strerror(err)}"),
    _LIST_OTHER_DIRECTORY: lambda _err: "replaced by another directory during the backup: not listed",
    _LIST_FAILED: lambda err: f"cannot list directory: {os.strerror(err)}",
}
_REOPEN_FAILED = "its directory was replaced during the backup"
_LISTING_ABI = 8  # the interface of _listing.c this file calls (a stale build of another one is not used)


def _load_native_listing():
    """The C listing if it is built, is the version this file expects, and builds the same
    ``os.stat_result`` as ``os.lstat`` (checked once, on this file's directory); else None."""
    _listing = built_extension("_listing", _LISTING_ABI, "OPENCBR_LISTING")
    if _listing is None:
        return None
    here = os.fsencode(os.path.dirname(os.path.abspath(__file__)))
    try:
        mine, theirs = _listing.lstat(here), os.lstat(here)
    except OSError:
        return None
    fields = [f for f in dir(theirs) if f.startswith("st_")]
    if tuple(mine) != tuple(theirs) or any(getattr(mine, f) != getattr(theirs, f) for f in fields):
        return None
    return _listing


_native_listing = _load_native_listing()


def native_listing():
    """The C extension that lists a directory in one call (``_listing``), or None where it is not built
    (the walker then lists in Python, with the same results)."""
    return _native_listing


def _names_by_parent(paths: frozenset[bytes]) -> dict[bytes, tuple[bytes, ...]]:
    by_parent: dict[bytes, list[bytes]] = {}
    for p in paths:
        parent, _, name = p.rpartition(b"/")
        by_parent.setdefault(parent, []).append(name)
    return {parent: tuple(names) for parent, names in by_parent.items()}
_by_name = operator.itemgetter(0)  # (a sort key: a listing sorted by the names alone)


def _entries(kids: list) -> int:
    """Entries in a listing (a run of ``runs`` counts its entries: what the prefetch gate bounds is memory)."""
    return sum(k[4] if len(k) == 5 else 1 for k in kids)


def _show(path: bytes) -> str:
    return os.fsdecode(path) if path else "."


class _Lister:
    """Threads that list directories in *walk order*: pending listings wait in a heap keyed by the
    directory's sort key (depth-first pre-order is the byte order of ``path.replace(b"/", b"\0")``),
    so the threads always work on the listing the walk will need first. A FIFO pool (as before)
    listed breadth-first while the walk goes depth-first: on a cold cache the walk then waited for
    listings queued behind directories it would reach much later (half of an unchanged re-backup)."""

    def __init__(self, fn: Callable, threads: int, gate: Callable[[], bool] | None = None):
        self._fn = fn
        self._gate = gate  # False: hold back (the listings done and not yet taken are enough); see wake()
        self._heap: list = []
        self._seq = itertools.count()
        self._cv = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._run, name=f"tree-list_{i}", daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, rel: bytes, *args) -> Future:
        fut: Future = Future()
        with self._cv:
            heapq.heappush(self._heap, (rel.replace(b"/", b"\0"), next(self._seq), fut, args))
            self._cv.notify()
        return fut

    def _run(self) -> None:
        while True:
            with self._cv:
                while (not self._heap or (self._gate is not None and not self._gate())) and not self._stopped:
                    self._cv.wait()
                if self._stopped:
                    return
                _k, _n, fut, args = heapq.heappop(self._heap)
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self._fn(*args))
            except BaseException as e:  # noqa: BLE001 - handed to whoever waits for the listing
                fut.set_exception(e)

    def wake(self) -> None:
        """The gate may have opened (the walk took a listing)."""
        with self._cv:
            self._cv.notify_all()

    def shutdown(self) -> None:
        with self._cv:
            self._stopped = True
            for _k, _n, fut, _a in self._heap:
                fut.cancel()
            self._heap.clear()
            self._cv.notify_all()
        for t in self._threads:
            t.join()


class TreeWalker:
    """Ordered walk (see the module docstring). With ``prefetch`` threads, the listing (``scandir`` +
    ``lstat`` of every entry) of each subdirectory is started as soon as its parent has been listed,
    in walk order (:class:`_Lister`), so by the time the depth-first walk enters a directory its
    entries are usually in hand: on a cold cache the walk otherwise waits for one inode-table read
    after another (it was ~60% of an unchanged re-backup of the 30k-file tree). At most
    ``MAX_PREFETCH`` listings are submitted and not yet taken by the walk, and the threads start no
    listing while those done and not yet taken hold ``MAX_PREFETCH_ENTRIES`` entries (a listing the
    walk reaches before any thread started it is taken back and listed by the walk itself): an entry
    costs ~500 bytes (its paths and ``stat_result``), and a first backup's listing threads outrun the
    workers that read the files, so 512 listings of 1,000-file directories were held whole (1 M-file
    tree: 375 MB peak RSS, against ~100 MB for 100 k files).

    With ``adaptive``, the threads start only once listings are seen to *wait* on the device: after
    ``PROBE_LISTINGS`` listings, if their wall time minus the time this thread ran or waited for a CPU
    averages more than ``SLOW_LISTING`` seconds (a disk that seeks, network storage; a machine busy
    with other work is not a slow device). A listing counts as waiting only if the thread gave up its
    CPU meanwhile (a voluntary context switch): on a busy CPU ``schedstat`` books a wait in the run
    queue late, now and then, and a listing then seemed to have waited 0.13-0.36 s on the device
    (a later one as much less) -- without a voluntary switch, in every such case seen here; one of them
    in 32 listings lifted the mean above the threshold. Where metadata reads are quick
    the threads cost more than they save: every listing thread wants the GIL back after each
    system call, and so does the walk (measured here, cold cache, 30k files: the walk alone 0.32 s,
    with 4 listing threads 0.45 s; the unchanged re-backup 0.78 s against 0.89 s). With the C listing
    (``native``: one GIL hand-off per directory) threads always on were still slower for a changed
    re-backup (bench/README.md, realtree, 2026-12-05 noon): building the entries takes the GIL too."""

    MAX_PREFETCH = 512
    RUN_MAX = 256
    MAX_PREFETCH_ENTRIES = 16384
    PROBE_LISTINGS = 32
    SLOW_LISTING = 0.001
    # Threads of a warm walk's _listing.Ahead (as MetadataWarmer.THREADS: the device serves several reads
    # at once, and they take the directories in the walk's order).
    AHEAD_THREADS = 8

    def __init__(self, root: str | bytes | os.PathLike, warn: Warn, *, one_file_system: bool = True,
                 prefetch: int = 4, readahead_below: int = 0, adaptive: bool = False, warm: bool = False,
                 exclude: frozenset[bytes] = frozenset(), node_meta: bool = False,
                 tally: ListingTally | None = None, runs: bool = False):
        self.tally = tally  # adds up the regular files' sizes of every listing (a first backup's progress total)
        # node_meta: read the xattrs of directories, symlinks and special files and the targets of
        # symlinks while listing (WalkItem.meta), on the listing threads when they run: on the walking
        # thread each of those calls cost 0.2-1.7 ms of waiting for the GIL back (bench/README.md).
        self.node_meta = node_meta
        self.readahead_below = readahead_below  # >0: start reading regular files smaller than this
        self.exclude = exclude  # paths (relative to the root) left out with all they hold
        self._excluded_in = _names_by_parent(exclude)  # (the same, for the C listing: names by directory)
        self.native = native_listing()  # the C listing (one call per directory), or None: in Python
        # runs: yield a directory's consecutive non-directories as WalkRuns (with the C listing; for a
        # caller that compares them with a parent backup, see WalkRun), at most RUN_MAX entries each (the
        # backup's pending queue takes a run at once)
        self.runs = runs and not node_meta
        self.root = os.path.abspath(os.fsencode(root))
        self.warn = warn
        self.one_file_system = one_file_system
        self.prefetch = prefetch
        self.adaptive = adaptive
        # warm: list the tree ahead of the walk, on an Ahead's threads whose listings the walk takes (with
        # the C listing, and no readahead), else on a MetadataWarmer that only warms the kernel's caches
        self.warm = warm
        self.prefetching = False  # whether listing threads ran (for tests and the curious)
        self._ahead = None  # a warm walk's _listing.Ahead while it runs
        # While the walk runs, an O_PATH descriptor of the root: directories below it are opened below it
        # by their path in the tree, no symlink followed on the way (a directory swapped for one after
        # its parent's listing leads no open out of the tree); -1: by their absolute path, checked after.
        self._root_fd = -1
        # its (hits, misses, dropped, peak entries held) once the walk is over
        self.ahead_stats: tuple | None = None

    def _children(self, abspath: bytes, rel: bytes, want: os.stat_result | None = None, ahead=None,
                  ) -> list[tuple[bytes, bytes, os.stat_result, NodeMeta | None]]:
        """The entries of a directory, listed through a descriptor of it that is checked to be the
        directory its parent's listing saw (``want``): one swapped for a symlink, or a directory above
        it swapped since, is not listed (a backup never reads outside the tree it was given).
        ``ahead``: the walk's ``_listing.Ahead``, given by the walking thread only (it asks in walk order)."""
        if len(rel) > MAX_PATH - 256:  # (a child's path, up to 256 bytes longer, might not fit in its record)
            self.warn(rel, f"too deep: what it holds is not recorded (a path holds at most {MAX_PATH:,} bytes)", True)
            return []
        if self.native is not None:
            out = self._list_native(abspath, rel, want, ahead)
        else:
            out = self._list_python(abspath, rel, want)
            if self.tally is not None:
                self.tally.add(sum(st.st_size for _c, _a, st, _m in out if stat.S_ISREG(st.st_mode)))
        if self.node_meta:
            self._node_metas(abspath, rel, want, out)
        return out

    def _node_metas(self, abspath: bytes, rel: bytes, want: os.stat_result | None, out: list) -> None:
        """The xattrs (and symlinks' targets) of a listing's entries that are not regular files, read by
        name in the directory listed -- reopened below the root with no symlink followed, and checked to
        be the one listed -- never by absolute path, which a directory above swapped meanwhile would lead
        out of the tree (another object's xattrs and link target would be recorded)."""
        todo = [i for i, kid in enumerate(out) if not stat.S_ISREG(kid[2].st_mode)]
        if not todo:
            return
        dfd = self._reopen(abspath, rel, want)
        cut = len(rel) + 1 if rel else 0
        try:
            for i in todo:
                crel, ap, st, _m = out[i]
                if dfd is None:
                    meta = NodeMeta([], [f"cannot list xattrs: {_REOPEN_FAILED}"])
                    meta.link_error = OSError(errno.ESTALE, _REOPEN_FAILED)
                else:
                    meta = _node_meta(b"/proc/self/fd/%d/%s" % (dfd, crel[cut:]), st)
                out[i] = (crel, ap, st, meta)
        finally:
            if dfd is not None:
                os.close(dfd)

    def _reopen(self, abspath: bytes, rel: bytes, want: os.stat_result | None) -> int | None:
        """An O_PATH descriptor of the directory just listed, if it is still that directory (else None)."""
        try:
            if not rel and self._root_fd >= 0:
                fd = os.dup(self._root_fd)
            elif self._root_fd >= 0:
                fd = open_at(self._root_fd, os.fsdecode(rel), os.O_PATH | os.O_DIRECTORY | os.O_NOFOLLOW)
            else:  # (a walker used without iterating it: its listings by absolute path, as they are)
                fd = os.open(abspath, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC | (os.O_NOFOLLOW if rel else 0))
        except (OSError, PathSwapped):
            return None
        st = os.fstat(fd)
        if want is not None and (st.st_dev, st.st_ino) != (want.st_dev, want.st_ino):
            os.close(fd)
            return None
        return fd

    def _list_native(self, abspath: bytes, rel: bytes, want: os.stat_result | None, ahead=None) -> list:
        """_children's listing in one call to the C extension (``_listing.list_dir``): its system calls
        with the GIL released, the regular files' total and their readahead done there too (or the
        listing taken from ``ahead``, which made it on one of its threads)."""
        status, got, problems, regular = self.native.list_dir(
            abspath, not rel, None if want is None else (want.st_dev, want.st_ino), rel + b"/" if rel else b"",
            abspath + b"/", self._excluded_in.get(rel, ()), self.readahead_below, self.RUN_MAX if self.runs else 0,
            ahead, self._root_fd)
        if status != _LIST_OK:
            self.warn(rel, _LIST_PROBLEMS[status](got), True)
            return []
        for crel, err in problems:
            if err == errno.ENOENT:
                self.warn(crel, "vanished during the backup", False)
            else:
                self.warn(crel, f"cannot stat: {os.strerror(err)}", True)
        if self.tally is not None:
            self.tally.add(regular)
        return got

    def _list_python(self, abspath: bytes, rel: bytes, want: os.stat_result | None) -> list:
        """_children's listing where the C extension is not built: the same entries and warnings."""
        out = []
        try:
            if rel and self._root_fd >= 0:
                fd = open_at(self._root_fd, os.fsdecode(rel), _DIR_FLAGS)
            else:  # (the root may be a /proc link)
                fd = os.open(abspath, _DIR_FLAGS if rel else _DIR_FLAGS & ~os.O_NOFOLLOW)
        except PathSwapped:
            self.warn(rel, _LIST_PROBLEMS[_LIST_OPEN_FAILED](errno.ELOOP), True)
            return out
        except OSError as e:
            self.warn(rel, _LIST_PROBLEMS[_LIST_OPEN_FAILED](e.errno), True)
            return out
        try:
            fst = os.fstat(fd)
            if want is not None and (fst.st_dev, fst.st_ino) != (want.st_dev, want.st_ino):
                self.warn(rel, _LIST_PROBLEMS[_LIST_OTHER_DIRECTORY](0), True)
                return out
            with os.scandir(fd) as it:  # (names come as str from a descriptor: os.fsencode's encoding)
                ents = sorted([(d.name.encode(_FS_ENCODING, "surrogateescape"), d) for d in it], key=_by_name)
            excluded = self.exclude
            prefix, apfx = (rel + b"/" if rel else b""), abspath + b"/"
            for name, d in ents:
                crel = prefix + name
                if excluded and crel in excluded:
                    continue
                try:
                    st = d.stat(follow_symlinks=False)  # (relative to fd: before it is closed)
                except FileNotFoundError:
                    self.warn(crel, "vanished during the backup", False)
                    continue
                except OSError as e:
                    self.warn(crel, f"cannot stat: {e.strerror or e}", True)
                    continue
                out.append((crel, apfx + name, st, None))
            if self.readahead_below:
                self._readahead(fd, out, len(prefix))
        except OSError as e:
            self.warn(rel, _LIST_PROBLEMS[_LIST_FAILED](e.errno), True)
            return []
        finally:
            os.close(fd)
        return out

    def _readahead(self, dir_fd: int, kids: list, cut: int) -> None:
        """Ask the kernel to start reading the small regular files of a listing (``WILLNEED``: the
        read runs in the background). The listing threads run ahead of the walk, so the backup's
        workers later find those files in the page cache instead of each waiting for one small random
        read after another. Opened by name in the directory just listed (``dir_fd``, ``cut``: the length
        of the names' prefix in the paths), never by a path that a directory swapped meanwhile would lead
        elsewhere: an open is itself an action (a device node's driver acts on it)."""
        lim = self.readahead_below
        for crel, _ap, st, _m in kids:
            if stat.S_ISREG(st.st_mode) and 0 < st.st_size < lim:
                try:
                    fd = os.open(crel[cut:], _RA_FLAGS, dir_fd=dir_fd)
                except OSError:
                    continue  # e.g. not ours (O_NOATIME) or unreadable: the real read will say so
                try:
                    os.posix_fadvise(fd, 0, st.st_size, os.POSIX_FADV_WILLNEED)
                except OSError:
                    pass
                finally:
                    os.close(fd)

    def __iter__(self) -> Iterator[WalkItem]:
        try:  # (the root may be given as /proc/self/fd/N: followed, only the root)
            self._root_fd = os.open(self.root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        except NotADirectoryError:
            raise NotADirectoryError(f"{os.fsdecode(self.root)} is not a directory") from None
        try:
            yield from self._from_root()
        finally:
            os.close(self._root_fd)
            self._root_fd = -1

    def _from_root(self) -> Iterator[WalkItem]:
        st = os.fstat(self._root_fd)
        dev = st.st_dev
        warmer = self._ahead = None
        if self.warm and self.native is not None and not self.readahead_below:
            self._ahead = self.native.Ahead(self.root, dev if self.one_file_system else None, self.AHEAD_THREADS,
                                            self.MAX_PREFETCH_ENTRIES)
        elif self.warm:
            warmer = MetadataWarmer(self.root, dev if self.one_file_system else None).start()
        try:
            yield WalkItem(b"", self.root, st)
            yield from self._walk(dev)
        finally:
            if warmer is not None:
                warmer.stop()
            if self._ahead is not None:
                self.ahead_stats = self._ahead.stats()
                self._ahead.close()
            if self.tally is not None:
                self.tally.done.set()

    def _walk(self, dev: int) -> Iterator[WalkItem]:
        ahead: dict[bytes, Future] = {}  # listings submitted and not yet taken by the walk
        held = [0]  # entries in the listings done and not yet taken by the walk
        lock = threading.Lock()

        def descend(cst: os.stat_result) -> bool:
            return stat.S_ISDIR(cst.st_mode) and (not self.one_file_system or cst.st_dev == dev)

        def prefetch(kids: list) -> None:
            # Submit the subdirectories' listings. Called as soon as a listing is done (in the lister
            # threads too): the listing runs ahead of the walk by up to MAX_PREFETCH directories (and
            # MAX_PREFETCH_ENTRIES entries: the gate), not just one level.
            for kid in kids:
                if len(kid) == 4 and descend(kid[2]):  # (a run holds no directory)
                    crel, cap, cst, _m = kid
                    with lock:
                        if len(ahead) >= self.MAX_PREFETCH:
                            return
                        if cap not in ahead:
                            ahead[cap] = pool.submit(crel, cap, crel, cst)

        def list_ahead(ap: bytes, rel: bytes, want: os.stat_result) -> list:
            kids = self._children(ap, rel, want)
            with lock:
                held[0] += _entries(kids)
            prefetch(kids)
            return kids

        def gate() -> bool:
            return held[0] < self.MAX_PREFETCH_ENTRIES

        made_ahead = self._ahead
        pool = _Lister(list_ahead, self.prefetch, gate) if self.prefetch and not self.adaptive and made_ahead is None else None
        self.prefetching = pool is not None
        probe = [0, 0.0]  # listings timed, seconds they waited

        def listing(ap: bytes, rel: bytes, want: os.stat_result | None) -> list:
            nonlocal pool
            with lock:
                fut = ahead.pop(ap, None)
            if fut is not None and fut.cancel():
                fut = None  # not started (the gate held it back): listed here, below
            if fut is not None:
                kids = fut.result()
                with lock:
                    held[0] -= _entries(kids)
                pool.wake()
            elif made_ahead is not None:  # (its threads list ahead: no listing threads here besides them)
                kids = self._children(ap, rel, want, made_ahead)
            elif pool is None and self.prefetch and probe[0] < self.PROBE_LISTINGS:
                t0, c0, v0 = time.perf_counter(), _on_cpu_or_runnable(), _voluntary_switches()
                kids = self._children(ap, rel, want)
                probe[0] += 1
                if v0 is None or _voluntary_switches() != v0:  # (else it never waited, whatever the clocks say)
                    # never below zero: queue time booked late (a wait from before t0) would otherwise
                    # cancel the real waits of other listings
                    probe[1] += max(0.0, (time.perf_counter() - t0) - (_on_cpu_or_runnable() - c0))
                if probe[0] == self.PROBE_LISTINGS and probe[1] / probe[0] > self.SLOW_LISTING:
                    pool = _Lister(list_ahead, self.prefetch, gate)
                    self.prefetching = True
            else:
                kids = self._children(ap, rel, want)
            if pool is not None:
                prefetch(kids)  # (again: some may have been left out while the window was full)
            return kids

        try:
            stack = [iter(listing(self.root, b"", None))]
            while stack:
                item = next(stack[-1], None)
                if item is None:
                    stack.pop()
                    continue
                if len(item) == 5:
                    yield WalkRun(item)
                    continue
                rel, ap, cst, meta = item
                yield WalkItem(rel, ap, cst, meta)
                if stat.S_ISDIR(cst.st_mode):
                    if not descend(cst):
                        self.warn(rel, "mount point of another file system: recorded, not entered", False)
                        continue
                    stack.append(iter(listing(ap, rel, cst)))
        finally:
            if pool is not None:
                pool.shutdown()


def _node_meta(path: bytes, st: os.stat_result) -> NodeMeta:
    """``path``: the entry's name in a descriptor of its directory (``/proc/self/fd/N/NAME``)."""
    xattrs, problems = read_xattrs(path)
    meta = NodeMeta(xattrs, problems)
    if stat.S_ISLNK(st.st_mode):
        try:
            meta.link = os.readlink(path)
        except OSError as e:
            meta.link_error = e
    return meta


def _behind_the_backup() -> None:
    """Run the warmer at the lowest priority (nice 19): it only takes a core the backup leaves idle.
    With its listings on ``MetadataWarmer.THREADS`` threads the device is no longer the bottleneck of an
    incremental walk: the walking thread is, and a warmer at the backup's priority or above kept it
    waiting for a core (cold changed re-backup of realtree's 69k entries, five alternating runs each:
    1.21-1.33 s with the warmer 5 nice levels ahead, as for its one thread before, 1.16-1.25 s 10 levels
    behind, 1.12-1.30 s at 19; the walking thread waited ~0.35 s in the run queue with it ahead). Raising
    a nice value is always permitted."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 19)
    except OSError:
        pass


class MetadataWarmer:
    """A forked helper process that walks the tree in the walk's own order (depth-first, siblings by
    name) doing nothing but list and ``lstat`` (in C where the extension is built, on ``THREADS`` threads
    taking the directories the walk needs first), so that the walk finds directory blocks and inodes
    already in the kernel's caches. Where the C listing is built a warm walk uses ``_listing.Ahead``
    instead, which makes the same listings on threads of the backup's process and hands them to the walk:
    the walk then makes none of those system calls a second time, and the backup's process is not forked
    (realtree's changed re-backup of the ``/usr`` copy, cold, six alternating runs each: the walking thread's
    CPU 0.54-0.60 -> 0.43-0.53 s; on two cores the wall time did not move; bench/README.md, a fifth VM).

    Why a process: an incremental backup of an unchanged tree is the walk plus a little Python per
    entry, one core busy and the walk waiting for one metadata read after another on a cold cache.
    Listing threads ahead of it cost more than they saved here (every thread wants the GIL back after
    each system call; see TreeWalker), a process has its own and uses the idle core. It only reads
    metadata, so nothing depends on it: it may lag or die, and it is killed when the walk ends."""

    # Threads of the C warmer: one waits for one metadata read after another, like ``find``; the device
    # serves several at once (cold cache, realtree's 63k entries: 1 thread 0.73-0.77 s, 2 0.49, 4 0.37-0.38,
    # 8 0.29, 16 0.27-0.29). They take directories in the walk's order, so the walk finds its next ones read.
    THREADS = 8

    def __init__(self, root: bytes, dev: int | None):
        self.root = root
        self.dev = dev  # stay on this device (one_file_system); None: cross mount points
        self.pid = 0

    def start(self) -> "MetadataWarmer":
        parent = os.getpid()
        try:
            pid = os.fork()
        except OSError:
            return self  # no helper: the walk reads everything itself, as without one
        if pid == 0:
            try:
                die_with_parent(parent)
                _behind_the_backup()
                self._run()
            finally:
                os._exit(0)
        self.pid = pid
        return self

    def _run(self) -> None:
        native = native_listing()
        if native is not None:  # (in C: the same order and calls, without ~1 CPU s of Python per 60k entries)
            native.warm(self.root, self.dev, False, self.THREADS)
            return
        # Each directory opened below the root by its path in the tree, no symlink followed on the way
        # (beneath.walk_below): one swapped for a symlink meanwhile is neither opened nor listed.
        root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for _top, dirs, others, fd in walk_below(root_fd):
                dirs[:] = self._lstat_all(sorted(dirs + others, key=os.fsencode), fd)  # (the walk's order)
        finally:
            os.close(root_fd)

    def _lstat_all(self, names: list[str], dir_fd: int) -> list[str]:
        """``lstat`` every entry (what warms the inodes); the subdirectories on the device, in order."""
        subdirs = []
        for name in names:
            try:
                st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISDIR(st.st_mode) and (self.dev is None or st.st_dev == self.dev):
                subdirs.append(name)
        return subdirs

    def stop(self) -> None:
        if self.pid:
            kill_and_reap(self.pid)
            self.pid = 0


class ListingTally:
    """A first backup's progress total taken from the walk's own listings (``TreeWalker(tally=...)``):
    the regular files' sizes of every directory listed so far, by the listing threads ahead of the walk
    or by the walk itself; ``done`` when the walk has ended. No system call of its own: where a
    :class:`TreeScanner` lists and ``lstat``'s the whole tree a second time beside the backup (~1 CPU s
    for 62,000 entries; bench/README.md, realtree). The total is a lower bound that grows as the
    listings run ahead of the reads (up to ``TreeWalker.MAX_PREFETCH_ENTRIES`` entries): the progress
    of a tree larger than that is approximate until its last directories are listed."""

    def __init__(self) -> None:
        self.total = 0
        self.done = threading.Event()
        self._lock = threading.Lock()

    def add(self, size: int) -> None:
        with self._lock:
            self.total += size

    def stop(self) -> None:
        pass


class TreeScanner:
    """Sizes the tree for the progress bar of a first backup (later backups use the parent's size):
    a few threads ``lstat`` everything in no particular order and add up regular file sizes into
    ``total``; ``done`` is set when the scan is complete. The threads spend their time in system calls
    (which release the GIL) and also warm the inode cache for the ordered walk. On the 30k-file tree
    the total is known after ~1 s of a ~6 s first backup."""

    def __init__(self, root: bytes, *, one_file_system: bool = True, threads: int = 4):
        self.root = root
        self.one_file_system = one_file_system
        self.total = 0  # bytes of regular files seen so far
        self.done = threading.Event()
        self._stop = threading.Event()
        self._q: queue.SimpleQueue = queue.SimpleQueue()
        self._busy = 0
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, name=f"tree-scan-{i}", daemon=True) for i in range(threads)]

    def start(self) -> "TreeScanner":
        try:
            # (directories opened below this by their path in the tree, no symlink followed on the way)
            self._root_fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self._dev = os.fstat(self._root_fd).st_dev
        except OSError:
            self.done.set()
            return self
        self._busy = 1
        self._alive = len(self._threads)  # (the last thread to end closes the root's descriptor)
        self._q.put(b"")
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for _ in self._threads:
            self._q.put(None)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                rel = self._q.get()
                if rel is None or self._scan(rel):
                    return
        finally:
            with self._lock:
                self._alive -= 1
                last = self._alive == 0
            if last:
                os.close(self._root_fd)

    def _scan(self, rel: bytes) -> bool:
        """Add up directory ``rel``'s regular files and queue its subdirectories; True once the scan is done."""
        subtotal = 0
        try:
            fd = open_at(self._root_fd, os.fsdecode(rel), os.O_RDONLY | os.O_DIRECTORY) if rel else os.dup(self._root_fd)
        except (OSError, PathSwapped):
            fd = -1
        try:
            if fd >= 0:
                with os.scandir(fd) as it:
                    for e in it:
                        if self._stop.is_set():
                            break
                        subtotal += self._entry(rel, e)
        except OSError:
            pass
        finally:
            if fd >= 0:
                os.close(fd)
        with self._lock:
            self.total += subtotal
            self._busy -= 1
            finished = self._busy == 0
        if finished:
            self.done.set()
            self.stop()
        return finished

    def _entry(self, rel: bytes, e: os.DirEntry) -> int:
        """A regular file's size; a subdirectory (on the device) queued."""
        try:
            st = e.stat(follow_symlinks=False)  # (relative to the directory's descriptor)
        except OSError:
            return 0
        if stat.S_ISREG(st.st_mode):
            return st.st_size
        if stat.S_ISDIR(st.st_mode) and (not self.one_file_system or st.st_dev == self._dev):
            with self._lock:
                self._busy += 1
            name = os.fsencode(e.name)
            self._q.put(rel + b"/" + name if rel else name)
        return 0
