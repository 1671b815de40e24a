"""Disk restore, export and verify.

Restore writes only what differs: blocks in a hole of the target (SEEK_HOLE) count as zero without
being read; other target blocks are read and hashed with the repository's chunk naming, and skipped if
they already hold the backup's content. Zero blocks of the backup become holes (fallocate PUNCH_HOLE)
on regular files, zeros on block devices. The target is fsynced at the end.
"""

from __future__ import annotations

import ctypes
import errno
import os
import stat
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable

from ...domain.errors import DataCorruption, InvalidParameter, NotFound
from ...system.libc import function as libc_function
from ..chunks.crypto import DIGEST_SIZE, ZERO_DIGEST
from ..chunks.reader import fetch_chunks
from ..chunks.store import ChunkStore
from ..errors import RestoreCancelled
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


@dataclass
class VerifyReport:
    backup_id: str
    chunks_checked: int
    bytes_checked: int
    damaged: list[DamagedChunk] = field(default_factory=list)  # a copy exists but fails its check
    missing: list[DamagedChunk] = field(default_factory=list)  # no copy found
    duration: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.damaged and not self.missing

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        return d


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


def block_positions(index: FixedIndex) -> BlockPositions:
    pos = BlockPositions()
    dg = index.digests
    for i in range(index.block_count):
        d = bytes(dg[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE])
        if d != ZERO_DIGEST:
            pos.add(d, i)
    return pos


