"""A disk backup copied into another vault (a replica), block for block, when both vaults use the same
block size.

A copy is a new disk backup of the same image in the other vault, but it need not be made like one:
the source backup's fixed index already says which blocks are zero and which are equal, and its records
already hold each block compressed. So, per distinct source chunk, once: open the record (decrypt and
decompress; an encrypted vault's record is authenticated by AES-GCM, so the plaintext is not hashed
again under the source's key), name the plaintext with the destination's key, and send the *stored*
body encrypted under the destination's key (``RemoteSink.put_sealable``): never compressed a second
time. Both vaults compress disk blocks with the same codec (zstd level 1), so the replica stores what
a backup in the destination would have stored. Where neither vault is encrypted, chunks have the same
(plain BLAKE3) names in both and are not hashed again either.

``previous``: the last copy of the same disk made from an older source backup. A block whose source
digest equals that backup's at the same place takes the previous copy's digest without being read at
all: an incremental copy reads and sends only the blocks that changed. The destination checks at the
commit that it holds every chunk the copy names, so a previous copy deleted meanwhile fails the copy
instead of leaving it incomplete.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timezone

from ..chunks import seams
from ..chunks.codec import Sealable
from ..chunks.crypto import DIGEST_SIZE, ZERO_DIGEST
from ..chunks.manifests import check_name
from ..chunks.reader import read_span, spans_of
from ..errors import BackupCancelled, InvalidArgument, Missing
from .backup import DiskBackupResult, Progress
from .fixed_index import FixedIndex, SpooledDigests

BATCH = 64  # blocks decoded together (4 MiB at 64 KiB)
AHEAD = 2  # batches decoded ahead of the one being sent
MAPPED_MAX = 1 << 18  # source -> destination names remembered (repeated blocks are opened once)


class _Copy:
    """The source's chunks opened ``AHEAD`` batches ahead in ``workers`` threads, named for the sink."""

    def __init__(self, src_cs, index: FixedIndex, sink_cs, workers: int, sealable: bool):
        self.src_cs, self.index, self.sink_cs, self.sealable = src_cs, index, sink_cs, sealable
        self.same_names = not src_cs.encrypted and not sink_cs.encrypted
        self._where = src_cs.reader_index(refresh=True)
        self._tls = threading.local()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="copy-read")
        self._batches: dict[int, Future] = {}

    def _codecs(self):
        c = getattr(self._tls, "codecs", None)
        if c is None:
            c = self._tls.codecs = (self.src_cs.codec.clone(), self.sink_cs.codec.clone())
        return c

    def _open(self, wanted: set[bytes]) -> dict[bytes, tuple]:
        """``{source digest: (destination digest, Sealable or plaintext, plaintext length)}`` of ``wanted``."""
        src_codec, dst_codec = self._codecs()
        got: dict[bytes, tuple] = {}

        def named(s: bytes, plain) -> bytes:
            return s if self.same_names else dst_codec.digest(plain)

        def fallback(s: bytes) -> None:  # not where the index says: one verified copy, compressed again
            plain = self.src_cs.get_chunk(s, src_codec)
            got[s] = (named(s, plain), plain, len(plain))

        for span in spans_of(self._where, wanted, fallback):
            for s, opened, err in read_span(self.src_cs, src_codec, span, decode=src_codec.open_body, hashes=False):
                if err is not None:
                    raise err
                if isinstance(opened, tuple):
                    flags, body, plain = opened
                    what = Sealable(flags, bytes(body)) if self.sealable else bytes(plain)
                    got[s] = (named(s, plain), what, len(plain))
                else:  # (read_span fell back to get_chunk: plaintext)
                    plain = bytes(opened)
                    got[s] = (named(s, plain), plain, len(plain))
        return got

    def batch(self, k: int, wanted_of) -> dict[bytes, tuple]:
        for old in [j for j in self._batches if j < k]:
            self._batches.pop(old).cancel()
        last = -(-self.index.block_count // BATCH)
        for j in range(k, min(last, k + AHEAD + 1)):
            if j not in self._batches:
                self._batches[j] = self._pool.submit(self._open, wanted_of(j))
        return self._batches.pop(k).result()

    def open_now(self, wanted: set[bytes]) -> dict[bytes, tuple]:
        return self._open(wanted) if wanted else {}

    def close(self) -> None:
        for f in self._batches.values():
            f.cancel()
        self._pool.shutdown(wait=True, cancel_futures=True)


def _previous(src_cs, sink_cs, previous: tuple[str, str] | None, index: FixedIndex):
    """(previous source index, previous copy's index) when both exist and match ``index``'s layout."""
    if previous is None:
        return None
    try:
        before = FixedIndex.read(src_cs, previous[0])
        copy = FixedIndex.read(sink_cs, previous[1])
    except Missing:
        return None  # deleted meanwhile: every backup is a virtual full, the copy is made in full
    if before.block_size != index.block_size or copy.block_size != index.block_size or \
            copy.block_count != before.block_count:
        return None
    return before, copy


def copy_disk_backup(src_cs, source_id: str, sink_cs, *, backup_id: str, meta: dict, block_size: int,
                     previous: tuple[str, str] | None = None, progress: Progress | None = None,
                     cancel: threading.Event | None = None, workers: int = 2) -> DiskBackupResult:
    """Copy disk backup ``source_id`` of chunk store ``src_cs`` into ``sink_cs`` (a local chunk store or a
    vault over a channel) as backup ``backup_id`` (see the module docstring). ``previous``: ``(an older
    source backup id, its copy in sink_cs)``. Raises InvalidArgument when the source's block size is not
    ``block_size`` (the caller backs the image up instead), Missing/Damaged when the source cannot be
    read, BackupCancelled."""
    t0 = time.monotonic()
    check_name(backup_id)
    cancel = cancel or threading.Event()
    index = FixedIndex.read(src_cs, source_id)
    if index.block_size != block_size:
        raise InvalidArgument(f"backup {source_id} has {index.block_size}-byte blocks, the copy {block_size}")
    prev = _previous(src_cs, sink_cs, previous, index)
    out = SpooledDigests(index.block_count, getattr(sink_cs, "spill_dir", None))  # (not in memory: 32 B a block)
    mapped: dict[bytes, bytes] = {}
    reused = 0

    def wanted_of(k: int) -> set[bytes]:
        wanted = set()
        for i in range(k * BATCH, min(index.block_count, (k + 1) * BATCH)):
            s = index.digest(i)
            if s != ZERO_DIGEST and s not in mapped and not (prev and i < prev[0].block_count
                                                              and prev[0].digest(i) == s):
                wanted.add(s)
        return wanted

    session = seams.open_session(sink_cs)
    copy = _Copy(src_cs, index, sink_cs, workers, sealable=hasattr(session, "put_sealable"))
    bytes_read = 0
    try:
        for k in range(-(-index.block_count // BATCH)):
            if cancel.is_set():
                raise BackupCancelled(f"backup {backup_id} was cancelled")
            got = copy.batch(k, wanted_of)
            # (asked for ahead, while ``mapped`` still held names it has forgotten since: opened now)
            got.update(copy.open_now(wanted_of(k) - got.keys()))
            sealed, plain = [], []
            for s, (d, what, n) in got.items():
                (sealed if isinstance(what, Sealable) else plain).append((what, d))
                mapped[s] = d
                bytes_read += n
            if sealed:
                session.put_sealable(sealed)
            if plain:
                session.put_chunks(plain)
            first = k * BATCH
            batch = bytearray((min(index.block_count, first + BATCH) - first) * DIGEST_SIZE)
            for i in range(first, min(index.block_count, first + BATCH)):
                s = index.digest(i)
                if s == ZERO_DIGEST:
                    continue
                at = (i - first) * DIGEST_SIZE
                if prev and i < prev[0].block_count and prev[0].digest(i) == s:
                    batch[at:at + DIGEST_SIZE] = prev[1].digest(i)
                    reused += 1
                else:
                    batch[at:at + DIGEST_SIZE] = mapped[s]
            out.write(first, batch)
            if len(mapped) > MAPPED_MAX:
                mapped.clear()
            if progress is not None:
                progress(min(index.disk_size, (k + 1) * BATCH * block_size), index.disk_size)
        st = session.stats
        data_blocks = out.data_blocks()
        stats = {"bytes_read": bytes_read, "zero_blocks": out.block_count - data_blocks,
                 "data_blocks": data_blocks, "new_chunks": st.new_chunks, "added_bytes": st.added_bytes,
                 "written_bytes": st.written_bytes, "changed_blocks": None if prev is None else data_blocks - reused,
                 "duration": round(time.monotonic() - t0, 3)}
        header = {"type": "disk", "format": 1, "backup_id": backup_id,
                  "created": datetime.now(timezone.utc).isoformat(), "disk_size": index.disk_size,
                  "block_size": block_size, "parent": previous[1] if prev else None, "full": False,
                  "encrypted": sink_cs.encrypted, "meta": meta, "stats": stats}
        # streamed from the spooled digests into a local store's manifest; whole bytes over a channel
        manifest_bytes = session.commit(backup_id, header, bytes(out) if getattr(sink_cs, "remote", False) else out)
    except BaseException:
        session.abort()
        raise
    finally:
        copy.close()
        out.close()
        index.close()
        for prev_index in prev or ():
            prev_index.close()
    return DiskBackupResult(
        backup_id=backup_id, disk_size=index.disk_size, block_size=block_size, bytes_read=stats["bytes_read"],
        zero_blocks=stats["zero_blocks"], data_blocks=data_blocks, new_chunks=stats["new_chunks"],
        added_bytes=stats["added_bytes"], written_bytes=stats["written_bytes"], manifest_bytes=manifest_bytes,
        changed_blocks=stats["changed_blocks"], duration=time.monotonic() - t0)

