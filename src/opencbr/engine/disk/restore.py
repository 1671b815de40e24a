"""Disk restore, export and verify.

Restore writes only what differs: blocks in a hole of the target (SEEK_HOLE) count as zero without
being read; other target blocks are read and hashed with the repository's chunk naming, and skipped if
they already hold the backup's content. Zero blocks of the backup become holes (fallocate PUNCH_HOLE)
on regular files, zeros on block devices. The target is fsynced at the end.
"""

from __future__ import annotations

import ctypes
import os
import stat
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ...system.libc import function as libc_function
from ...system.sparse import data_extents
from ..chunks import seams
from ..chunks.crypto import DIGEST_SIZE, ZERO_DIGEST
from ..chunks.digestset import DigestSet
from ..chunks.reader import VerifyReport, check_chunks
from ..chunks.store import ChunkStore
from ..errors import Damaged, InvalidArgument, Missing, RestoreCancelled
from .fixed_index import FixedIndex

Progress = Callable[[int, int], None]
# 0 = off: an fdatasync every 64-256 MiB during the restore measured no faster than one fsync at the end
WRITEBACK_STEP = int(os.environ.get("OPENCBR_RESTORE_WRITEBACK", 0))
_FALLOC_FL_KEEP_SIZE = 0x01
_FALLOC_FL_PUNCH_HOLE = 0x02


def _punch_hole(fd: int, offset: int, length: int) -> bool:
    fallocate = libc_function("fallocate", (ctypes.c_int, ctypes.c_int, ctypes.c_longlong, ctypes.c_longlong))
    return fallocate is not None and fallocate(fd, _FALLOC_FL_PUNCH_HOLE | _FALLOC_FL_KEEP_SIZE, offset, length) == 0


@dataclass
class RestoreResult:
    backup_id: str
    target: str
    disk_size: int
    blocks_total: int
    blocks_written: int  # data blocks written
    blocks_zeroed: int  # zero blocks punched/zeroed on the target
    blocks_unchanged: int  # already right on the target
    bytes_written: int
    bytes_read_target: int  # target bytes read to compare
    duration: float

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class DamagedChunk:
    digest: str
    reason: str
    offsets: list[int]  # disk byte offsets of the blocks that use it


class BlockPositions:
    """digest -> the blocks that hold it. Most chunks sit in one block, so a single position is kept as
    a plain int and only repeats get a list (saves ~70 bytes per chunk on large disks)."""

    def __init__(self) -> None:
        self._m: dict[bytes, int | list[int]] = {}
        self.blocks = 0

    def add(self, d: bytes, k: int) -> None:
        cur = self._m.get(d)
        if cur is None:
            self._m[d] = k
        elif isinstance(cur, list):
            cur.append(k)
        else:
            self._m[d] = [cur, k]
        self.blocks += 1

    def __getitem__(self, d: bytes) -> list[int]:
        cur = self._m[d]
        return cur if isinstance(cur, list) else [cur]

    def get(self, d: bytes, default=()) -> list[int]:
        return self[d] if d in self._m else list(default)

    def __iter__(self):
        return iter(self._m)

    def __len__(self) -> int:
        return len(self._m)


def block_positions(index: FixedIndex, first: int = 0, last: int | None = None) -> BlockPositions:
    """Where each chunk of blocks ``first`` to ``last`` (default: all) is."""
    pos = BlockPositions()
    dg = index.digests
    for i in range(first, index.block_count if last is None else last):
        d = bytes(dg[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE])
        if d != ZERO_DIGEST:
            pos.add(d, i)
    return pos