def _hole_blocks(fd: int, size: int, bs: int, nblocks: int) -> bytearray:
    """1 for blocks that lie entirely in a hole of the target file (hence read as zeros)."""
    hole = bytearray(b"\x01") * nblocks
    pos = 0
    while pos < size:
        try:
            start = os.lseek(fd, pos, os.SEEK_DATA)
        except OSError as e:
            if e.errno == errno.ENXIO:
                break
            return bytearray(nblocks)  # no SEEK_DATA support: assume everything may hold data
        end = min(os.lseek(fd, start, os.SEEK_HOLE), size)
        for b in range(start // bs, min(nblocks, -(-end // bs))):
            hole[b] = 0
        pos = end
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
    index = FixedIndex.from_manifest(cs.read_manifest(backup_id))
    size = index.disk_size
    exists = target_fd is not None or os.path.exists(target_path)
    if not exists and not create:
        raise NotFound(f"restore target {target_path} does not exist")
    fd = os.dup(target_fd) if target_fd is not None else os.open(target_path, os.O_RDWR | (0 if exists else os.O_CREAT), 0o600)
    try:
        st = os.fstat(fd)
        is_blk = stat.S_ISBLK(st.st_mode)
        if not is_blk and not stat.S_ISREG(st.st_mode):
            raise InvalidParameter(f"restore target {target_path} is neither a regular file nor a block device")
        tsize = os.lseek(fd, 0, os.SEEK_END) if is_blk else st.st_size
        if not exists:
            os.ftruncate(fd, size)
            tsize = size
        if tsize < size:
            raise InvalidParameter(f"restore target {target_path} has {tsize} bytes, the backup needs {size}")
        if truncate and not is_blk and tsize != size:
            os.ftruncate(fd, size)  # guide 13.4.5: the disk goes back to the backup's capacity
        return _restore_into(cs, index, backup_id, target_path, fd, is_blk, progress, cancel, workers, t0)
    finally:
        os.close(fd)


def _restore_into(cs, index: FixedIndex, backup_id, target_path, fd, is_blk, progress, cancel, workers, t0) -> RestoreResult:
    size, bs, nblocks = index.disk_size, index.block_size, index.block_count
    cancel = cancel or threading.Event()
    holes = bytearray(nblocks) if is_blk else _hole_blocks(fd, size, bs, nblocks)
    codec = cs.codec.clone()
    zero = bytes(bs)
    dg = index.digests
    want_pos = BlockPositions()
    zero_out: list[int] = []
    unchanged = 0
    read_target = 0
    done = 0
    last_report = 0.0
    # Pass 1: decide per block what to do (reads the target only where it may hold data).
    i = 0
    seg_blocks = max(1, (4 << 20) // bs)
    while i < nblocks:
        if cancel.is_set():
            raise RestoreCancelled(f"restore of {backup_id} was cancelled")
        j = min(nblocks, i + seg_blocks)
        data = None
        if any(holes[k] == 0 for k in range(i, j)):
            data = os.pread(fd, min(size, j * bs) - i * bs, i * bs)
            read_target += len(data)
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
                unchanged += 1
            elif want == ZERO_DIGEST:
                zero_out.append(k)
            else:
                want_pos.add(want, k)
        done += (j - i) * bs
        i = j
        if progress is not None and time.monotonic() - last_report > 0.1:
            progress(min(done, size) // 4, size)  # comparing counts as the first quarter
            last_report = time.monotonic()

    # Pass 2: zero blocks -> holes (or zeros on block devices), coalesced into runs.
    runs: list[tuple[int, int]] = []
    for k in zero_out:
        if runs and runs[-1][1] == k:
            runs[-1] = (runs[-1][0], k + 1)
        else:
            runs.append((k, k + 1))
    for a, b in runs:
        off, ln = a * bs, min(size, b * bs) - a * bs
        if is_blk or not _punch_hole(fd, off, ln):
            zbuf = bytes(min(ln, 8 << 20))
            p = off
            while p < off + ln:
                n = min(len(zbuf), off + ln - p)
                os.pwrite(fd, zbuf[:n], p)
                p += n

    # Pass 3: fetch and write the chunks that differ.
    total_blocks = want_pos.blocks
    written = [0, 0]  # blocks, bytes
    wlock = threading.Lock()
    errors: list[tuple[bytes, Exception]] = []

    def sink(d: bytes, data: bytes) -> None:
        n = 0
        for k in want_pos[d]:
            ln = index.block_length(k)
            if len(data) != ln:
                errors.append((d, DataCorruption(f"chunk {d.hex()} has {len(data)} bytes, block needs {ln}")))
                return
            os.pwrite(fd, data, k * bs)
            n += 1
        with wlock:
            written[0] += n
            written[1] += n * len(data)

    def on_error(d: bytes, e: Exception) -> None:
        errors.append((d, e))

    def span_done(_n: int) -> None:
        nonlocal last_report
        if progress is not None and time.monotonic() - last_report > 0.1:
            last_report = time.monotonic()
            frac = written[0] / total_blocks if total_blocks else 1.0
            progress(size // 4 + int(frac * (size - size // 4)) - 1, size)

    # Write back while we decode: a flusher thread fdatasyncs every WRITEBACK_STEP bytes, so the final
    # fsync waits only for the tail instead of the whole restored disk (measured in bench/README.md).
    flush_stop = threading.Event()
    flush_kick = threading.Event()

    def flusher() -> None:
        while True:
            flush_kick.wait()
            flush_kick.clear()
            if flush_stop.is_set():
                return
            os.fdatasync(fd)

    flush_thread = threading.Thread(target=flusher, name="restore-writeback", daemon=True)
    if WRITEBACK_STEP:
        flush_thread.start()
    step = [WRITEBACK_STEP]

    def sink_and_kick(d: bytes, data: bytes) -> None:
        sink(d, data)
        if written[1] >= step[0]:
            step[0] = written[1] + WRITEBACK_STEP
            flush_kick.set()

    try:
        fetch_chunks(cs, list(want_pos), sink_and_kick if WRITEBACK_STEP else sink, on_error, workers=workers,
                     cancel=cancel, on_span_done=span_done)
    finally:
        flush_stop.set()
        flush_kick.set()  # wake it so it sees the stop at once
        if flush_thread.is_alive():
            flush_thread.join()
    if cancel.is_set():
        raise RestoreCancelled(f"restore of {backup_id} was cancelled")
    if errors:
        d, e = errors[0]
        offs = [k * bs for k in want_pos.get(d, [])][:8]
        raise DataCorruption(f"restore of {backup_id}: {len(errors)} chunk(s) could not be read intact; "
                             f"first: {e} (disk offsets {offs})")
    os.fsync(fd)
    if progress is not None:
        progress(size, size)
    return RestoreResult(
        backup_id=backup_id, target=target_path, disk_size=size, blocks_total=nblocks,
        blocks_written=written[0], blocks_zeroed=len(zero_out), blocks_unchanged=unchanged,
        bytes_written=written[1], bytes_read_target=read_target, duration=time.monotonic() - t0,
    )


def verify_disk(cs: ChunkStore, backup_id: str, *, progress: Progress | None = None, workers: int = 3) -> VerifyReport:
    t0 = time.monotonic()
    index = FixedIndex.from_manifest(cs.read_manifest(backup_id))
    pos = block_positions(index)
    bs = index.block_size
    report = VerifyReport(backup_id, 0, 0)
    lock = threading.Lock()
    total = len(pos)

    def sink(d: bytes, data: bytes) -> None:
        with lock:
            report.chunks_checked += 1
            report.bytes_checked += len(data)
            if progress is not None and report.chunks_checked % 256 == 0:
                progress(report.chunks_checked, total)

    def on_error(d: bytes, e: Exception) -> None:
        item = DamagedChunk(d.hex(), str(getattr(e, "message", e)), [k * bs for k in pos.get(d, [])])
        with lock:
            report.chunks_checked += 1
            (report.missing if isinstance(e, NotFound) else report.damaged).append(item)

    fetch_chunks(cs, list(pos), sink, on_error, workers=workers)
    if progress is not None:
        progress(total, total)
    report.duration = time.monotonic() - t0
    return report
