"""Disk backup pipeline: read -> zero-detect -> hash -> dedup -> compress -> encrypt -> pack -> write.

Threads (all hot calls release the GIL or are memcmp-fast):

- one *reader* walks the data extents (holes are zero blocks, never read) and reads 4 MiB segments
  (``os.pread`` releases the GIL) into a bounded queue;
- ``workers`` threads split segments into blocks, detect zero blocks (bytes compare), hash
  (BLAKE3), and for new chunks compress (zstd releases the GIL) and encrypt, appending records to the
  session's pack writer;
- the session's uploader threads write full packs (bounded queue).

Queues are bounded, so memory is O(workers x segment + packs in flight) whatever the disk size; only the
fixed index (32 bytes per block) grows with the disk.
"""

from __future__ import annotations

import os
import queue
import threading
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from typing import Callable

from ..chunks import seams
from ..chunks.crypto import DIGEST_SIZE
from ..chunks.manifests import check_name
from ..chunks.store import ChunkStore
from ..errors import BackupCancelled, Conflict, Damaged, Missing
from .fixed_index import FixedIndex, SpooledDigests
from .source import DiskSource, FileDiskSource

SEGMENT_SIZE = 4 << 20



Progress = Callable[[int, int], None]


@dataclass
class DiskBackupResult:
    backup_id: str
    disk_size: int  # logical size of the backup
    block_size: int
    bytes_read: int
    zero_blocks: int
    data_blocks: int
    new_chunks: int
    added_bytes: int  # stored bytes of chunks the repository did not hold before (what it added)
    written_bytes: int  # stored bytes written (>= added_bytes when full=True rewrites chunks)
    manifest_bytes: int
    changed_blocks: int | None  # blocks whose content differs from the parent backup's
    duration: float

    def to_dict(self) -> dict:
        return asdict(self)


def _open_source(source) -> tuple[DiskSource, bool]:
    if isinstance(source, (str, os.PathLike)):
        return FileDiskSource(source), True
    return source, False


def backup_disk(
    cs: ChunkStore,
    source,
    *,
    backup_id: str,
    meta: dict,
    parent_backup_id: str | None = None,
    full: bool = False,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    block_size: int,
    workers: int | None = None,
) -> DiskBackupResult:
    t0 = time.monotonic()
    check_name(backup_id)
    if cs.has_manifest(backup_id):
        raise Conflict(f"backup {backup_id} already exists in the repository")
    src, owned = _open_source(source)
    try:
        job = _Job(backup_id=backup_id, meta=meta, parent_id=parent_backup_id, full=full,
                   block_size=block_size, workers=workers or max(2, min(4, os.cpu_count() or 2)))
        return _DiskBackup(cs, src, job, progress=progress, cancel=cancel).run(t0)
    finally:
        if owned:
            src.close()


@dataclass(frozen=True)
class _Job:
    """What one disk backup is asked to do."""

    backup_id: str
    meta: dict
    parent_id: str | None
    full: bool
    block_size: int
    workers: int


