"""The fixed index of a disk backup: disk size, block size, one digest (or zero marker) per block.

Stored as a manifest whose ``refs`` section *is* the per-block digest array (block order, 32 bytes
each, :data:`ZERO_DIGEST` for an all-zero block that was not stored; guide 13.3.1), so the chunk store's
GC/usage/verify need no knowledge of disks.

Block size (64 KiB default) was chosen by measurement on the benchmark disk (bench/README.md):
the mutation rewrites scattered 64 KiB regions; larger blocks re-store the unchanged remainder of each
touched block (vault growth after the mutation: 64 KiB 69 MB, 128 KiB 84 MB, 256 KiB 109 MB, 1 MiB
242 MB, 4 MiB 617 MB; restic grew 394 MB), smaller ones barely help (32 KiB 65 MB) but double the
chunk count, per-chunk CPU and the index (32 bytes per block: 1 MiB per 2 GiB of disk at 64 KiB).
"""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass
from typing import Iterator

from ..chunks.crypto import DIGEST_SIZE, ZERO_DIGEST
from ..chunks.manifests import Manifest
from ..errors import Damaged

DEFAULT_BLOCK_SIZE = 64 << 10


@dataclass
class FixedIndex:
    disk_size: int
    block_size: int
    digests: "bytearray | SpooledDigests"  # block_count * 32 bytes (spooled when read from a store)

    @classmethod
    def empty(cls, disk_size: int, block_size: int) -> "FixedIndex":
        return cls(disk_size, block_size, bytearray(cls.count_blocks(disk_size, block_size) * DIGEST_SIZE))

    @staticmethod
    def count_blocks(disk_size: int, block_size: int) -> int:
        return -(-disk_size // block_size)

    @property
    def block_count(self) -> int:
        return len(self.digests) // DIGEST_SIZE

    def block_length(self, i: int) -> int:
        return min(self.block_size, self.disk_size - i * self.block_size)

    def digest(self, i: int) -> bytes:
        return bytes(self.digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE])

    def set(self, i: int, digest: bytes) -> None:
        self.digests[i * DIGEST_SIZE:(i + 1) * DIGEST_SIZE] = digest

    def is_zero(self, i: int) -> bool:
        return self.digest(i) == ZERO_DIGEST

    def pieces(self) -> Iterator[bytes]:
        """The digests in block order, a MiB at a time."""
        if isinstance(self.digests, SpooledDigests):
            yield from self.digests.pieces()
        else:
            for at in range(0, len(self.digests), SpooledDigests.PIECE):
                yield bytes(self.digests[at:at + SpooledDigests.PIECE])

    def close(self) -> None:
        if isinstance(self.digests, SpooledDigests):
            self.digests.close()

    @classmethod
    def from_manifest(cls, m: Manifest) -> "FixedIndex":
        h = m.header
        if h.get("type") != "disk":
            raise Damaged(f"backup {m.name} is not a disk backup", backup_id=m.name)
        idx = cls(int(h["disk_size"]), int(h["block_size"]), bytearray(m.refs))
        if idx.block_count != cls.count_blocks(idx.disk_size, idx.block_size):
            raise Damaged(f"backup {m.name}: index has {idx.block_count} blocks, expected "
                          f"{cls.count_blocks(idx.disk_size, idx.block_size)}", backup_id=m.name)
        return idx

    @classmethod
    def read(cls, cs, backup_id: str) -> "FixedIndex":
        """The index of a stored disk backup, its refs streamed a segment at a time into a spooled
        file (not memory: 32 bytes per block, 512 MB at 1 TiB); a chunk store over a channel (remote)
        sends them a window at a time (or whole, to a service of protocol 1)."""
        if not hasattr(cs, "manifest_refs_streamed"):
            return cls.from_manifest(cs.read_manifest(backup_id))
        h, pieces = cs.manifest_refs_streamed(backup_id)
        if h.get("type") != "disk":
            raise Damaged(f"backup {backup_id} is not a disk backup", backup_id=backup_id)
        disk_size, block_size = int(h["disk_size"]), int(h["block_size"])
        expected = cls.count_blocks(disk_size, block_size)
        spool = SpooledDigests(expected, getattr(cs, "spill_dir", None))
        try:
            at = 0
            for piece in pieces:
                if at + len(piece) <= len(spool):
                    spool.write_at(at, piece)
                at += len(piece)
            if at != len(spool) or at % DIGEST_SIZE:
                raise Damaged(f"backup {backup_id}: index has {at // DIGEST_SIZE} blocks, expected {expected}",
                              backup_id=backup_id)
        except BaseException:
            spool.close()
            raise
        return cls(disk_size, block_size, spool)


