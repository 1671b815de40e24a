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

from ...domain.errors import NotFound, StateConflict
from ..chunks.crypto import DIGEST_SIZE, ZERO_DIGEST
from ..chunks.manifests import MANIFESTS_DIR, check_name
from ..chunks.session import WriteSession
from ..chunks.store import ChunkStore
from ..errors import BackupCancelled
from .fixed_index import FixedIndex
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

    @property
    def logical_size(self) -> int:
        return self.disk_size

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
    if cs.store.head(cs.k(MANIFESTS_DIR + backup_id)) is not None:
        raise StateConflict(f"backup {backup_id} already exists in the repository")
    parent: FixedIndex | None = None
    if parent_backup_id is not None:
        try:
            parent = FixedIndex.from_manifest(cs.read_manifest(parent_backup_id))
        except NotFound:
            parent = None  # deleted meanwhile: every backup is a virtual full, so nothing depends on it
    src, owned = _open_source(source)
    try:
        return _run(cs, src, backup_id, meta, parent_backup_id, parent, full, progress, cancel,
                    block_size, workers or max(2, min(4, os.cpu_count() or 2)), t0)
    finally:
        if owned:
            src.close()


def _run(cs, src: DiskSource, backup_id, meta, parent_id, parent, full, progress, cancel, bs, nworkers, t0):
    size = src.size
    index = FixedIndex.empty(size, bs)
    digests = index.digests
    cancel = cancel or threading.Event()
    stop = threading.Event()  # set on cancel or on any thread's error
    errors: list[BaseException] = []
    seg_q: queue.Queue = queue.Queue(maxsize=nworkers * 2)
    seg_blocks = max(1, SEGMENT_SIZE // bs)
    skipped = [0]  # hole bytes (known zero without reading), updated by the reader only
    processed = [0] * nworkers  # bytes each worker has finished
    read = [0]
    counters_lock = threading.Lock()
    zero_blocks = [0]
    session = WriteSession(cs, force_new=full)

    def fail(e: BaseException) -> None:
        errors.append(e)
        stop.set()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                seg_q.put(item, timeout=0.2)
                return True
            except queue.Full:
                continue
        return False

    def reader() -> None:
        try:
            pos = 0  # first block not yet accounted for
            for off, ln in src.data_extents():
                b0 = off // bs
                b1 = -(-(off + ln) // bs)
                if b0 * bs < pos:
                    b0 = -(-pos // bs)
                skipped[0] += max(0, b0 * bs - pos)  # blocks in holes are zero blocks
                b = b0
                while b < b1:
                    if stop.is_set() or cancel.is_set():
                        return
                    n = min(seg_blocks, b1 - b)
                    data = src.read(b * bs, min(n * bs, size - b * bs))
                    read[0] += len(data)
                    if not put((b, data)):
                        return
                    b += n
                pos = max(pos, b1 * bs)
            skipped[0] += max(0, size - pos)
        except BaseException as e:  # noqa: BLE001
            fail(e)
        finally:
            for _ in range(nworkers):
                put(None)

    def worker(k: int) -> None:
        codec = cs.codec.clone()
        zero = bytes(bs)
        zeros_here = 0
        try:
            while True:
                try:
                    item = seg_q.get(timeout=0.2)
                except queue.Empty:
                    if stop.is_set():
                        break
                    continue
                if item is None or stop.is_set():
                    break
                if cancel.is_set():
                    stop.set()
                    break
                b, data = item
                n = len(data)
                for i in range(0, n, bs):
                    blk = data[i:i + bs]
                    if blk == zero or (len(blk) < bs and blk == zero[:len(blk)]):
                        zeros_here += 1
                        continue
                    d = codec.digest(blk)
                    session.put_chunk(blk, d, codec)
                    j = (b + i // bs) * DIGEST_SIZE
                    digests[j:j + DIGEST_SIZE] = d
                processed[k] += n
        except BaseException as e:  # noqa: BLE001
            fail(e)
        finally:
            with counters_lock:
                zero_blocks[0] += zeros_here

    threads = [threading.Thread(target=reader, name="disk-read", daemon=True)]
    threads += [threading.Thread(target=worker, args=(i,), name=f"disk-chunk-{i}", daemon=True) for i in range(nworkers)]
    try:
        for t in threads:
            t.start()
        while True:
            alive = [t for t in threads if t.is_alive()]
            if not alive:
                break
            alive[0].join(0.1)
            if progress is not None:
                progress(min(size, skipped[0] + sum(processed)), size)
            if cancel.is_set():
                stop.set()
        if cancel.is_set():
            raise BackupCancelled(f"backup {backup_id} was cancelled")
        if errors:
            raise errors[0]
        if progress is not None:
            progress(size, size)
        nblocks = index.block_count
        # zero blocks = blocks never set (holes and detected zeros)
        data_blocks = sum(1 for i in range(0, len(digests), DIGEST_SIZE)
                          if digests[i:i + DIGEST_SIZE] != ZERO_DIGEST)
        zero_total = nblocks - data_blocks
        changed = None
        if parent is not None:
            changed = _count_changed(parent, index)
        st = session.stats
        header = {
            "type": "disk",
            "format": 1,
            "backup_id": backup_id,
            "created": datetime.now(timezone.utc).isoformat(),
            "disk_size": size,
            "block_size": bs,
            "parent": parent_id,
            "full": bool(full),
            "encrypted": cs.encrypted,
            "meta": meta,
            "stats": {
                "bytes_read": read[0],
                "zero_blocks": zero_total,
                "data_blocks": data_blocks,
                "new_chunks": st.new_chunks,
                "added_bytes": st.added_bytes,
                "written_bytes": st.written_bytes,
                "changed_blocks": changed,
                "duration": round(time.monotonic() - t0, 3),
            },
        }
        manifest_bytes = session.commit(backup_id, header, bytes(digests))
    except BaseException:
        stop.set()
        for t in threads:
            t.join(timeout=30)
        session.abort()
        raise
    return DiskBackupResult(
        backup_id=backup_id, disk_size=size, block_size=bs, bytes_read=read[0], zero_blocks=zero_total,
        data_blocks=data_blocks, new_chunks=st.new_chunks, added_bytes=st.added_bytes,
        written_bytes=st.written_bytes, manifest_bytes=manifest_bytes, changed_blocks=changed,
        duration=time.monotonic() - t0,
    )


def _count_changed(parent: FixedIndex, cur: FixedIndex) -> int:
    if parent.block_size != cur.block_size:
        return cur.block_count
    a, b = parent.digests, cur.digests
    n = min(len(a), len(b))
    changed = sum(1 for i in range(0, n, DIGEST_SIZE) if a[i:i + DIGEST_SIZE] != b[i:i + DIGEST_SIZE])
    return changed + (len(b) - n) // DIGEST_SIZE
