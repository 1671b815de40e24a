"""The restore of one tree backup: walk the catalog in order, create each entry (directories first,
then their contents), hand file contents to the fetcher and finish directories last, deepest first."""

from __future__ import annotations

import os
import resource
import stat
import threading
import time
from dataclasses import dataclass, field

from ....system.heap import limit_heap_growth
from ...errors import Damaged, InvalidArgument, RestoreCancelled
from ..catalog import CatalogReader
from ..common import Progress, chunkstore_of, in_subtree, load_index, not_found, parse_path, show
from ..entry import BLK, CHR, DIR, FIFO, FILE, SOCK, SYMLINK, Entry, RecordError, decode, path_key, record_header
from ..memory import trim
from ..results import TreeRestoreResult
from .fetch import WINDOW_FILES, FileJob, Window, WindowFetcher
from .metadata import BackgroundFlush, DirList, MetadataWriter, syncfs
from .parts import ForkedParts
from .paths import DIR_FLAGS, FILE_FLAGS, check_entry_name, link_restored, make_room, open_target
from .tally import Tally

FLUSH_BYTES = 8 << 20  # with ``sync``: written back in the background every this many bytes (BackgroundFlush)
LAZY = -2  # a directory on the stack of a part other than the lead, not made or opened until it needs it


@dataclass
class _Part:
    """One process's walk through the catalog: the open directories on the way down, what it made."""

    root_fd: int
    lead: bool  # share 0: lists the directories and reports on them
    shared_dirs: bool  # directories may exist already (made by another part, or in a non-empty target)
    fetcher: WindowFetcher
    mine: bool  # whether the current group of entries is this part's
    stack: list[tuple[bytes, int]] = field(default_factory=list)  # (rel, fd); fd -1: not restored, LAZY
    dirs: DirList = field(default_factory=DirList)
    # (inode, device) -> [first name, restored by this part, names seen, (st_dev, st_ino) of the file
    # made for it]: dropped once all were seen
    links: dict[tuple[int, int], list] = field(default_factory=dict)
    win: Window = field(default_factory=Window)
    inflight: list[Window] = field(default_factory=list)
    group: int = 0
    group_bytes: int = 0
    group_n: int = 0


@dataclass(frozen=True)
class RestoreOptions:
    """How a tree restore runs (see :func:`restore_tree`)."""

    allow_nonempty: bool = False
    owners: bool = False
    workers: int = 3
    sync: bool = True
    processes: int = 1


