"""A generated disk for benchmarks and memory tests: every block unique, almost all zeros.

Each data block is its block number, the disk's ``seed`` and a generation stamp followed by zeros, so
it hashes to a new digest (nothing deduplicates) yet compresses to a few dozen bytes: terabytes of
logical disk fit in a few GB of store and go through the real engine path (read, zero check, hash,
dedup, compress, encrypt, pack, index, manifest). ``changed_per_mille`` blocks out of 1000 (spread
by a multiplicative hash of the block number) carry ``generation`` instead of 0: generation 1 of the
same seed is an incremental with that share of blocks changed.
"""

from __future__ import annotations

import struct
from typing import Iterator

_STAMP = struct.Struct("<QQQ")  # block number, seed, generation
_SPREAD = 0x9E3779B97F4A7C15  # Fibonacci hashing: changed blocks spread evenly over the disk


class GeneratedDisk:
    """A :class:`~opencbr.engine.disk.source.DiskSource` of ``size`` bytes in ``block_size`` blocks."""

    def __init__(self, size: int, *, block_size: int = 64 << 10, seed: int = 1, generation: int = 0,
                 changed_per_mille: int = 10):
        self.size, self.block_size, self.seed = size, block_size, seed
        self.generation, self.changed_per_mille = generation, changed_per_mille
        self._zeros = bytes(4 << 20)  # (what a reused buffer is cleared from)

    def _generation_of(self, block: int) -> int:
        if not self.generation:
            return 0
        hashed = ((block * _SPREAD) & 0xFFFFFFFFFFFFFFFF) >> 32
        return self.generation if hashed % 1000 < self.changed_per_mille else 0

    def read(self, offset: int, length: int) -> bytes:
        buf = bytearray(max(0, min(length, self.size - offset)))
        self.read_into(offset, memoryview(buf))
        return bytes(buf)

    def read_into(self, offset: int, buf: memoryview) -> int:
        length = max(0, min(len(buf), self.size - offset))
        buf[:length] = bytes(length) if length > len(self._zeros) else self._zeros[:length]
        bs = self.block_size
        first = -(-offset // bs)
        for block in range(first, -(-(offset + length) // bs)):
            at = block * bs - offset
            if at + _STAMP.size <= length:
                _STAMP.pack_into(buf, at, block + 1, self.seed, self._generation_of(block))
        return length

    def data_extents(self) -> Iterator[tuple[int, int]]:
        if self.size:
            yield 0, self.size

    def close(self) -> None:
        pass
