"""Tree restore: recreate a backup's tree (or one file/directory of it) under a target directory.

Safety: every path comes from the catalog, and a catalog is data, not instructions. Paths are checked
component by component (no ``..``, ``.``, empty or absolute components; keys strictly increasing;
every entry's parent restored as a directory before it), and everything is created relative to open
directory descriptors with ``O_NOFOLLOW`` (``openat``/``mkdirat``/``symlinkat``/``linkat``), so no
symlink -- restored or pre-existing -- is ever followed, and nothing can land outside the target.
Symlinks themselves are restored verbatim (an absolute or ``..`` target is the user's data).

Pipeline: the calling thread streams the catalog (in order) and creates directories, symlinks, special
files, hard links and empty regular files; file contents are gathered into *windows* (~64 MiB or 1024
files); a window's chunks are looked up in the chunk index, grouped by pack and coalesced into range
reads (the backup wrote packs in walk order, so a window maps to a few sequential spans), and fetched,
verified and written (``pwrite``) by ``workers`` threads. At most two windows are in flight, so memory
is bounded whatever the tree size. A file's metadata (owner, mode, xattrs, times) is applied as soon as
its last chunk is written; directories' metadata is applied last, deepest first (creating children
changes a directory's mtime, and a read-only directory would refuse them).

A chunk that fails verification is tried from its other copies (``ChunkStore.get_chunk``); if none is
intact the restore finishes what it can and raises ``DataCorruption`` naming the damaged files.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import pickle
import resource
import select
import stat
import struct
import threading
import time
from array import array
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterator, NamedTuple

from ...domain.errors import DataCorruption, InvalidParameter
from ...system.aligned import ALIGN, aligned_buffer, pwrite_split, reopen_direct
from ...system.libc import function as libc_function
from ..chunks.reader import read_span, spans_of
from ..errors import RestoreCancelled
from .catalog import CatalogReader
from .common import Progress, chunkstore_of, in_subtree, load_index, not_found, parse_path, show
from .entry import BLK, CHR, DIR, FIFO, FILE, SOCK, SYMLINK, Entry, path_key
from .forked import die_with_parent, exit_reason, kill_and_reap
from .memory import limit_heap_growth, trim
from .results import TreeRestoreResult, TreeWarning

WINDOW_BYTES = 64 << 20
WINDOW_FILES = 1024  # open descriptors per window (two windows in flight); lowered to fit RLIMIT_NOFILE
MAX_SPAN = 8 << 20
MAX_GAP = 256 << 10
MAX_WARNINGS = 1000
# Files at least this big get their whole blocks written with O_DIRECT (system/aligned.py
# ``pwrite_split``); smaller ones are bundled pieces of one or a few blocks, where the second
# descriptor would cost more than the page-cache copy it saves.
DIRECT_MIN = 64 << 10
# Restores of at least PARALLEL_MIN bytes run in several processes (TreeRestore._restore_parts),
# which share the entries out in groups of GROUP_BYTES of file data or GROUP_FILES entries.
PARALLEL_MIN = 64 << 20
GROUP_BYTES = 16 << 20
GROUP_FILES = 256
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int) -> None:
    """Start writing a finished file's dirty pages now (``sync_file_range(SYNC_FILE_RANGE_WRITE)``,
    asynchronous), so the final ``syncfs`` barrier waits for the tail only instead of for the whole
    restore (measured on the 30k-file tree: the barrier alone cost 1.7 s of a 6.8 s restore)."""
    sync_file_range = libc_function("sync_file_range",
                                    (ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong, ctypes.c_uint))
    if sync_file_range is not None:
        sync_file_range(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)


def _syncfs(fd: int) -> None:
    """Flush the file system holding ``fd`` (one barrier instead of an fsync per file)."""
    syncfs = libc_function("syncfs", (ctypes.c_int,))
    if syncfs is None or syncfs(fd) != 0:
        os.sync()


def _umask() -> int:
    """This process's umask without changing it (``os.umask`` sets it process-wide, racing other
    threads): from /proc, else assume the most restrictive (every permission bit would be masked)."""
    try:
        with open("/proc/self/status", "rb") as f:
            for line in f:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o777


def _check_components(path: bytes) -> None:
    if path == b"":
        return
    for c in path.split(b"/"):
        if c in (b"", b".", b"..") or b"\0" in c:
            raise DataCorruption(f"refusing catalog path {path!r}: it could escape the target")


class _DirMeta(NamedTuple):
    """What finishing a directory needs (``_finish_fd``)."""

    mode: int
    uid: int
    gid: int
    xattrs: list
    atime_ns: int
    mtime_ns: int


class _DirList:
    """The directories restored, in catalog order, with what finishing them needs, kept until the
    end (their metadata is applied last, deepest first). Packed into one buffer: a Python object per
    directory, made between thousands of short-lived catalog entries, pins the interpreter's memory
    pools (restoring 300k files in one process grew by ~18 MB during the run; the records are
    ~50 bytes each here). Pickles small, for a forked part to hand to its parent."""

    _HEAD = struct.Struct("<IIIqqI")  # mode, uid, gid, atime_ns, mtime_ns, len(rel); then rel

    def __init__(self) -> None:
        self._buf = bytearray()
        self._offs = array("Q")
        self._xattrs: dict[int, list] = {}  # index -> xattrs, for the few directories that have any

    def append(self, rel: bytes, e: Entry) -> None:
        if e.xattrs:
            self._xattrs[len(self._offs)] = e.xattrs
        self._offs.append(len(self._buf))
        self._buf += self._HEAD.pack(e.mode, e.uid, e.gid, e.atime_ns or 0, e.mtime_ns, len(rel))
        self._buf += rel

    def deepest_first(self) -> Iterator[tuple[bytes, _DirMeta]]:
        """Catalog order reversed: every directory after everything below it."""
        head = self._HEAD
        for i in reversed(range(len(self._offs))):
            o = self._offs[i]
            mode, uid, gid, atime, mtime, n = head.unpack_from(self._buf, o)
            rel = bytes(self._buf[o + head.size:o + head.size + n])
            yield rel, _DirMeta(mode, uid, gid, self._xattrs.get(i, []), atime, mtime)


@dataclass
class _FileJob:
    fd: int
    entry: Entry
    rel: bytes
    remaining: int
    failed: str | None = None
    mode: int = 0o600  # what it was created with (see TreeRestore._create_mode)
    dfd: int = -1  # a second, O_DIRECT descriptor for the file's whole blocks (-1: none)

    def close(self) -> None:
        if self.dfd >= 0:
            os.close(self.dfd)
        os.close(self.fd)


@dataclass
class _Window:
    jobs: list[_FileJob] = field(default_factory=list)
    fds: int = 0
    want: dict[bytes, list[tuple[_FileJob, int, int, int]]] = field(default_factory=dict)
    nbytes: int = 0
    pending_spans: int = 0
    done: threading.Event = field(default_factory=threading.Event)


class TreeRestore:
    def __init__(self, cs, backup_id: str, target: str, subpath: bytes, *, progress: Progress | None,
                 cancel: threading.Event | None, allow_nonempty: bool, owners: bool, workers: int, sync: bool,
                 processes: int = 1, target_fd: int | None = None):
        self.cs = cs
        self.target_fd = target_fd
        self.backup_id = backup_id
        self.target = os.path.abspath(target)
        self.sub = subpath
        self.sub_key = path_key(subpath)
        self.cut = len(subpath.rsplit(b"/", 1)[0]) + 1 if b"/" in subpath else 0
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self._stop = threading.Event()  # ours: stops the span workers on cancel *or* error
        self.allow_nonempty = allow_nonempty
        self.owners = owners
        self.workers = workers
        self.sync = sync
        self.processes = processes
        self.processes_used = 1
        self._shared: tuple[mmap.mmap, int] | None = None  # restoring in parts: (progress page, slot)
        self._in_child = False
        self.parts_peak_rss: list[int] = []
        self.warnings: list[TreeWarning] = []
        self.counts = {"files": 0, "dirs": 0, "symlinks": 0, "specials": 0, "hardlinks": 0}
        self.written = 0
        self.total = 0
        self.errors: list[tuple[bytes, str]] = []
        self._lock = threading.Lock()
        self._tls = threading.local()
        self._last_report = 0.0

    # -- helpers ------------------------------------------------------------------------------------
    def warn(self, rel: bytes, msg: str, partial: bool = True) -> None:
        with self._lock:
            if len(self.warnings) < MAX_WARNINGS:
                self.warnings.append(TreeWarning(show(rel), msg, partial))

    def _codec(self):
        c = getattr(self._tls, "codec", None)
        if c is None:
            c = self._tls.codec = self.cs.codec.clone()
        return c

    def _report(self, force: bool = False) -> None:
        trim()
        done = self.written
        if self._shared is not None:  # restoring in parts: each posts its bytes, the parent reports the sum
            shared, slot = self._shared
            struct.pack_into("q", shared, 8 * slot, self.written)
            if self._in_child:
                return
            done = sum(struct.unpack_from(f"{len(shared) // 8 - 1}q", shared))  # (the last slot: _claim)
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_report >= 0.2:
            self._last_report = now
            self.progress(min(done, self.total), self.total)

    def _rel(self, path: bytes) -> bytes:
        return path[self.cut:]

    # -- metadata -----------------------------------------------------------------------------------
    def _set_xattrs(self, target, e: Entry, rel: bytes, follow: bool = True) -> None:
        for name, value in e.xattrs:
            try:
                os.setxattr(target, name, value, follow_symlinks=follow)
            except OSError as exc:
                self.warn(rel, f"cannot set xattr {os.fsdecode(name)}: {exc.strerror or exc}", False)

    def _create_mode(self, e: Entry) -> int:
        """The mode to create a regular file with. Normally 0600 until its owner and mode are set at
        the end. When the file is to belong to us anyway (what creating it gives: our uid and gid, and
        no set-group-id directory above) and its permission bits survive the umask, it is created
        with its final mode and ``_finish_fd`` skips ``fchown``/``fchmod`` (two of the four system
        calls per file; each also waits for the GIL behind the busy span workers)."""
        mode = stat.S_IMODE(e.mode)
        if (self._plain_owner == (e.uid, e.gid) or not self.owners) and mode & ~0o777 == 0 \
                and mode & self._umask == 0:
            return mode
        return 0o600

    def _finish_fd(self, fd: int, e: Entry | _DirMeta, rel: bytes, created_final: bool = False) -> None:
        """Owner, mode, xattrs, then times (last: the others change ctime only, writes change mtime)."""
        try:
            if created_final:
                pass  # created with its final owner and mode (_create_mode)
            elif self.owners:
                os.fchown(fd, e.uid, e.gid)
                os.fchmod(fd, stat.S_IMODE(e.mode))
            else:
                os.fchmod(fd, stat.S_IMODE(e.mode))
        except OSError as exc:
            self.warn(rel, f"cannot set owner/mode: {exc.strerror or exc}", False)
        if e.xattrs:
            self._set_xattrs(fd, e, rel)
        try:
            os.utime(fd, ns=(e.atime_ns or e.mtime_ns, e.mtime_ns))  # directories: no atime recorded
        except OSError as exc:
            self.warn(rel, f"cannot set times: {exc.strerror or exc}", False)

    def _finish_job(self, job: _FileJob) -> None:
        try:
            if job.failed is None:
                if self.sync:
                    _start_writeback(job.fd)
                self._finish_fd(job.fd, job.entry, job.rel, job.mode != 0o600)
        finally:
            job.close()

    # -- fetching -----------------------------------------------------------------------------------
    def _plan(self, win: _Window) -> list[tuple[str, int, int, list]]:
        return spans_of(self._index, win.want, lambda d: self._chunk_failed(win, d, "chunk is not in the repository"),
                        max_span=MAX_SPAN, max_gap=MAX_GAP)

    def _chunk_failed(self, win: _Window, d: bytes, msg: str) -> None:
        for job, _fo, _co, _n in win.want.get(d, ()):
            with self._lock:
                if job.failed is None:
                    job.failed = msg
                    self.errors.append((job.rel, msg))
            self._job_step(job)

    def _job_step(self, job: _FileJob) -> None:
        with self._lock:
            job.remaining -= 1
            last = job.remaining == 0
        if last:
            self._finish_job(job)

    def _fetch_span(self, win: _Window, pack_id: str, start: int, end: int, items) -> None:
        try:
            if self.cancel.is_set() or self._stop.is_set():
                return
            codec = self._codec()

            def decode(d: bytes, rec: memoryview) -> memoryview:
                # placed so that the first piece's whole blocks are page-aligned in memory
                _job, file_off, chunk_off, _take = win.want[d][0]
                return codec.decode_into(d, rec, self._buffer("scratch", self._max_chunk),
                                         (file_off - chunk_off) % ALIGN, self._buffer("work", self._max_chunk))

            for d, data, err in read_span(self.cs, codec, pack_id, start, end, items, decode=decode):
                if err is not None:
                    self._chunk_failed(win, d, f"chunk {d.hex()[:16]}: {err.message}")
                    continue
                mv = memoryview(data)
                n = 0
                for job, file_off, chunk_off, take in win.want[d]:
                    if job.failed is None:
                        try:
                            if job.dfd >= 0:
                                if not pwrite_split(job.fd, job.dfd, mv[chunk_off:chunk_off + take], file_off,
                                                    self._bounce):
                                    self._direct = False  # refused here: no second descriptors from now on
                            else:
                                os.pwrite(job.fd, mv[chunk_off:chunk_off + take], file_off)
                            n += take
                        except OSError as exc:
                            with self._lock:
                                job.failed = f"write error: {exc.strerror or exc}"
                                self.errors.append((job.rel, job.failed))
                    self._job_step(job)
                with self._lock:
                    self.written += n
        except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
            with self._lock:
                self._fatal = self._fatal or exc
        finally:
            with self._lock:
                win.pending_spans -= 1
                last = win.pending_spans == 0
            if last:
                win.done.set()

    def _buffer(self, name: str, size: int):
        """This thread's aligned buffer ``name`` (decoded chunks, or the bounce buffer of direct
        writes), grown to ``size``: mapped once, its pages faulted in once."""
        buf = getattr(self._tls, name, None)
        if buf is None or len(buf) < size:
            buf = aligned_buffer(max(size, 4 << 20))
            setattr(self._tls, name, buf)
        return buf

    def _bounce(self, size: int):
        return self._buffer("bounce", size)

    def _open_direct(self, fd: int, e: Entry) -> int:
        """The O_DIRECT descriptor for a big file (-1 where that is refused). The file gets its final
        size first, so direct writes never extend it (extending direct writes serialize on the inode)."""
        if not self._direct or e.size < DIRECT_MIN:
            return -1
        dfd = reopen_direct(fd)
        if dfd < 0:
            self._direct = False
        elif e.extents is None:
            os.ftruncate(fd, e.size)
        return dfd

    def _submit(self, win: _Window) -> None:
        if not win.jobs:
            win.done.set()
            return
        spans = self._plan(win)
        win.pending_spans = len(spans)
        if not spans:
            win.done.set()
            return
        for pack_id, start, end, items in spans:
            self._pool.submit(self._fetch_span, win, pack_id, start, end, items)

    def _wait(self, win: _Window) -> None:
        while not win.done.wait(0.2):
            self._report()
            if self.cancel.is_set():
                raise RestoreCancelled(f"restore of {self.backup_id} was cancelled")
        if self._fatal is not None:
            raise self._fatal

    # -- creating entries ---------------------------------------------------------------------------
    def _exists(self, name: bytes, dfd: int) -> os.stat_result | None:
        try:
            return os.lstat(name, dir_fd=dfd)
        except FileNotFoundError:
            return None

    def _make_room(self, name: bytes, dfd: int, rel: bytes) -> None:
        """In a non-empty target, replace an existing non-directory at ``name``."""
        if not self.allow_nonempty:
            return
        st = self._exists(name, dfd)
        if st is None:
            return
        if stat.S_ISDIR(st.st_mode):
            raise InvalidParameter(f"cannot restore {show(rel)}: a directory is in the way")
        os.unlink(name, dir_fd=dfd)

    def _open_target(self) -> int:
        if self.target_fd is not None:
            fd = os.dup(self.target_fd)
        else:
            try:
                os.makedirs(self.target, exist_ok=True)
            except FileExistsError:
                raise InvalidParameter(f"restore target {self.target} exists and is not a directory") from None
            fd = os.open(self.target, _DIR_FLAGS)
        if not self.allow_nonempty and os.listdir(fd):
            os.close(fd)
            raise InvalidParameter(f"restore target {self.target} is not empty")
        return fd

    def run(self) -> TreeRestoreResult:
        t0 = time.monotonic()
        cs = self.cs
        dix = load_index(cs, self.backup_id)
        reader = CatalogReader(cs, dix)
        records = reader.entries(self.sub_key)
        try:
            first = next(records, None)
        finally:
            records.close()  # (stops its reader threads: nothing of ours runs when the parts fork)
        if first is None or not in_subtree(path_key(first.path), self.sub_key) or first.path != self.sub:
            raise not_found(self.backup_id, self.sub)
        self._dix = dix
        self.total = int(dix.stats.get("total_bytes", 0)) if not self.sub else self._subtree_bytes(reader)
        self._index = cs.reader_index(refresh=True)
        self._max_chunk = cs.codec.max_chunk + ALIGN
        root_fd = self._open_target()
        try:
            self._umask = _umask()
            # Files we create are ours (uid, gid) unless the target is a set-group-id directory (then
            # every directory below inherits it, and new files its group). Our own directories get
            # their final modes only at the end, after every file was created.
            self._plain_owner = (None if os.fstat(root_fd).st_mode & stat.S_ISGID
                                 else (os.geteuid(), os.getegid()))
            parts = self.processes_used = self._parts()
            dirs = self._restore_parts(root_fd, parts) if parts > 1 else self._restore_part(root_fd, 0, 1)
            for rel, meta in dirs.deepest_first():
                self._finish_dir(root_fd, rel, meta)
            if self.sync:
                _syncfs(root_fd)
        finally:
            os.close(root_fd)
        if self.errors:
            first_rel, first_msg = self.errors[0]
            raise DataCorruption(f"restore of {self.backup_id}: {len(self.errors)} file(s) could not be restored "
                                 f"intact (damaged or missing chunks); first: {show(first_rel)}: {first_msg}")
        if self.progress is not None:
            self.progress(self.total, self.total)  # (holes of sparse files are never "written")
        return TreeRestoreResult(
            backup_id=self.backup_id, target=self.target, files=self.counts["files"], dirs=self.counts["dirs"],
            symlinks=self.counts["symlinks"], specials=self.counts["specials"], hardlinks=self.counts["hardlinks"],
            bytes_written=self.written, warnings=self.warnings, duration=time.monotonic() - t0,
            processes=self.processes_used, parts_peak_rss=self.parts_peak_rss,
        )

    # -- several processes ----------------------------------------------------------------------------
    def _parts(self) -> int:
        """How many processes restore: one unless asked for more, the restore is big enough to be
        worth it, ``fork`` exists, and the store is safe to use from a forked child (local files;
        an S3 client's connection pool is not)."""
        if self.processes <= 1 or self.total < PARALLEL_MIN or not hasattr(os, "fork"):
            return 1
        return self.processes if self.cs.store.capabilities.fork_safe else 1

    def _restore_parts(self, root_fd: int, parts: int) -> _DirList:
        """Restore in ``parts`` processes -- this one and ``parts - 1`` forked children -- each the
        whole pipeline (catalog, creation, fetching, writing) for its share of the entries
        (:meth:`_restore_part`); this process takes share 0, which also lists the directories.

        Why processes: the restore is bound by Python's GIL, not by the disk or the CPU -- the thread
        that creates files waits for the GIL after every system call while the span workers hand it
        around, on a 2-core VM about half of all cycles idle (30k-file tree: 3.4 s wall for 3.6 s of
        CPU). Two processes have two GILs. Each part posts its written bytes in a shared page
        (progress); a child hands its result through a pipe; a cancel or an error kills them.
        (Forking children only, with this process waiting, cost a third process's memory.)"""
        import multiprocessing

        shared = mmap.mmap(-1, 8 * (parts + 1))  # bytes written per part, then the next group to claim
        try:
            self._claim_lock = multiprocessing.get_context("fork").Lock()
        except OSError:  # no POSIX semaphores here (e.g. a container without /dev/shm): one process
            self.processes_used = 1
            return self._restore_part(root_fd, 0, 1)
        self._parent_pid = os.getpid()
        children: list[tuple[int, int]] = []
        unread: set[int] = set()  # result pipes still open (closed by _collect at their end)
        try:
            for part in range(1, parts):
                r, w = os.pipe()
                try:
                    pid = os.fork()
                except OSError:
                    os.close(r)
                    os.close(w)
                    if children:
                        raise
                    self.processes_used = 1  # could not fork at all: one process
                    return self._restore_part(root_fd, 0, 1)
                if pid == 0:  # the child: never returns
                    os.close(r)
                    for other in unread:
                        os.close(other)
                    self._child(root_fd, part, parts, shared, w)
                os.close(w)
                children.append((pid, r))
                unread.add(r)
            self._shared = (shared, 0)
            dirs = self._restore_part(root_fd, 0, parts)
            outputs = self._collect(children, shared, unread)
        except BaseException:
            for pid, _r in children:
                kill_and_reap(pid)
            for r in unread:
                os.close(r)
            raise
        finally:
            self._shared = None
        reaped = [os.wait4(pid, 0) for pid, _r in children]  # (all reaped before any raise)
        statuses = [status for _pid, status, _ru in reaped]
        self.parts_peak_rss = [ru.ru_maxrss * 1024 for _pid, _status, ru in reaped]
        fatal = []
        for (pid, _r), data, status in zip(children, outputs, statuses, strict=True):
            try:
                out = pickle.loads(data)
            except Exception:  # noqa: BLE001 - no (complete) result: the child died
                raise RuntimeError(f"restore process {pid} ended without a result "
                                   f"({exit_reason(status)})") from None
            if "fatal" in out:
                fatal.append(out["fatal"])
                continue
            for k, v in out["counts"].items():
                self.counts[k] += v
            self.written += out["written"]
            self.warnings += out["warnings"][:MAX_WARNINGS - len(self.warnings)]
            self.errors += out["errors"]
        if fatal:
            raise fatal[0]
        return dirs

    def _claim(self, group: int) -> bool:
        """Whether this part restores ``group``: the first part to reach a group takes it. Every part
        passes every group in catalog order, so a part busy with a big group finds the next ones
        taken by the others: the work balances itself (round-robin shares left one part idle for a
        third of the time)."""
        if self._shared is None:
            return True
        shared, _slot = self._shared
        at = 8 * (len(shared) // 8 - 1)
        with self._claim_lock:
            nxt = struct.unpack_from("q", shared, at)[0]
            if nxt != group:
                return False
            struct.pack_into("q", shared, at, group + 1)
            return True

    def _child(self, root_fd: int, part: int, parts: int, shared: mmap.mmap, w: int) -> None:
        code = 0
        try:
            die_with_parent(self._parent_pid)
            self._shared = (shared, part)
            self._in_child = True
            self._restore_part(root_fd, part, parts)
            out = {"counts": self.counts, "written": self.written,
                   "warnings": self.warnings, "errors": self.errors}
        except BaseException as exc:  # noqa: BLE001 - handed to the parent
            code = 1
            out = {"fatal": exc}
        try:
            try:
                data = pickle.dumps(out)
            except Exception as exc:  # noqa: BLE001 - an exception that does not pickle
                data = pickle.dumps({"fatal": RuntimeError(f"restore process failed: {out.get('fatal', exc)!r}")})
            mv = memoryview(data)
            while mv:
                mv = mv[os.write(w, mv):]
        finally:
            os._exit(code)  # no atexit handlers, no finalizers of the parent's objects

    def _collect(self, children: list[tuple[int, int]], shared: mmap.mmap, unread: set[int]) -> list[bytearray]:
        """Read every child's result (closing each pipe at its end and dropping it from ``unread``)
        while reporting their progress; a cancel raises (the caller kills them)."""
        bufs = {r: bytearray() for _pid, r in children}
        poller = select.poll()  # (not select(): a service may hold descriptors above FD_SETSIZE)
        for r in bufs:
            poller.register(r, select.POLLIN)
        while unread:
            for r, _ev in poller.poll(200):
                chunk = os.read(r, 1 << 16)
                if chunk:
                    bufs[r] += chunk
                else:
                    poller.unregister(r)
                    unread.discard(r)
                    os.close(r)
            if self.cancel.is_set():
                raise RestoreCancelled(f"restore of {self.backup_id} was cancelled")
            self._report()
        return [bufs[r] for _pid, r in children]

    # -- one process's share ------------------------------------------------------------------------
    def _restore_part(self, root_fd: int, part: int, parts: int) -> _DirList:
        """Restore the entries of share ``part`` of ``parts`` (all of them when ``parts`` is 1) and
        return the directories (share 0 only) for the caller to finish last.

        Shares are consecutive groups of entries (GROUP_BYTES of file data or GROUP_FILES entries,
        in catalog order, so each process reads its own runs of packs), each taken by the first
        process to reach it (:meth:`_claim`); every process walks the whole catalog and creates the
        directories it passes through (another one may have made them already), only share 0
        reports on them. A hard link is made by the process that restored its first name."""
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (OSError, ValueError):
            soft = 1024
        self.window_files = max(16, min(WINDOW_FILES, (soft if soft > 0 else 1024) // 4))
        self._fatal: BaseException | None = None
        self._direct = True  # until the target's file system refuses O_DIRECT
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="tree-restore")
        lead = part == 0
        shared_dirs = parts > 1 or self.allow_nonempty
        group = group_bytes = group_n = 0
        mine = self._claim(0)
        stack: list[tuple[bytes, int]] = [(b"", root_fd)]
        dirs = _DirList()
        links: dict[tuple[int, int], tuple[bytes, bool]] = {}
        win = _Window()
        inflight: list[_Window] = []
        records = CatalogReader(self.cs, self._dix).entries(self.sub_key)
        try:
            for n, e in enumerate(records):
                key = path_key(e.path)
                if not in_subtree(key, self.sub_key):
                    break
                if n % 256 == 0:
                    if self.cancel.is_set():
                        raise RestoreCancelled(f"restore of {self.backup_id} was cancelled")
                    self._report()
                _check_components(e.path)
                rel = self._rel(e.path)
                if rel == b"":
                    if e.type != DIR:
                        raise DataCorruption(f"backup {self.backup_id}: the root is not a directory")
                    if lead:
                        dirs.append(rel, e)
                        self.counts["dirs"] += 1
                    continue
                parent, _, name = rel.rpartition(b"/")
                while stack and stack[-1][0] != parent:
                    _p, fd = stack.pop()
                    if fd != root_fd and fd >= 0:
                        os.close(fd)
                if not stack:
                    raise DataCorruption(f"backup {self.backup_id}: {show(e.path)} has no parent directory "
                                         "in the catalog")
                dfd = stack[-1][1]
                if dfd < 0:
                    if e.type == DIR:
                        stack.append((rel, -1))  # inside a directory we could not create: skipped
                    continue
                if e.type != DIR:
                    if group_bytes >= GROUP_BYTES or group_n >= GROUP_FILES:
                        group += 1
                        group_bytes = group_n = 0
                        mine = self._claim(group)
                    group_n += 1
                    if e.type == FILE:
                        group_bytes += e.size
                try:
                    if e.type == DIR:
                        try:
                            os.mkdir(name, 0o700, dir_fd=dfd)
                        except FileExistsError:
                            if not shared_dirs:
                                raise
                        try:
                            fd = os.open(name, _DIR_FLAGS, dir_fd=dfd)  # O_NOFOLLOW: never a symlink
                        except OSError as exc:
                            stack.append((rel, -1))
                            if lead:
                                self.warn(rel, f"cannot restore directory (and its contents): {exc.strerror or exc}")
                            continue
                        stack.append((rel, fd))
                        if lead:
                            dirs.append(rel, e)
                            self.counts["dirs"] += 1
                    elif e.type == FILE:
                        if e.hardlinked and (e.ino, e.rdev) in links:
                            src, ours = links[(e.ino, e.rdev)]
                            if ours:
                                self._make_room(name, dfd, rel)
                                os.link(src, name, src_dir_fd=root_fd, dst_dir_fd=dfd, follow_symlinks=False)
                                self.counts["hardlinks"] += 1
                            continue
                        if e.hardlinked:
                            links[(e.ino, e.rdev)] = (rel, mine)  # (inode, device) of the source: see backup.py
                        if not mine:
                            continue
                        self._make_room(name, dfd, rel)
                        mode = self._create_mode(e)
                        fd = os.open(name, _FILE_FLAGS, mode, dir_fd=dfd)
                        self.counts["files"] += 1
                        if e.extents is not None:
                            os.ftruncate(fd, e.size)
                        pieces = list(e.chunk_offsets())
                        job = _FileJob(fd, e, rel, len(pieces), mode=mode)
                        if not pieces:
                            if e.size and e.extents is None:
                                os.ftruncate(fd, e.size)
                            self._finish_job(job)
                            continue
                        job.dfd = self._open_direct(fd, e)
                        for d, take, file_off, chunk_off in pieces:
                            win.want.setdefault(d, []).append((job, file_off, chunk_off, take))
                        win.jobs.append(job)
                        win.fds += 1 if job.dfd < 0 else 2
                        win.nbytes += e.size
                        if win.nbytes >= WINDOW_BYTES or win.fds >= self.window_files:
                            self._submit(win)
                            inflight.append(win)
                            win = _Window()
                            if len(inflight) >= 2:
                                self._wait(inflight.pop(0))
                    elif not mine:
                        continue
                    elif e.type == SYMLINK:
                        self._make_room(name, dfd, rel)
                        os.symlink(e.link, name, dir_fd=dfd)
                        self.counts["symlinks"] += 1
                        self._finish_path(name, dfd, e, rel, symlink=True)
                    else:
                        self._make_room(name, dfd, rel)
                        if self._make_special(name, dfd, e, rel):
                            self.counts["specials"] += 1
                            self._finish_path(name, dfd, e, rel, symlink=False)
                except (InvalidParameter, DataCorruption):
                    raise
                except OSError as exc:
                    self.warn(rel, f"cannot restore: {exc.strerror or exc}", True)
            self._submit(win)
            inflight.append(win)
            for w in inflight:
                self._wait(w)
            inflight = []
            self._pool.shutdown(wait=True)
        except BaseException:
            self._stop.set()  # stops the span workers early
            self._pool.shutdown(wait=True, cancel_futures=True)
            for w in inflight + [win]:
                for job in w.jobs:
                    if job.remaining > 0:
                        try:
                            job.close()
                        except OSError:
                            pass
            raise
        finally:
            records.close()
            while len(stack) > 1:
                fd = stack.pop()[1]
                if fd >= 0:
                    os.close(fd)
        return dirs

    def _subtree_bytes(self, reader: CatalogReader) -> int:
        total = 0
        for e in reader.entries(self.sub_key):
            if not in_subtree(path_key(e.path), self.sub_key):
                break
            if e.type == FILE:
                total += e.size
        return total

    def _make_special(self, name: bytes, dfd: int, e: Entry, rel: bytes) -> bool:
        perm = stat.S_IMODE(e.mode)
        try:
            if e.type == FIFO:
                os.mkfifo(name, perm, dir_fd=dfd)
            elif e.type == SOCK:
                os.mknod(name, stat.S_IFSOCK | perm, dir_fd=dfd)
            elif e.type in (CHR, BLK):
                os.mknod(name, (stat.S_IFCHR if e.type == CHR else stat.S_IFBLK) | perm, e.rdev, dir_fd=dfd)
            else:
                return False
        except PermissionError as exc:
            self.warn(rel, f"cannot create {e.type_name}: {exc.strerror or exc}", False)
            return False
        return True

    def _finish_path(self, name: bytes, dfd: int, e: Entry, rel: bytes, *, symlink: bool) -> None:
        try:
            if self.owners:
                os.chown(name, e.uid, e.gid, dir_fd=dfd, follow_symlinks=False)
            if not symlink:
                os.chmod(name, stat.S_IMODE(e.mode), dir_fd=dfd)
        except OSError as exc:
            self.warn(rel, f"cannot set owner/mode: {exc.strerror or exc}", False)
        if e.xattrs:
            self._set_xattrs(f"/proc/self/fd/{dfd}/".encode() + name, e, rel, follow=False)
        try:
            os.utime(name, ns=(e.atime_ns or e.mtime_ns, e.mtime_ns), dir_fd=dfd, follow_symlinks=False)
        except OSError as exc:
            self.warn(rel, f"cannot set times: {exc.strerror or exc}", False)

    def _finish_dir(self, root_fd: int, rel: bytes, e: _DirMeta) -> None:
        try:
            fd = os.open(rel, _DIR_FLAGS, dir_fd=root_fd) if rel else os.dup(root_fd)
        except OSError as exc:
            self.warn(rel, f"cannot set directory metadata: {exc.strerror or exc}", False)
            return
        try:
            self._finish_fd(fd, e, rel)
        finally:
            os.close(fd)


def restore_tree(
    repo_or_chunkstore,
    backup_id: str,
    target_dir: str | os.PathLike,
    *,
    subpath: str | bytes | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    allow_nonempty: bool = False,
    owners: bool | None = None,
    workers: int = 3,
    sync: bool = True,
    processes: int | None = None,
    target_fd: int | None = None,
) -> TreeRestoreResult:
    """Restore tree backup ``backup_id`` into ``target_dir`` (created if missing).

    Recreates contents, modes, owners (``owners``: default when running as root), atime/mtime,
    symlinks, hard links, xattrs, sparse holes, empty directories, fifos/sockets (devices when root).
    The target must be empty unless ``allow_nonempty`` (then existing non-directories at restored
    paths are replaced and directories merged). ``subpath`` ('/'-rooted or relative path inside the
    backup) restores one file or directory as ``target_dir/<its name>``; the whole tree goes directly
    into ``target_dir``. ``sync``: one ``syncfs`` at the end so the restored data is durable.
    ``processes``: how many processes share a big restore (default: one per CPU, at most two; see
    ``TreeRestore._restore_parts``), each with ``workers`` threads.
    ``progress(done_bytes, total_bytes)``; ``cancel`` -> ``RestoreCancelled`` (the target then holds
    a partial tree). ``target_fd``: the target directory already open (checked by the caller); then
    ``target_dir`` only names it and nothing is looked up by path.

    Raises NotFound (no such backup, or ``subpath`` not in it), InvalidParameter (not a tree backup,
    target not empty or not a directory, bad ``subpath``), DataCorruption (damaged data: the files
    affected are named; a catalog that tries to escape the target is refused).
    """
    cs = chunkstore_of(repo_or_chunkstore)
    sub = parse_path(subpath)
    limit_heap_growth()
    return TreeRestore(
        cs, backup_id, os.fspath(target_dir), sub, progress=progress, cancel=cancel, allow_nonempty=allow_nonempty,
        owners=(os.geteuid() == 0) if owners is None else owners, workers=max(1, workers), sync=sync,
        processes=min(2, os.cpu_count() or 1) if processes is None else max(1, processes), target_fd=target_fd,
    ).run()
