"""File contents of a restore: files gather into windows; a window's chunks are read as spans of packs
(``chunks.reader``), decoded into this thread's aligned buffers and written -- whole blocks of big files
with ``O_DIRECT`` (``system/aligned.py``) -- by a pool of threads. At most two windows are in flight."""

from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

from ....system.aligned import ALIGN, aligned_buffer, pwrite_split, reopen_direct
from ...chunks import seams
from ...chunks.reader import Span
from ...errors import RestoreCancelled
from ..entry import Entry
from .tally import Tally

WINDOW_BYTES = 64 << 20
WINDOW_FILES = 1024  # open descriptors per window (two windows in flight); lowered to fit RLIMIT_NOFILE
MAX_SPAN = 8 << 20
MAX_GAP = 256 << 10
# Files at least this big get their whole blocks written with O_DIRECT (``pwrite_split``); smaller
# ones are bundled pieces of one or a few blocks, where the second descriptor would cost more than
# the page-cache copy it saves.
DIRECT_MIN = 64 << 10


@dataclass
class FileJob:
    """A regular file being written: its descriptors and how many of its pieces are still to come."""

    fd: int
    entry: Entry
    rel: bytes
    remaining: int
    failed: str | None = None
    mode: int = 0o600  # what it was created with (see MetadataWriter.create_mode)
    dfd: int = -1  # a second, O_DIRECT descriptor for the file's whole blocks (-1: none)

    def close(self) -> None:
        if self.dfd >= 0:
            os.close(self.dfd)
        os.close(self.fd)


@dataclass
class Window:
    """Files whose contents are fetched together: digest -> (job, file offset, chunk offset, length)."""

    jobs: list[FileJob] = field(default_factory=list)
    fds: int = 0
    want: dict[bytes, list[tuple[FileJob, int, int, int]]] = field(default_factory=dict)
    nbytes: int = 0
    pending_spans: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def add(self, job: FileJob, pieces: list[tuple[bytes, int, int, int]]) -> None:
        for d, take, file_off, chunk_off in pieces:
            self.want.setdefault(d, []).append((job, file_off, chunk_off, take))
        self.jobs.append(job)
        self.fds += 1 if job.dfd < 0 else 2
        self.nbytes += job.entry.size

    def full(self, max_files: int) -> bool:
        return self.nbytes >= WINDOW_BYTES or self.fds >= max_files


class WindowFetcher:
    """Fetches windows with ``workers`` threads; ``on_file_done(job)`` once a file's last piece is
    written (or failed). A failed chunk fails its files (``tally.errors``); anything else is fatal and
    raised by :meth:`wait`."""

    def __init__(self, cs, index, tally: Tally, *, workers: int, cancel: threading.Event, backup_id: str,
                 on_file_done: Callable[[FileJob], None]):
        self.cs = cs
        self.index = index
        self.tally = tally
        self.cancel = cancel
        self.backup_id = backup_id
        self.on_file_done = on_file_done
        self.max_chunk = cs.codec.max_chunk + ALIGN
        self.fatal: BaseException | None = None
        self.direct = True  # until the target's file system refuses O_DIRECT
        self._stop = threading.Event()  # ours: stops the span workers on cancel *or* error
        self._tls = threading.local()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="tree-restore")

    # -- buffers and descriptors --------------------------------------------------------------------
    def _codec(self):
        c = getattr(self._tls, "codec", None)
        if c is None:
            c = self._tls.codec = self.cs.codec.clone()
        return c

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

    def open_direct(self, fd: int, e: Entry) -> int:
        """The O_DIRECT descriptor for a big file (-1 where that is refused). The file gets its final
        size first, so direct writes never extend it (extending direct writes serialize on the inode)."""
        if not self.direct or e.size < DIRECT_MIN:
            return -1
        dfd = reopen_direct(fd)
        if dfd < 0:
            self.direct = False
        elif e.extents is None:
            os.ftruncate(fd, e.size)
        return dfd

    # -- windows ------------------------------------------------------------------------------------
    def submit(self, win: Window) -> None:
        if not win.jobs:
            win.done.set()
            return
        spans = seams.plan_reads(self.cs, self.index, win.want,
                         lambda d: self._chunk_failed(win, d, "chunk is not in the repository"),
                         max_span=MAX_SPAN, max_gap=MAX_GAP)
        win.pending_spans = len(spans)
        if not spans:
            win.done.set()
            return
        for span in spans:
            self._pool.submit(self._fetch_span, win, span)

    def wait(self, win: Window, report: Callable[[], None]) -> None:
        while not win.done.wait(0.2):
            report()
            if self.cancel.is_set():
                raise RestoreCancelled(f"restore of {self.backup_id} was cancelled")
        if self.fatal is not None:
            raise self.fatal

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def abort(self, windows: list[Window]) -> None:
        """Stop the workers early and close the files still open."""
        self._stop.set()
        self._pool.shutdown(wait=True, cancel_futures=True)
        for w in windows:
            for job in w.jobs:
                if job.remaining > 0:
                    try:
                        job.close()
                    except OSError:
                        pass

    # -- the workers ----------------------------------------------------------------------------------
    def _chunk_failed(self, win: Window, d: bytes, msg: str) -> None:
        for job, _fo, _co, _n in win.want.get(d, ()):
            with self.tally.lock:
                if job.failed is None:
                    job.failed = msg
                    self.tally.error(job.rel, msg)
            self._job_step(job)

    def _job_step(self, job: FileJob) -> None:
        with self.tally.lock:
            job.remaining -= 1
            last = job.remaining == 0
        if last:
            self.on_file_done(job)

    def _fetch_span(self, win: Window, span: Span) -> None:
        try:
            if self.cancel.is_set() or self._stop.is_set():
                return
            codec = self._codec()

            def decode(d: bytes, rec: memoryview) -> memoryview:
                # placed so that the first piece's whole blocks are page-aligned in memory
                _job, file_off, chunk_off, _take = win.want[d][0]
                return codec.decode_into(d, rec, self._buffer("scratch", self.max_chunk),
                                         (file_off - chunk_off) % ALIGN, self._buffer("work", self.max_chunk))

            for d, data, err in seams.read_planned(self.cs, codec, span, decode=decode):
                if err is not None:
                    self._chunk_failed(win, d, f"chunk {d.hex()[:16]}: {err}")
                else:
                    self._write_chunk(win.want[d], memoryview(data))
        except BaseException as exc:  # noqa: BLE001 - surfaced by the main thread
            with self.tally.lock:
                self.fatal = self.fatal or exc
        finally:
            with self.tally.lock:
                win.pending_spans -= 1
                last = win.pending_spans == 0
            if last:
                win.done.set()

    def _write_chunk(self, pieces: list[tuple[FileJob, int, int, int]], mv: memoryview) -> None:
        n = 0
        for job, file_off, chunk_off, take in pieces:
            if job.failed is None:
                try:
                    if job.dfd >= 0:
                        if not pwrite_split(job.fd, job.dfd, mv[chunk_off:chunk_off + take], file_off, self._bounce):
                            self.direct = False  # refused here: no second descriptors from now on
                    else:
                        os.pwrite(job.fd, mv[chunk_off:chunk_off + take], file_off)
                    n += take
                except OSError as exc:
                    with self.tally.lock:
                        job.failed = f"write error: {exc.strerror or exc}"
                        self.tally.error(job.rel, job.failed)
            self._job_step(job)
        with self.tally.lock:
            self.tally.written += n