class _DiskBackup:
    """One backup of an open source: a reader thread reads the data extents in segments, ``workers``
    threads hash and store each block (zero blocks are only counted); then the manifest is committed."""

    def __init__(self, cs: ChunkStore, src: DiskSource, job: _Job, *, progress: Progress | None,
                 cancel: threading.Event | None):
        self.cs, self.src, self.job = cs, src, job
        self.progress = progress
        self.cancel = cancel or threading.Event()
        self.size, self.bs = src.size, job.block_size
        self.stop = threading.Event()  # set on cancel or on any thread's error
        self.errors: list[BaseException] = []
        # segments read ahead: a remote sink's workers wait for room in its questions in flight (its
        # encoders are the slower end), so a longer queue there only held 4 MiB segments idle
        remote = getattr(cs, "remote", False)
        self.seg_q: queue.Queue = queue.Queue(maxsize=job.workers if remote else job.workers * 2)
        # A local session has encoded a segment's blocks when put_chunks returns, so its segments are
        # read into a fixed set of buffers (queue + workers + reader) handed round: no 4 MiB allocation
        # and free per segment, which raised glibc's mmap and trim thresholds and left each thread's
        # arena keeping what it freed. A remote sink keeps blocks until they are encoded: bytes there.
        self.segments = _Segments(job.workers * 3 + 1, max(SEGMENT_SIZE, job.block_size)) if not remote and _reads_into(src) else None
        self.skipped = 0  # hole bytes (known zero without reading), updated by the reader only
        self.processed = [0] * job.workers  # bytes each worker has finished
        self.read = 0
        self.session = seams.open_session(cs, force_new=job.full)
        self.digests = SpooledDigests(FixedIndex.count_blocks(self.size, self.bs), cs_spill_dir(cs))

    def _fail(self, e: BaseException) -> None:
        self.errors.append(e)
        self.stop.set()

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.seg_q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def _reader(self) -> None:
        bs, size, seg_blocks = self.bs, self.size, max(1, SEGMENT_SIZE // self.bs)
        try:
            pos = 0  # first block not yet accounted for
            for off, ln in self.src.data_extents():
                b0 = off // bs
                b1 = -(-(off + ln) // bs)
                if b0 * bs < pos:
                    b0 = -(-pos // bs)
                self.skipped += max(0, b0 * bs - pos)  # blocks in holes are zero blocks
                b = b0
                while b < b1:
                    if self.stop.is_set() or self.cancel.is_set():
                        return
                    n = min(seg_blocks, b1 - b)
                    data = self._read(b * bs, min(n * bs, size - b * bs))
                    if data is None:
                        return
                    self.read += len(data)
                    if not self._put((b, data)):
                        return
                    b += n
                pos = max(pos, b1 * bs)
            self.skipped += max(0, size - pos)
        except BaseException as e:  # noqa: BLE001
            self._fail(e)
        finally:
            for _ in range(self.job.workers):
                self._put(None)

    def _read(self, offset: int, length: int):
        """The segment at ``offset``: bytes, or a view of a pooled buffer (None if we stop meanwhile)."""
        if self.segments is None:
            return self.src.read(offset, length)
        buf = self.segments.take(self.stop)
        if buf is None:
            return None
        return memoryview(buf)[:self.src.read_into(offset, memoryview(buf)[:length])]

    def _next_segment(self):
        """The next (first block, data) to chunk, or None when there is no more (or we stop)."""
        while True:
            try:
                item = self.seg_q.get(timeout=0.2)
            except queue.Empty:
                if self.stop.is_set():
                    return None
                continue
            if item is None or self.stop.is_set():
                return None
            if self.cancel.is_set():
                self.stop.set()
                return None
            return item

    def _worker(self, k: int) -> None:
        codec = self.cs.codec.clone()
        bs = self.bs
        zero = bytes(bs)
        try:
            while (item := self._next_segment()) is not None:
                b, data = item
                whole = data.obj if isinstance(data, memoryview) else data  # (bytes, or a pooled buffer)
                # blocks are views of the segment (immutable bytes), not copies: a remote sink keeps
                # the blocks it asked about until they are encoded, and copies doubled the segments'
                # memory (two 4 MiB copies per segment in flight, docs/agents.md "Memory")
                view = memoryview(data)
                pairs = []
                seg_digests = bytearray(-(-len(data) // bs) * DIGEST_SIZE)
                for i in range(0, len(data), bs):
                    n = min(bs, len(data) - i)
                    if whole.startswith(zero if n == bs else zero[:n], i):
                        continue  # a zero block: left unset (ZERO_DIGEST) in the index
                    blk = view[i:i + n]
                    d = codec.digest(blk)
                    pairs.append((blk, d))
                    j = i // bs * DIGEST_SIZE
                    seg_digests[j:j + DIGEST_SIZE] = d
                self.session.put_chunks(pairs, codec)  # one batch per segment (a remote sink asks once)
                self.digests.write(b, seg_digests)
                self.processed[k] += len(data)
                if self.segments is not None:
                    self.segments.give(data.obj)
        except BaseException as e:  # noqa: BLE001
            self._fail(e)

    def _read_and_store(self) -> list[threading.Thread]:
        """Run the reader and the workers to the end, reporting progress; raise on cancel or error."""
        threads = [threading.Thread(target=self._reader, name="disk-read", daemon=True)]
        threads += [threading.Thread(target=self._worker, args=(i,), name=f"disk-chunk-{i}", daemon=True)
                    for i in range(self.job.workers)]
        self.threads = threads
        for t in threads:
            t.start()
        while alive := [t for t in threads if t.is_alive()]:
            alive[0].join(0.1)
            if self.progress is not None:
                self.progress(min(self.size, self.skipped + sum(self.processed)), self.size)
            if self.cancel.is_set():
                self.stop.set()
        if self.cancel.is_set():
            raise BackupCancelled(f"backup {self.job.backup_id} was cancelled")
        if self.errors:
            raise self.errors[0]
        if self.progress is not None:
            self.progress(self.size, self.size)
        return threads

    def _stats(self, t0: float) -> dict:
        st = self.session.stats
        data_blocks = self.digests.data_blocks()
        return {
            "bytes_read": self.read,
            "zero_blocks": self.digests.block_count - data_blocks,  # blocks never set: holes and detected zeros
            "data_blocks": data_blocks,
            "new_chunks": st.new_chunks,
            "added_bytes": st.added_bytes,
            "written_bytes": st.written_bytes,
            "changed_blocks": self._changed_blocks(),
            "duration": round(time.monotonic() - t0, 3),
        }

    def _changed_blocks(self) -> int | None:
        """Blocks whose digest differs from the parent backup's, its index streamed (read here, at the
        end, not held through the backup); None without a parent or if it was deleted meanwhile (every
        backup is a virtual full, so nothing depends on it)."""
        if self.job.parent_id is None:
            return None
        try:
            # a window at a time, also through an agent (protocol 2: 8 MiB windows of refs): the whole
            # index of a 1 TiB parent is 512 MB, and the agent held it three times over
            if hasattr(self.cs, "manifest_refs_streamed"):
                header, pieces = self.cs.manifest_refs_streamed(self.job.parent_id)
            else:
                m = self.cs.read_manifest(self.job.parent_id)
                header, pieces = m.header, iter((m.refs,))
        except Missing:
            return None
        if header.get("type") != "disk":
            raise Damaged(f"backup {self.job.parent_id} is not a disk backup", backup_id=self.job.parent_id)
        if int(header["block_size"]) != self.bs:
            return self.digests.block_count
        return self.digests.changed_from(pieces)

    def _refs(self):
        """The manifest's refs: the spooled digests, streamed into a local store's manifest or sent over
        a channel in pieces (remote/client.py: ``RemoteSink.commit``)."""
        return self.digests

    def run(self, t0: float) -> DiskBackupResult:
        job = self.job
        self.threads: list[threading.Thread] = []
        try:
            self._read_and_store()
            stats = self._stats(t0)
            header = {
                "type": "disk", "format": 1, "backup_id": job.backup_id,
                "created": datetime.now(timezone.utc).isoformat(), "disk_size": self.size, "block_size": self.bs,
                "parent": job.parent_id, "full": bool(job.full), "encrypted": self.cs.encrypted, "meta": job.meta,
                "stats": stats,
            }
            manifest_bytes = self.session.commit(job.backup_id, header, self._refs())
        except BaseException:
            self.stop.set()
            for t in self.threads:
                t.join(timeout=30)
            self.session.abort()
            raise
        finally:
            self.digests.close()
        return DiskBackupResult(
            backup_id=job.backup_id, disk_size=self.size, block_size=self.bs, bytes_read=stats["bytes_read"],
            zero_blocks=stats["zero_blocks"], data_blocks=stats["data_blocks"], new_chunks=stats["new_chunks"],
            added_bytes=stats["added_bytes"], written_bytes=stats["written_bytes"], manifest_bytes=manifest_bytes,
            changed_blocks=stats["changed_blocks"], duration=time.monotonic() - t0,
        )


def _reads_into(src) -> bool:
    """The source reads into a caller's buffer, and ``read_into`` is that of the class that defines its
    ``read`` (a subclass that changes ``read`` -- to watch or alter what is read -- keeps being used)."""
    def owner(name: str):
        return next((c for c in type(src).__mro__ if name in c.__dict__), None)
    return owner("read_into") is not None and owner("read_into") is owner("read")


class _Segments:
    """Segment buffers, made as needed up to ``count`` (the most the reader and the workers can hold at
    once) and then handed round: the read-ahead's memory is the same from the first seconds on."""

    def __init__(self, count: int, size: int):
        self.count, self.size, self.made = count, size, 0
        self.free: queue.Queue = queue.Queue()

    def take(self, stop: threading.Event) -> bytearray | None:
        try:
            return self.free.get_nowait()
        except queue.Empty:
            if self.made < self.count:  # (the reader is the only taker)
                self.made += 1
                return bytearray(self.size)
        while not stop.is_set():
            try:
                return self.free.get(timeout=0.2)
            except queue.Empty:
                continue
        return None

    def give(self, buf: bytearray) -> None:
        self.free.put(buf)


def cs_spill_dir(cs) -> str | None:
    """Where the chunk store puts a backup's temporary files (None: the system's temporary directory)."""
    return getattr(cs, "spill_dir", None)