class TreeRestore(ForkedParts):
    _flush: BackgroundFlush | None = None  # this process's (each part has its own)
    _unflushed = 0  # bytes finished since the last kick (approximate: files finish in several threads)

    def __init__(self, cs, backup_id: str, target: str, subpath: bytes, *, options: RestoreOptions,
                 progress: Progress | None = None, cancel: threading.Event | None = None,
                 target_fd: int | None = None):
        self.cs = cs
        self.target_fd = target_fd
        self.backup_id = backup_id
        self.target = os.path.abspath(target)
        self.sub = subpath
        self.sub_key = path_key(subpath)
        self.cut = len(subpath.rsplit(b"/", 1)[0]) + 1 if b"/" in subpath else 0
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.allow_nonempty = options.allow_nonempty
        self.owners = options.owners
        self.workers = options.workers
        self.sync = options.sync
        self.processes = options.processes
        self.processes_used = 1
        self.parts_peak_rss: list[int] = []
        self.tally = Tally()
        self.total = 0
        self._last_report = 0.0

    def _report(self, force: bool = False) -> None:
        trim()
        done = self.tally.written
        if self._shared is not None:  # restoring in parts: each posts its bytes, the parent reports the sum
            done = self._post_progress(self.tally.written)
            if done is None:
                return
        if self.progress is None:
            return
        now = time.monotonic()
        if force or now - self._last_report >= 0.2:
            self._last_report = now
            self.progress(min(done, self.total), self.total)

    def run(self) -> TreeRestoreResult:
        t0 = time.monotonic()
        self._dix = load_index(self.cs, self.backup_id, refs=False)
        reader = CatalogReader(self.cs, self._dix)
        records = reader.entries(self.sub_key)
        try:
            first = next(records, None)
        finally:
            records.close()  # (stops its reader threads: nothing of ours runs when the parts fork)
        if first is None or not in_subtree(path_key(first.path), self.sub_key) or first.path != self.sub:
            raise not_found(self.backup_id, self.sub)
        self.total = int(self._dix.stats.get("total_bytes", 0)) if not self.sub else self._subtree_bytes(reader)
        self._index = self.cs.reader_index(refresh=True)
        root_fd = open_target(self.target, target_fd=self.target_fd, allow_nonempty=self.allow_nonempty)
        try:
            self.meta = MetadataWriter(self.tally, owners=self.owners, root_fd=root_fd)
            parts = self.processes_used = self._parts()
            dirs = self._restore_parts(root_fd, parts) if parts > 1 else self._restore_part(root_fd, 0, 1)
            for rel, meta in dirs.deepest_first():
                self.meta.finish_dir(root_fd, rel, meta)
            if self.sync:
                syncfs(root_fd)
        finally:
            os.close(root_fd)
        return self._result(time.monotonic() - t0)

    def _result(self, duration: float) -> TreeRestoreResult:
        t = self.tally
        if t.errors:
            first_rel, first_msg = t.errors[0]
            raise Damaged(f"restore of {self.backup_id}: {t.error_count} file(s) could not be restored "
                          f"intact (damaged or missing chunks); first: {show(first_rel)}: {first_msg}",
                          backup_id=self.backup_id)
        if self.progress is not None:
            self.progress(self.total, self.total)  # (holes of sparse files are never "written")
        return TreeRestoreResult(
            backup_id=self.backup_id, target=self.target, files=t.counts["files"], dirs=t.counts["dirs"],
            symlinks=t.counts["symlinks"], specials=t.counts["specials"], hardlinks=t.counts["hardlinks"],
            bytes_written=t.written, warnings=t.warnings, duration=duration,
            processes=self.processes_used, parts_peak_rss=self.parts_peak_rss, file_bytes=t.file_bytes,
        )

    def _subtree_bytes(self, reader: CatalogReader) -> int:
        total = 0
        for e in reader.entries(self.sub_key):
            if not in_subtree(path_key(e.path), self.sub_key):
                break
            if e.type == FILE:
                total += e.size
        return total

    # -- one process's share ------------------------------------------------------------------------
    def _restore_part(self, root_fd: int, part: int, parts: int) -> DirList:
        """Restore the entries of share ``part`` of ``parts`` (all of them when ``parts`` is 1) and
        return the directories (share 0 only) for the caller to finish last.

        Shares are consecutive groups of entries (GROUP_BYTES of file data or GROUP_FILES entries,
        in catalog order, so each process reads its own runs of packs), each taken by the first
        process to reach it (:meth:`_claim`); every process walks the whole catalog, decoding only
        the records it restores (and directories and hard-linked files), share 0 makes every directory
        and reports on them, the others make (or find) a directory only when they restore something
        in it. A hard link is made by the process that restored its first name."""
        try:
            soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        except (OSError, ValueError):
            soft = 1024
        self.window_files = max(16, min(WINDOW_FILES, (soft if soft > 0 else 1024) // 4))
        fetcher = WindowFetcher(self.cs, self._index, self.tally, workers=self.workers, cancel=self.cancel,
                                backup_id=self.backup_id, on_file_done=self._finish_job)
        st = _Part(root_fd=root_fd, lead=part == 0, shared_dirs=parts > 1 or self.allow_nonempty, fetcher=fetcher,
                   mine=self._claim(0), stack=[(b"", root_fd)],
                   dirs=DirList(getattr(self.cs, "spill_dir", None)))  # (a remote store may have none)
        records = CatalogReader(self.cs, self._dix).records(self.sub_key, keyed=True)
        self._flush = BackgroundFlush(root_fd) if self.sync else None
        self._unflushed = 0
        try:
            for n, (key, rec) in enumerate(records):
                if not in_subtree(key, self.sub_key):
                    break
                if n % 256 == 0:
                    if self.cancel.is_set():
                        raise RestoreCancelled(f"restore of {self.backup_id} was cancelled")
                    self._report()
                self._restore_record(st, rec)
            fetcher.submit(st.win)
            st.inflight.append(st.win)
            for w in st.inflight:
                fetcher.wait(w, self._report)
            st.inflight = []
            fetcher.close()
        except BaseException:
            fetcher.abort(st.inflight + [st.win])
            raise
        finally:
            if self._flush is not None:
                self._flush.stop()
            records.close()
            while len(st.stack) > 1:
                fd = st.stack.pop()[1]
                if fd >= 0:
                    os.close(fd)
        return st.dirs

    def _restore_record(self, st: _Part, rec) -> None:
        """Count a catalog record into its group and restore it -- unless it is another part's: a
        file, symlink or special file of a group another process claimed is passed over from its
        fixed header alone (every process walks the whole catalog, and decoding every record in each
        cost as much CPU as the Python of creating their own shares)."""
        typ, _fl, _r, _mode, _uid, _gid, size, _mt, _ct, _at, _ino, nlink, _rdev = record_header(rec)
        if typ != DIR:
            self._next_in_group(st, typ, size)
            if not st.mine and (typ != FILE or nlink <= 1):  # (hard links: every part tracks the groups)
                return
        try:
            e = decode(rec)
        except RecordError as exc:
            raise Damaged(f"backup {self.backup_id}: {exc}", backup_id=self.backup_id) from None
        self._restore_entry(st, e)

    def _restore_entry(self, st: _Part, e: Entry) -> None:
        rel = e.path[self.cut:]
        if rel == b"":
            if e.type != DIR:
                raise Damaged(f"backup {self.backup_id}: the root is not a directory", backup_id=self.backup_id)
            if st.lead:
                st.dirs.append(rel, e)
                self.tally.counts["dirs"] += 1
            return
        parent, sep, name = rel.rpartition(b"/")
        # Only the last component needs checking: the parent must be the directory on top of the
        # stack, whose own name was checked when it was pushed (and so on up to the target).
        check_entry_name(name, e.path, leading_slash=bool(sep) and not parent)
        while st.stack and st.stack[-1][0] != parent:
            _p, fd = st.stack.pop()
            if fd != st.root_fd and fd >= 0:
                os.close(fd)
        if not st.stack:
            raise Damaged(f"backup {self.backup_id}: {show(e.path)} has no parent directory in the catalog",
                          backup_id=self.backup_id)
        dfd = st.stack[-1][1]
        if dfd == LAZY:
            if e.type == DIR:
                st.stack.append((rel, LAZY))
                return
            dfd = self._open_lazy(st)
        if dfd < 0:
            if e.type == DIR:
                st.stack.append((rel, -1))  # inside a directory we could not create: skipped
            return
        try:
            if e.type == DIR:
                self._make_dir(st, name, dfd, rel, e)
            elif e.type == FILE:
                self._make_file(st, name, dfd, rel, e)
            elif st.mine:
                self._make_other(name, dfd, rel, e)
        except (InvalidArgument, Damaged):
            raise
        except OSError as exc:
            self.tally.warn(rel, f"cannot restore: {exc.strerror or exc}", True)

    def _next_in_group(self, st: _Part, typ: int, size: int) -> None:
        """Count an entry (not a directory) into the current group of entries; a full group ends and
        the next is claimed. Every entry counts, restored or not (one inside a directory this part
        could not create too), so that every part cuts the groups at the same entries."""
        if self._group_full(st.group_bytes, st.group_n):
            st.group += 1
            st.group_bytes = st.group_n = 0
            st.mine = self._claim(st.group)
        st.group_n += 1
        if typ == FILE:
            st.group_bytes += size

    def _make_room(self, name: bytes, dfd: int, rel: bytes) -> None:
        if self.allow_nonempty:
            make_room(name, dfd, rel)

    def _make_dir(self, st: _Part, name: bytes, dfd: int, rel: bytes, e: Entry) -> None:
        """Make and open a directory -- in the lead part. The others make (or find) a directory only
        when they restore something in it (:meth:`_open_lazy`): each made and opened every directory
        of the tree, the lead's work over again (a third of their system calls on small files)."""
        if not st.lead:
            st.stack.append((rel, LAZY))
            return
        try:
            fd = self._mkdir_open(st, name, dfd)
        except OSError as exc:
            st.stack.append((rel, -1))
            self.tally.warn(rel, f"cannot restore directory (and its contents): {exc.strerror or exc}")
            return
        st.stack.append((rel, fd))
        st.dirs.append(rel, e)
        self.tally.counts["dirs"] += 1

    @staticmethod
    def _mkdir_open(st: _Part, name: bytes, dfd: int) -> int:
        try:
            os.mkdir(name, 0o700, dir_fd=dfd)
        except FileExistsError:
            if not st.shared_dirs:
                raise
        return os.open(name, DIR_FLAGS, dir_fd=dfd)  # O_NOFOLLOW: never a symlink

    def _open_lazy(self, st: _Part) -> int:
        """Make (or find, made by another part) and open the directories on the stack left LAZY, top
        down; the descriptor of the deepest, -1 if one could not be (the lead warns about it)."""
        i = len(st.stack) - 1
        while st.stack[i][1] == LAZY:
            i -= 1
        for j in range(i + 1, len(st.stack)):
            rel, parent_fd = st.stack[j][0], st.stack[j - 1][1]
            fd = -1
            if parent_fd >= 0:
                try:
                    fd = self._mkdir_open(st, rel.rpartition(b"/")[2], parent_fd)
                except OSError:
                    pass
            st.stack[j] = (rel, fd)
        return st.stack[-1][1]

    def _make_file(self, st: _Part, name: bytes, dfd: int, rel: bytes, e: Entry) -> None:
        if e.hardlinked and (e.ino, e.rdev) in st.links:
            link = st.links[(e.ino, e.rdev)]
            src, ours = link[0], link[1]
            link[2] += 1
            if link[2] >= e.nlink:
                del st.links[(e.ino, e.rdev)]
            if ours:
                self._make_room(name, dfd, rel)
                link_restored(st.root_fd, src, link[3], name, dfd)
                self.tally.counts["hardlinks"] += 1
            return
        if e.hardlinked:  # (inode, device) of the source: see backup.py; later names link to the file made
            link = st.links[(e.ino, e.rdev)] = [rel, st.mine, 1, None]
        if not st.mine:
            return
        self._make_room(name, dfd, rel)
        mode = self.meta.create_mode(e)
        fd = os.open(name, FILE_FLAGS, mode, dir_fd=dfd)
        if e.hardlinked:
            made = os.fstat(fd)
            link[3] = (made.st_dev, made.st_ino)
        self.tally.counts["files"] += 1
        self.tally.file_bytes += e.size
        if e.extents is not None:
            os.ftruncate(fd, e.size)
        pieces = list(e.chunk_offsets())
        job = FileJob(fd, e, rel, len(pieces), mode=mode)
        if not pieces:
            if e.size and e.extents is None:
                os.ftruncate(fd, e.size)
            self._finish_job(job)
            return
        job.dfd = st.fetcher.open_direct(fd, e)
        st.win.add(job, pieces)
        if st.win.full(self.window_files):
            st.fetcher.submit(st.win)
            st.inflight.append(st.win)
            st.win = Window()
            if len(st.inflight) >= 2:
                st.fetcher.wait(st.inflight.pop(0), self._report)

    def _make_other(self, name: bytes, dfd: int, rel: bytes, e: Entry) -> None:
        """A symlink (its target verbatim) or a special file."""
        self._make_room(name, dfd, rel)
        if e.type == SYMLINK:
            os.symlink(e.link, name, dir_fd=dfd)
            self.tally.counts["symlinks"] += 1
            self.meta.finish_path(name, dfd, e, rel, symlink=True)
        elif self._make_special(name, dfd, e, rel):
            self.tally.counts["specials"] += 1
            self.meta.finish_path(name, dfd, e, rel, symlink=False)

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
            self.tally.warn(rel, f"cannot create {e.type_name}: {exc.strerror or exc}", False)
            return False
        return True

    def _finish_job(self, job: FileJob) -> None:
        try:
            if job.failed is None:
                if self._flush is not None:
                    self._unflushed += job.entry.size
                    if self._unflushed >= FLUSH_BYTES:
                        self._unflushed = 0
                        self._flush.kick()
                self.meta.finish_fd(job.fd, job.entry, job.rel, job.mode != 0o600)
        finally:
            job.close()


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
    ``parts.py``), each with ``workers`` threads.
    ``progress(done_bytes, total_bytes)``; ``cancel`` -> ``RestoreCancelled`` (the target then holds
    a partial tree). ``target_fd``: the target directory already open (checked by the caller); then
    ``target_dir`` only names it and nothing is looked up by path.

    Raises Missing (no such backup, or ``subpath`` not in it), InvalidArgument (not a tree backup,
    target not empty or not a directory, bad ``subpath``), Damaged (damaged data: the files
    affected are named; a catalog that tries to escape the target is refused).
    """
    cs = chunkstore_of(repo_or_chunkstore)
    sub = parse_path(subpath)
    limit_heap_growth()
    options = RestoreOptions(
        allow_nonempty=allow_nonempty, owners=(os.geteuid() == 0) if owners is None else owners,
        workers=max(1, workers), sync=sync,
        processes=min(2, os.cpu_count() or 1) if processes is None else max(1, processes))
    return TreeRestore(cs, backup_id, os.fspath(target_dir), sub, options=options, progress=progress, cancel=cancel,
                       target_fd=target_fd).run()
