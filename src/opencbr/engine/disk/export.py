"""Disk backups out as raw images: to a sparse file (``export_disk``), or as a stream checked chunk by
chunk (``DiskImage``, what the API's export sends)."""

from __future__ import annotations

import os
import threading
from typing import Generator

from ..chunks.crypto import ZERO_DIGEST
from ..chunks.digestset import DigestSet
from ..chunks.packs import pack_key
from ..chunks.store import ChunkStore
from ..errors import Damaged, InvalidArgument, Missing
from . import restore as disk_restore
from .fixed_index import FixedIndex
from .restore import DamagedChunk, Progress, RestoreResult, block_positions, restore_disk


def export_disk(cs: ChunkStore, backup_id: str, out_path: str, *, progress: Progress | None = None,
                cancel: threading.Event | None = None, workers: int = 3) -> RestoreResult:
    """Write the backup as a sparse raw image at ``out_path`` (replaced if it exists)."""
    tmp = f"{out_path}.partial"
    if os.path.exists(tmp):
        os.unlink(tmp)
    try:
        res = restore_disk(cs, backup_id, tmp, progress=progress, cancel=cancel, workers=workers)
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    res.target = out_path
    return res


class DiskImage:
    """The raw image of one disk backup, read as a stream."""

    def __init__(self, cs: ChunkStore, backup_id: str):
        header, _refs = cs.manifest_refs_streamed(backup_id)  # (the header; refs not read)
        if header.get("type") != "disk":
            raise InvalidArgument(f"backup {backup_id} is not a disk backup: only disks have an image")
        self.cs = cs
        self.index = FixedIndex.read(cs, backup_id)

    @property
    def disk_size(self) -> int:
        return self.index.disk_size

    def unreadable_chunks(self) -> list[DamagedChunk]:
        """The chunks of a disk backup known to be unreadable without reading any: not in the index, or in
        a pack that is gone or shorter than the record. One listing of the packs, no data read: a cheap
        check before an export sends its first byte (a flipped byte is found only by reading it)."""
        cs, index = self.cs, self.index
        idx = cs.reader_index(refresh=True)
        sizes = dict(cs.store.list(cs.k("data/")))
        bad: dict[bytes, DamagedChunk] = {}
        checked = DigestSet(cs.memory_entries, cs.spill_dir)
        try:
            window = disk_restore.VERIFY_WINDOW_BLOCKS  # (the positions of a window's blocks at a time)
            for first in range(0, index.block_count, window):
                pos = block_positions(index, first, min(index.block_count, first + window))
                for d in pos:
                    if d in bad:
                        bad[d].offsets.extend(k * index.block_size for k in pos[d])
                        continue
                    if not checked.add(d):
                        continue
                    locs = idx.locations(d)
                    if any(sizes.get(cs.k(pack_key(loc.pack_id)), -1) >= loc.offset + loc.length for loc in locs):
                        continue
                    reason = f"pack {locs[0].pack_id} is missing or short" if locs else "it is not in the repository index"
                    bad[d] = DamagedChunk(d.hex(), f"chunk {d.hex()}: {reason}", [k * index.block_size for k in pos[d]])
        finally:
            checked.close()
        return sorted(bad.values(), key=lambda c: c.offsets[0])

    def blocks(self) -> Generator[bytes, None, DamagedChunk | None]:
        """The raw image of a disk backup, block by block, every chunk checked as it is read. Stops at the
        first chunk that cannot be read intact and returns it with its block's offset (everything before
        it was yielded); returns None when the whole image was."""
        cs, index = self.cs, self.index
        zero = bytes(index.block_size)
        codec = cs.codec.clone()
        for i in range(index.block_count):
            n, d = index.block_length(i), index.digest(i)
            if d == ZERO_DIGEST:
                yield zero[:n]
                continue
            try:
                data = cs.get_chunk(d, codec)
            except (Damaged, Missing) as e:
                return DamagedChunk(d.hex(), str(e), [i * index.block_size])
            if len(data) != n:
                return DamagedChunk(d.hex(), f"chunk {d.hex()} has {len(data)} bytes, its block {n}",
                                    [i * index.block_size])
            yield data
        return None