def _hole_blocks(fd: int, size: int, bs: int, nblocks: int) -> bytearray:
    """1 for blocks that lie entirely in a hole of the target file (hence read as zeros)."""
    hole = bytearray(b"\x01") * nblocks
    for start, length in data_extents(fd, size):
        for b in range(start // bs, min(nblocks, -(-(start + length) // bs))):
            hole[b] = 0
    return hole


def restore_disk(
    cs: ChunkStore,
    backup_id: str,
    target_path: str,
    *,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    truncate: bool = True,
    workers: int = 3,
    create: bool = True,
    target_fd: int | None = None,
) -> RestoreResult:
    """``target_fd``: the target already open read-write (checked by the caller); ``target_path`` then
    only names it."""
    t0 = time.monotonic()
    index = FixedIndex.read(cs, backup_id)
    size = index.disk_size
    exists = target_fd is not None or os.path.exists(target_path)
    if not exists and not create:
        raise Missing(f"restore target {target_path} does not exist")
    if target_fd is not None:
        fd = os.dup(target_fd)
    else:
        fd = os.open(target_path, os.O_RDWR | (0 if exists else os.O_CREAT), 0o600)
    try:
        st = os.fstat(fd)
        is_blk = stat.S_ISBLK(st.st_mode)
        if not is_blk and not stat.S_ISREG(st.st_mode):
            raise InvalidArgument(f"restore target {target_path} is neither a regular file nor a block device")
        tsize = os.lseek(fd, 0, os.SEEK_END) if is_blk else st.st_size
        if not exists:
            os.ftruncate(fd, size)
            tsize = size
        if tsize < size:
            raise InvalidArgument(f"restore target {target_path} has {tsize} bytes, the backup needs {size}")
        if truncate and not is_blk and tsize != size:
            os.ftruncate(fd, size)  # guide 13.4.5: the disk goes back to the backup's capacity
        return _DiskRestore(cs, index, backup_id, fd=fd, is_blk=is_blk, progress=progress, cancel=cancel,
                            workers=workers).run(target_path, t0)
    finally:
        os.close(fd)
        index.close()


#: blocks a restore plans at a time (their positions in memory: 16 GiB of disk at 64 KiB blocks)
RESTORE_WINDOW_BLOCKS = 1 << 18


@dataclass
class _Plan:
    """What pass 1 decided, per block: fetch it (``want``), make it zero, or leave it."""

    want: BlockPositions = field(default_factory=BlockPositions)
    zero_out: list[int] = field(default_factory=list)
    unchanged: int = 0
    read_target: int = 0  # bytes of the target read to compare


class _DiskRestore:
    """One restore onto an open target, a window of blocks at a time (the plan of a window in memory,
    not of the disk): compare (pass 1), zero (pass 2), fetch what differs (pass 3). A chunk used in
    several windows is fetched once per window."""

    def __init__(self, cs: ChunkStore, index: FixedIndex, backup_id: str, *, fd: int, is_blk: bool,
                 progress: Progress | None, cancel: threading.Event | None, workers: int):
        self.cs, self.index, self.backup_id = cs, index, backup_id
        self.fd, self.is_blk = fd, is_blk
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.workers = workers
        self.size, self.bs = index.disk_size, index.block_size
        self._last_report = 0.0
        self._wlock = threading.Lock()
        self.blocks_written = 0
        self.bytes_written = 0
        self.errors: list[tuple[bytes, Exception]] = []

    def _cancelled(self) -> None:
        if self.cancel.is_set():
            raise RestoreCancelled(f"restore of {self.backup_id} was cancelled")

    def _report(self, done: int) -> None:
        if self.progress is not None and time.monotonic() - self._last_report > 0.1:
            self._last_report = time.monotonic()
            self.progress(done, self.size)

    def _window_done(self, first: int, last: int, frac: float) -> None:
        """Progress: blocks before ``first`` done, ``frac`` of the window up to ``last``."""
        at = min(self.size, first * self.bs)
        self._report(at + int(frac * (min(self.size, last * self.bs) - at)))

    def compare(self, holes: bytearray, first: int, last: int) -> _Plan:
        """Pass 1: decide per block of ``first`` to ``last`` what to do (reads the target only where it
        may hold data)."""
        index, bs = self.index, self.bs
        codec = self.cs.codec.clone()
        zero = bytes(bs)
        dg = index.digests
        plan = _Plan()
        seg_blocks = max(1, (4 << 20) // bs)
        for i in range(first, last, seg_blocks):
            self._cancelled()
            j = min(last, i + seg_blocks)
            data = None
            if any(holes[k] == 0 for k in range(i, j)):
                data = os.pread(self.fd, min(self.size, j * bs) - i * bs, i * bs)
                plan.read_target += len(data)
            for k in range(i, j):
                want = bytes(dg[k * DIGEST_SIZE:(k + 1) * DIGEST_SIZE])
                if holes[k]:
                    have = ZERO_DIGEST
                else:
                    blk = data[(k - i) * bs:(k - i + 1) * bs]
                    if len(blk) < index.block_length(k):
                        have = b""  # short read: rewrite
                    elif blk == zero[:len(blk)]:
                        have = ZERO_DIGEST
                    else:
                        have = codec.digest(blk)
                if want == have:
                    plan.unchanged += 1
                elif want == ZERO_DIGEST:
                    plan.zero_out.append(k)
                else:
                    plan.want.add(want, k)
            self._window_done(first, last, (j - first) / (last - first) / 4)  # comparing: a quarter
        return plan

    def zero(self, blocks: list[int], first: int = 0, last: int = 0) -> None:
        """Pass 2: zero blocks -> holes (or zeros on block devices), coalesced into runs. Progress goes on
        while zeros are written (a window of a block device is up to 16 GiB of them: minutes on a slow
        disk, in which an agent's restore said nothing, and a task that says nothing for 10 minutes
        fails: engine/remote/service.py STALL_TIMEOUT)."""
        total, written = len(blocks) * self.bs, 0
        runs: list[tuple[int, int]] = []
        for k in blocks:
            if runs and runs[-1][1] == k:
                runs[-1] = (runs[-1][0], k + 1)
            else:
                runs.append((k, k + 1))
        for a, b in runs:
            off, ln = a * self.bs, min(self.size, b * self.bs) - a * self.bs
            if self.is_blk or not _punch_hole(self.fd, off, ln):
                zbuf = bytes(min(ln, 8 << 20))
                p = off
                while p < off + ln:
                    n = min(len(zbuf), off + ln - p)
                    os.pwrite(self.fd, zbuf[:n], p)
                    written += n
                    if last > first:
                        self._window_done(first, last, 0.25 * (1 + min(1.0, written / total) * 0.1))
                    p += n

    def _sink(self, want: BlockPositions, d: bytes, data: bytes) -> None:
        n = 0
        for k in want[d]:
            ln = self.index.block_length(k)
            if len(data) != ln:
                self.errors.append((d, Damaged(f"chunk {d.hex()} has {len(data)} bytes, block needs {ln}")))
                return
            os.pwrite(self.fd, data, k * self.bs)
            n += 1
        with self._wlock:
            self.blocks_written += n
            self.bytes_written += n * len(data)

    def fetch(self, want: BlockPositions, first: int, last: int) -> None:
        """Pass 3: fetch and write the chunks that differ."""
        total_blocks, before = want.blocks, self.blocks_written

        def span_done(_n: int) -> None:
            frac = (self.blocks_written - before) / total_blocks if total_blocks else 1.0
            self._window_done(first, last, 0.275 + 0.725 * min(1.0, frac) * 0.999)

        with _Writeback(self.fd) as writeback:
            def sink(d: bytes, data: bytes) -> None:
                self._sink(want, d, data)
                writeback.written(self.bytes_written)

            seams.fetch_chunks(self.cs, list(want), sink, lambda d, e: self.errors.append((d, e)), workers=self.workers,
                         cancel=self.cancel, on_span_done=span_done)
        self._cancelled()
        if self.errors:
            d, e = self.errors[0]
            offs = [k * self.bs for k in want.get(d, [])][:8]
            raise Damaged(f"restore of {self.backup_id}: {len(self.errors)} chunk(s) could not be read "
                          f"intact; first: {e} (disk offsets {offs})", backup_id=self.backup_id)

    def run(self, target_path: str, t0: float) -> RestoreResult:
        nblocks = self.index.block_count
        holes = bytearray(nblocks) if self.is_blk else _hole_blocks(self.fd, self.size, self.bs, nblocks)
        zeroed = unchanged = read_target = 0
        for first in range(0, nblocks, RESTORE_WINDOW_BLOCKS):
            last = min(nblocks, first + RESTORE_WINDOW_BLOCKS)
            plan = self.compare(holes, first, last)
            self.zero(plan.zero_out, first, last)
            self.fetch(plan.want, first, last)
            zeroed, unchanged, read_target = (zeroed + len(plan.zero_out), unchanged + plan.unchanged,
                                              read_target + plan.read_target)
        os.fsync(self.fd)
        if self.progress is not None:
            self.progress(self.size, self.size)
        return RestoreResult(
            backup_id=self.backup_id, target=target_path, disk_size=self.size, blocks_total=nblocks,
            blocks_written=self.blocks_written, blocks_zeroed=zeroed, blocks_unchanged=unchanged,
            bytes_written=self.bytes_written, bytes_read_target=read_target, duration=time.monotonic() - t0,
        )


class _Writeback:
    """Write back while we decode: a flusher thread fdatasyncs every WRITEBACK_STEP bytes, so the final
    fsync waits only for the tail instead of the whole restored disk (measured in bench/README.md).
    Off (WRITEBACK_STEP 0) by default."""

    def __init__(self, fd: int):
        self.fd = fd
        self._next = WRITEBACK_STEP
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="restore-writeback", daemon=True)

    def _loop(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            if self._stop.is_set():
                return
            os.fdatasync(self.fd)

    def written(self, total: int) -> None:
        """``total`` bytes are written so far: start a writeback once another step is complete."""
        if WRITEBACK_STEP and total >= self._next:
            self._next = total + WRITEBACK_STEP
            self._kick.set()

    def __enter__(self) -> "_Writeback":
        if WRITEBACK_STEP:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._kick.set()  # wake it so it sees the stop at once
        if self._thread.is_alive():
            self._thread.join()


#: blocks whose chunks verify checks at a time (their positions in memory: 8 MiB of refs, 16 GiB of disk)
VERIFY_WINDOW_BLOCKS = 1 << 18


def verify_disk(cs: ChunkStore, backup_id: str, *, progress: Progress | None = None, workers: int = 3,
                packs: set[str] | None = None) -> VerifyReport:
    """Read and check every chunk of a disk backup once, a window of blocks at a time (the positions of
    a window's chunks in memory, the chunks already checked in a :class:`DigestSet`: bounded memory
    whatever the disk's size). A bad chunk lists every block that uses it. ``packs``: the packs read
    are added."""
    t0 = time.monotonic()
    index = FixedIndex.read(cs, backup_id)
    bs, nblocks = index.block_size, index.block_count
    report = VerifyReport(backup_id, 0, 0)
    checked = DigestSet(cs.memory_entries, cs.spill_dir)
    bad: dict[bytes, DamagedChunk] = {}  # (few: its blocks in later windows are added to it)
    try:
        for first in range(0, nblocks, VERIFY_WINDOW_BLOCKS):
            last = min(nblocks, first + VERIFY_WINDOW_BLOCKS)
            pos = block_positions(index, first, last)
            todo = []
            for d in pos:
                if d in bad:
                    bad[d].offsets.extend(k * bs for k in pos[d])
                elif checked.add(d):
                    todo.append(d)

            def on_bad(d: bytes, e: Exception, pos=pos) -> None:
                bad[d] = item = DamagedChunk(d.hex(), str(e), [k * bs for k in pos.get(d, [])])
                (report.missing if isinstance(e, Missing) else report.damaged).append(item)

            def window_progress(done: int, total: int, first=first, last=last) -> None:
                if progress is not None:
                    progress(first + (last - first) * done // max(total, 1), nblocks)

            totals = check_chunks(cs, todo, on_bad, progress=window_progress, workers=workers, packs=packs)
            report.chunks_checked += totals.chunks_checked
            report.bytes_checked += totals.bytes_checked
    finally:
        checked.close()
        index.close()
    if progress is not None:
        progress(nblocks, nblocks)
    report.duration = time.monotonic() - t0
    return report