class SpooledDigests:
    """The per-block digests of a disk backup being written, in an unlinked temporary file rather than
    in memory (32 bytes per block is the one part of a backup's memory that grows with the disk: 512 MB
    at 1 TiB). Workers write a segment's digests with one ``pwrite``; the file starts sparse, so a block
    never written reads as :data:`ZERO_DIGEST`. :meth:`pieces` streams it into the manifest."""

    PIECE = 1 << 20

    def __init__(self, block_count: int, spill_dir: str | None = None):
        fd, path = tempfile.mkstemp(prefix="opencbr-fixed-index-", dir=spill_dir)
        os.unlink(path)  # gone with the process, whatever happens
        os.ftruncate(fd, block_count * DIGEST_SIZE)
        self.fd, self.block_count = fd, block_count
        self._window: tuple[int, bytes] = (0, b"")

    def __len__(self) -> int:
        return self.block_count * DIGEST_SIZE

    def write(self, first_block: int, digests: bytes | bytearray) -> None:
        os.pwrite(self.fd, digests, first_block * DIGEST_SIZE)

    def write_at(self, offset: int, data: bytes | bytearray) -> None:
        os.pwrite(self.fd, data, offset)

    # byte slices, as of the bytearray a FixedIndex held before (reads go through a small window: the
    # readers walk the blocks in order)
    WINDOW = 64 << 10

    def __getitem__(self, s: slice) -> bytes:
        start, stop, _step = s.indices(len(self))
        at, window = self._window
        if at <= start and stop <= at + len(window):
            return window[start - at:stop - at]
        if stop - start > self.WINDOW:
            return os.pread(self.fd, stop - start, start)
        window = os.pread(self.fd, min(self.WINDOW, len(self) - start), start)
        self._window = (start, window)  # (one assignment: threads see the old or the new window)
        return window[:stop - start]

    def __setitem__(self, s: slice, data: bytes | bytearray) -> None:
        start, stop, _step = s.indices(len(self))
        if len(data) != stop - start:
            raise ValueError("a digest slice keeps its length")
        os.pwrite(self.fd, data, start)
        self._window = (0, b"")

    def __bytes__(self) -> bytes:
        return b"".join(self.pieces())

    def pieces(self) -> Iterator[bytes]:
        """The digests in block order, a MiB at a time."""
        for at in range(0, len(self), self.PIECE):
            yield os.pread(self.fd, min(self.PIECE, len(self) - at), at)

    def data_blocks(self) -> int:
        """Blocks with a digest (not zero blocks)."""
        return sum(len(p) // DIGEST_SIZE - _zero_slots(p) for p in self.pieces())

    def changed_from(self, parent_pieces: Iterator[bytes]) -> int:
        """Blocks whose digest differs from the parent's, given the parent's digests in pieces of any
        size (whole digests; blocks past the parent's end count as changed). Compared a ``PIECE`` at a
        time, whatever the pieces' size: nothing but the piece in hand is held."""
        changed = at = 0
        for old in parent_pieces:
            view = memoryview(old)
            for lo in range(0, len(view), self.PIECE):
                if at >= len(self):
                    break  # the parent was longer: its extra blocks are not ours
                part = bytes(view[lo:lo + min(self.PIECE, len(self) - at)])
                changed += _differing_slots(os.pread(self.fd, len(part), at), part)
                at += len(part)
        return changed + (len(self) - min(at, len(self))) // DIGEST_SIZE

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def __del__(self) -> None:
        self.close()


def _zero_slots(piece: bytes) -> int:
    return sum(1 for i in range(0, len(piece), DIGEST_SIZE) if piece[i:i + DIGEST_SIZE] == ZERO_DIGEST)


def _differing_slots(mine: bytes, old: bytes) -> int:
    """Digests that differ between two runs of digests of one length: equal stretches (most of an
    incremental's) are compared 4 KiB at a time, only differing ones digest by digest."""
    if mine == old:
        return 0
    step, n = 128 * DIGEST_SIZE, 0
    for lo in range(0, len(mine), step):
        if mine[lo:lo + step] != old[lo:lo + step]:
            n += sum(mine[i:i + DIGEST_SIZE] != old[i:i + DIGEST_SIZE]
                     for i in range(lo, min(len(mine), lo + step), DIGEST_SIZE))
    return n
