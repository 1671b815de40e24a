"""Each distinct digest of a stream with many repeats, in bounded memory: what a vault's usage reading
needs (every chunk the backups reference, counted once), without the membership tests of a
:class:`~opencbr.engine.chunks.digestset.DigestSet`.

Why not a ``DigestSet``: past ``memory_entries`` its table is on disk, and a batch of adds reads and writes
every page it touches, ~4 µs per digest here. A usage reading adds every ref of every backup, most of them
repeats: ten backups of a 100 GiB disk (16 M refs, 2.3 M distinct) took 62-64 s per reading at the default
bound, 9.4-11.4 s with this (docs/scale.md, "What still grows").

Here the digests are spread over ``BUCKETS`` buckets by their first byte (digests are uniformly random) and
appended, once ``buffer_bytes`` are buffered, to an unlinked temporary file in large sequential writes;
nothing is looked up while they come in. Iteration then reads one bucket's runs back and deduplicates it
alone: about 1/256 of the distinct digests in memory at a time.
"""

from __future__ import annotations

import os
from array import array
from collections.abc import Iterator

from .crypto import DIGEST_SIZE
from .digestset import unlinked_file

BUCKETS = 256
MIN_BUFFER = 64 << 10


class DistinctDigests:
    """Digests fed in buffers (:meth:`add_buffer`), then each distinct one once (``iter``). Not
    thread-safe; use once: feed everything, then iterate, then :meth:`close` (or ``with``)."""

    def __init__(self, buffer_bytes: int, spill_dir: str | None = None):
        self.spill_dir = spill_dir
        self._limit = max(MIN_BUFFER, buffer_bytes)
        self._buffers = [bytearray() for _ in range(BUCKETS)]
        self._buffered = 0
        # Per spill, where each bucket's run starts in the file and where the last one ends (BUCKETS + 1
        # offsets): 2 KiB a spill, where a list of (offset, length) pairs per bucket took ~70 bytes a run.
        self._marks = array("Q")
        self._fd = -1
        self._end = 0

    def __enter__(self) -> "DistinctDigests":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_buffer(self, buf: bytes) -> None:
        """Every digest of ``buf``: a whole number of digests, one after the other."""
        if len(buf) % DIGEST_SIZE:
            raise ValueError("a buffer of digests must hold a whole number of them")
        buffers = self._buffers
        buf = bytes(buf)  # (slices of bytes are cheaper than a memoryview's)
        for i in range(0, len(buf), DIGEST_SIZE):
            buffers[buf[i]] += buf[i:i + DIGEST_SIZE]
        self._buffered += len(buf)
        if self._buffered >= self._limit:
            self._spill()

    def __iter__(self) -> Iterator[bytes]:
        for b in range(BUCKETS):
            seen: set[bytes] = set()
            marks = self._marks
            for base in range(0, len(marks), BUCKETS + 1):
                at, end = marks[base + b], marks[base + b + 1]
                if end > at:
                    self._add_to(seen, os.pread(self._fd, end - at, at))
            self._add_to(seen, bytes(self._buffers[b]))
            yield from seen

    def close(self) -> None:
        self._buffers = [bytearray() for _ in range(BUCKETS)]
        self._marks = array("Q")
        self._buffered = 0
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    @staticmethod
    def _add_to(seen: set[bytes], data: bytes) -> None:
        seen.update([data[i:i + DIGEST_SIZE] for i in range(0, len(data), DIGEST_SIZE)])

    def _spill(self) -> None:
        if self._fd < 0:
            self._fd = unlinked_file(self.spill_dir, "opencbr-distinct-")
        data = b"".join(self._buffers)  # (one write per spill, not one per bucket)
        written = 0
        while written < len(data):
            written += os.pwrite(self._fd, memoryview(data)[written:], self._end + written)
        at = self._end
        for buf in self._buffers:
            self._marks.append(at)
            at += len(buf)
            buf.clear()
        self._marks.append(at)
        self._end = at
        self._buffered = 0
